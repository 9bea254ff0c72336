"""Enrolment on real data: CelebA photos, a MEAD clip, and real photos made unusable.

Uses the packaged student weights when present, else the smoke-run weights (same
architecture, barely trained: enough to test the plumbing, not identity quality).
"""

from __future__ import annotations

import stat
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import celeba_by_identity
from safetensors.numpy import load_file

from enhancer.cli import main
from enhancer.enroll import EnrollConfig, EnrollmentError, check_image, enroll_from_images, enroll_from_video
from enhancer.errors import InputError
from enhancer.identity_store import FORMAT_VERSION, IDENTITY_SHAPE, KEEP_SIZE, IdentityStore
from enhancer.weights import WEIGHTS_DIR, load_restorer

REPO = Path(__file__).resolve().parents[1]
MEAD_CLIP = "dreamtalk__data__style_clip__video__M030_front_neutral_level1_001.mp4"


@pytest.fixture(scope="module")
def weights() -> Path:
    for p in (WEIGHTS_DIR / "student.safetensors", REPO / "runs" / "smoke" / "student.safetensors"):
        if p.is_file():
            return p
    pytest.skip("no student weights: neither enhancer/weights/student.safetensors nor runs/smoke/student.safetensors")


@pytest.fixture(scope="module")
def model_ids(weights: Path) -> dict:
    _, meta = load_restorer(weights)
    return {"encoder_id": meta["encoder_id"], "model_id": meta["model_id"]}


@pytest.fixture(scope="module")
def person(shared_data: Path) -> list[Path]:
    """The in-the-wild photos of the first CelebA identity with the most of them (6)."""
    by_id = celeba_by_identity(shared_data, kind="wild")
    best = max(sorted(by_id), key=lambda i: len(by_id[i]))
    return sorted(shared_data / "celeba" / p for p in by_id[best])


@pytest.fixture(scope="module")
def bad(shared_data: Path, person: list[Path]) -> dict[str, np.ndarray]:
    """Unusable images made from real photos: no face, two faces, a tiny face, heavy blur."""
    imgs = [cv2.imread(str(p)) for p in person]
    cfg = EnrollConfig()
    biggest = max(imgs, key=lambda im: check_image(im, "", cfg).eye_distance or 0.0)
    other_dir = sorted((shared_data / "celeba" / "wild").iterdir())[1]
    other = cv2.resize(cv2.imread(str(sorted(other_dir.iterdir())[0])), (imgs[0].shape[1], imgs[0].shape[0]))
    tiny = np.full((240, 320, 3), 120, np.uint8)
    small = cv2.resize(imgs[0], None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)[:240, :320]
    tiny[: small.shape[0], : small.shape[1]] = small
    return {
        "flat": np.full((240, 320, 3), 90, np.uint8),
        "two": np.hstack([imgs[0], np.full_like(imgs[0][:, :30], 127), other]),
        "tiny": tiny,
        "blurred": cv2.GaussianBlur(biggest, (0, 0), 6),
    }


def test_enroll_from_celeba_photos(person: list[Path], weights: Path, model_ids: dict, tmp_path: Path) -> None:
    home = tmp_path / "home"
    images = [cv2.imread(str(p)) for p in person]
    report = enroll_from_images("celeb", images, labels=[p.name for p in person], weights=weights, home=home)
    assert report["accepted"] >= 3 and report["n_refs"] == report["accepted"] == len(person)
    assert [i["source"] for i in report["images"]] == [p.name for p in person]
    assert all(i["accepted"] and i["used"] and i["reason"] == "ok" for i in report["images"])
    path = Path(report["path"])
    assert path == home / "identities" / "celeb.safetensors" and path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    tensors = load_file(str(path))
    assert set(tensors) == {"identity", "detail"}  # no kept photos unless asked; the detail crops
    assert tensors["detail"].shape == (len(person), 128, 128, 3)
    model, _ = load_restorer(weights)
    assert tensors["identity"].shape == model.identity_shape() and tensors["identity"].dtype == np.float32
    assert tensors["identity"].shape[0] >= IDENTITY_SHAPE[0]
    store = IdentityStore(home)
    info = store.show("celeb")
    assert info["name"] == "celeb" and info["encoder_id"] == model_ids["encoder_id"]
    assert info["model_id"] == model_ids["model_id"] and info["n_refs"] == str(len(person))
    assert info["version"] == FORMAT_VERSION and info["created"].endswith("+00:00")
    ident = store.load("celeb", model_ids["encoder_id"])
    assert np.isfinite(ident).all() and ident.std() > 0


def test_enroll_from_mead_clip(shared_data: Path, weights: Path, tmp_path: Path) -> None:
    clip = shared_data / "videos" / MEAD_CLIP
    report = enroll_from_video("m030", clip, weights=weights, home=tmp_path, keep_photos=True, progress=False,
                               config=EnrollConfig(reference_detail=True))
    used = [i for i in report["images"] if i["used"]]
    assert report["n_refs"] == len(used) >= 3 and len(used) <= 8
    assert report["examined"] == EnrollConfig().video_samples
    frames = sorted(int(i["source"].split()[1]) for i in used)
    assert len(set(frames)) == len(frames)
    stored = IdentityStore(tmp_path).read("m030")
    assert stored.refs is not None and stored.refs.shape == (len(used), KEEP_SIZE, KEEP_SIZE, 3)
    # the aligned crops at the model's size, for reference detail transfer, match the kept photos
    assert stored.detail is not None and stored.detail.shape == (len(used), 128, 128, 3)
    small = np.stack([cv2.resize(r, (128, 128), interpolation=cv2.INTER_AREA) for r in stored.refs])
    assert np.abs(small.astype(float) - stored.detail.astype(float)).mean() < 6.0
    assert stored.metadata["source"] == "frames" and stored.metadata["photos_kept"] == "yes"


def test_rejections_have_reasons(person: list[Path], bad: dict[str, np.ndarray], weights: Path,
                                 tmp_path: Path) -> None:
    good = [cv2.imread(str(p)) for p in person[:3]]
    labels = ["g1", "g2", "g3", *bad]
    report = enroll_from_images("mixed", good + list(bad.values()), labels=labels, weights=weights, home=tmp_path)
    verdicts = {i["source"]: i for i in report["images"]}
    assert report["accepted"] == 3 and report["rejected"] == 4 and report["n_refs"] == 3
    assert verdicts["flat"]["reason"] == "no face found"
    assert verdicts["two"]["reason"].startswith("several faces (2)")
    assert verdicts["tiny"]["reason"].startswith("face too small (eye distance")
    assert verdicts["blurred"]["reason"].startswith("too blurry (sharpness")
    assert not any(verdicts[k]["accepted"] or verdicts[k]["used"] for k in bad)


def test_too_few_accepted_stores_nothing(person: list[Path], bad: dict[str, np.ndarray], weights: Path,
                                         tmp_path: Path) -> None:
    images = [cv2.imread(str(person[0])), *bad.values()]
    with pytest.raises(EnrollmentError) as e:
        enroll_from_images("few", images, weights=weights, home=tmp_path)
    msg = str(e.value)
    assert "only 1 of 5 images passed the checks, need at least 3" in msg and "nothing was stored" in msg
    assert "no face found" in msg and "too blurry" in msg and "\n" not in msg
    assert len(e.value.report["images"]) == 5
    d = tmp_path / "identities"
    assert not d.exists() or not any(d.iterdir())


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 100])
def test_bad_names_refused_before_work(name: str, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        enroll_from_images(name, [np.zeros((64, 64, 3), np.uint8)], weights=tmp_path / "absent", home=tmp_path)
    assert not any(tmp_path.iterdir())


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("likeness: error: ")
    return cap.out, err


def test_cli_enroll(person: list[Path], bad: dict[str, np.ndarray], weights: Path, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "lh"
    monkeypatch.setenv("LIKENESS_HOME", str(home))
    photos = [str(p) for p in person[:4]]
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), bad["flat"])
    assert main(["enroll", "ann", "--photos", *photos, str(flat), "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert out.count("accepted  ") == 4 and f"rejected  {flat}: no face found" in out
    path = home / "identities" / "ann.safetensors"
    assert f"stored identity 'ann' -> {path}" in out
    before = path.read_bytes()

    # never lose the user's data: refused without --force, replaced with it
    assert main(["enroll", "ann", "--photos", *photos[:3], "--weights", str(weights)]) == 2
    _, err = _one_line_error(capsys)
    assert "already exists" in err and "--force" in err
    assert path.read_bytes() == before
    assert main(["enroll", "ann", "--photos", *photos[:3], "--weights", str(weights), "--force"]) == 0
    capsys.readouterr()
    assert IdentityStore(home).show("ann")["n_refs"] == "3"
    assert IdentityStore(home).read("ann").detail.shape == (3, 128, 128, 3)
    # no face crops at all when the person declines them
    assert main(["enroll", "ann", "--photos", *photos[:3], "--weights", str(weights), "--force",
                 "--no-reference-detail"]) == 0
    capsys.readouterr()
    assert set(load_file(str(path))) == {"identity"} and IdentityStore(home).show("ann")["reference_detail"] == "no"

    # too few usable: every verdict printed, then one error line, nothing written
    assert main(["enroll", "bo", "--photos", photos[0], str(flat), "--weights", str(weights)]) == 2
    out, err = _one_line_error(capsys)
    assert "rejected" in out and "need at least 3" in err
    assert not (home / "identities" / "bo.safetensors").exists()
    assert main(["enroll", "bo", "--photos", photos[0], str(flat), "--min-accepted", "1",
                 "--weights", str(weights)]) == 0
    capsys.readouterr()

    # input problems are one line each
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    for argv, needle in [
        (["enroll", "../x", "--photos", photos[0]], "path separator"),
        (["enroll", "cam", "--camera", "97"], "cannot open camera 97"),
        (["enroll", "vid", "--video", str(tmp_path / "none.mp4")], "no such file"),
        (["enroll", "vid", "--video", str(flat)], "is a still image, not a video"),
        (["enroll", "vid", "--video", str(garbage)], "not a readable video"),
        (["enroll", "w", "--photos", photos[0], "--weights", str(tmp_path / "no.safetensors")], "not found"),
    ]:
        extra = [] if "--weights" in argv else ["--weights", str(weights)]
        assert main(argv + extra) == 2, argv
        assert needle in _one_line_error(capsys)[1]


def test_identity_from_other_encoder_refused(person: list[Path], weights: Path, model_ids: dict,
                                             tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.numpy import save_file

    report = enroll_from_images("ann", [cv2.imread(str(p)) for p in person[:3]], weights=weights, home=tmp_path)
    path = Path(report["path"])
    with safe_open(str(path), "np") as f:
        meta = dict(f.metadata())
    save_file(load_file(str(path)), str(path), metadata=meta | {"encoder_id": "enc-0123456789ab"})
    from enhancer.errors import ModelError

    with pytest.raises(ModelError, match=r"was made by model enc-0123456789ab.*re-enroll with `likeness enroll ann"):
        IdentityStore(tmp_path).load("ann", model_ids["encoder_id"])



def test_a_misspelt_enrolment_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="unknown enrolment options: hme"):
        enroll_from_images("ann", [], hme=tmp_path)  # type: ignore[call-arg]
