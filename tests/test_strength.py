"""Adaptive strength: sharper crops keep less of the generator's change, and the pipeline applies
it per face, smoothed per track, between the input and the full output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from enhancer.calibration import degraded_crops
from enhancer.degrade import degrade
from enhancer.pipeline import FramePipeline
from enhancer.strength import (
    DEFAULT_STRENGTH,
    StrengthConfig,
    blend,
    laplacian_variance,
    log_detail,
    person_fade,
    strength,
    strength_at,
)
from enhancer.weights import WEIGHTS_DIR, read_metadata


@pytest.fixture(scope="module")
def clean(shared_data: Path) -> np.ndarray:
    """Real aligned CelebA crops, only lightly touched (mild preset, the sharpest a call gets)."""
    return degraded_crops(4, root=shared_data, preset="mild")


def test_more_degraded_crops_get_more_strength(clean: np.ndarray) -> None:
    severe = np.stack([degrade(c, "severe", i) for i, c in enumerate(clean)])
    assert (laplacian_variance(severe) < laplacian_variance(clean)).all()
    w_clean, w_severe = strength(clean, DEFAULT_STRENGTH), strength(severe, DEFAULT_STRENGTH)
    assert (w_severe > w_clean).all()
    assert ((w_clean >= DEFAULT_STRENGTH.lo) & (w_severe <= DEFAULT_STRENGTH.hi)).all()
    flat = np.full((1, 128, 128, 3), 128, np.uint8)  # no detail at all: full strength, clipped
    assert strength(flat, DEFAULT_STRENGTH)[0] == DEFAULT_STRENGTH.hi


def test_fade_leaves_degraded_faces_and_lets_clean_ones_through(clean: np.ndarray) -> None:
    """The fade multiplies the line by 1 below its start, 0 beyond its end, and linearly between;
    crops whose fine detail is beyond the end (here real crops with a one-pixel stripe pattern laid
    over them) keep none of the change."""
    from enhancer.strength import log_detail, strength_at

    faded = StrengthConfig(fade=(5.0, 6.0))
    ld = np.array([2.0, 4.9, 5.0, 5.5, 6.0, 7.0])
    line, w = strength_at(ld, StrengthConfig()), strength_at(ld, faded)
    np.testing.assert_allclose(w[:3], line[:3])
    assert w[3] == pytest.approx(line[3] * 0.5, abs=1e-6)
    assert (w[4:] == 0).all()
    stripes = np.tile([[-40], [40]], (64, 128))[None, ..., None]
    sharp = np.clip(clean.astype(np.int16) + stripes, 0, 255).astype(np.uint8)
    assert (log_detail(sharp) > 6.0).all() and (strength(sharp, faded) == 0).all()
    with pytest.raises(ValueError, match="fade"):
        StrengthConfig(fade=(6.0, 5.0))


def test_blend_ends_and_middle(clean: np.ndarray) -> None:
    lq, out = clean[:2], 255 - clean[:2]
    assert np.array_equal(blend(lq, out, np.zeros(2)), lq)
    assert np.array_equal(blend(lq, out, np.ones(2)), out)
    mid = blend(lq, out, np.array([0.5, 0.5])).astype(int)
    assert np.abs(mid - 127.5).max() <= 1  # lq + (255 - 2 lq) / 2


N_CHECK = 16  # aligned crops per preset for the recomputed check (about 2 s on one core)


def test_fit_is_for_the_packaged_student_and_helps_on_real_crops(shared_data: Path, tmp_path: Path) -> None:
    """The fit names the packaged student (a retrained student must be refitted: benchmarks/studies/fit_strength.py),
    and, recomputed here with the fit's own code on a small real sample (16 aligned CelebA crops of training
    identities the evaluation never uses, every preset, the packaged student in generic mode), the adaptive
    blend is never worse than the input, and no worse than the full output beyond noise."""
    import csv

    import cv2
    import torch

    from benchmarks.studies.fit_strength import measure, report
    from enhancer.calibration import _aligned
    from enhancer.weights import load_restorer

    model, meta = load_restorer(WEIGHTS_DIR / "student.safetensors", kind="student")
    assert DEFAULT_STRENGTH.fitted_for == read_metadata(WEIGHTS_DIR / "student.safetensors")["model_id"]
    assert DEFAULT_STRENGTH.fitted_for == meta["model_id"]

    held = {str(v) for v in meta["extra"].get("val_identities", [])}
    assert held, "the packaged student records its evaluation identities"
    rows: list[dict[str, str]] = []
    used: set[str] = set()
    with (shared_data / "celeba" / "labels.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["kind"] != "crops" or r["identity"] in held or r["identity"] in used:
                continue
            crop = _aligned(shared_data / "celeba" / r["path"], 128)
            if crop is None:
                continue
            used.add(r["identity"])
            name = f"{len(rows)}.png"
            assert cv2.imwrite(str(tmp_path / name), crop)
            rows.append({"path": name, "identity": r["identity"]})
            if len(rows) == N_CHECK:
                break
    assert len(rows) == N_CHECK
    torch.manual_seed(0)
    res = report(measure(model, rows, tmp_path, seed=2), DEFAULT_STRENGTH)
    print(f"\nrecomputed on {N_CHECK} crops: {res}")
    assert set(res) == {"mild", "moderate", "severe"}
    for preset, r in res.items():
        assert r["crops"] == N_CHECK
        assert r["psnr_adaptive"] >= r["psnr_input"], (preset, r)
        assert r["psnr_adaptive"] >= r["psnr_full"] - 0.15, (preset, r)


class Inverting:
    """An engine whose output is far from its input, so the blend is visible in every pixel."""

    size = 128
    null_identity = None

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        return 255 - crops


def test_pipeline_applies_smoothed_strength_per_track(shared_data: Path) -> None:
    from enhancer.imageio import read_image

    img = read_image(sorted((shared_data / "celeba").rglob("*.jpg"))[0])
    full = FramePipeline(Inverting())
    half = FramePipeline(Inverting(), strength=StrengthConfig(intercept=0.5, slope=0.0))
    a, b = full.process(img, 0.0), half.process(img, 0.0)
    # the first CelebA photo has one clear face: not finding it is a detection regression, not a reason to skip
    assert a.faces == 1 and b.faces == 1, (a.faces, b.faces)
    changed_full = np.abs(a.frame.astype(int) - img).sum()
    changed_half = np.abs(b.frame.astype(int) - img).sum()
    assert 0.3 < changed_half / changed_full < 0.7
    assert list(half._weights.values()) == [pytest.approx(0.5)]
    # a sudden change of the raw weight reaches the output gradually, not in one frame
    half.strength = StrengthConfig(intercept=1.0, slope=0.0)
    half.process(img, 1 / 30)
    w = next(iter(half._weights.values()))
    assert 0.5 < w < 1.0


def test_strength_option_values_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from enhancer.cli import main
    from enhancer.strength import parse_strength

    assert parse_strength("auto") == DEFAULT_STRENGTH and parse_strength("FULL") is None
    fixed = parse_strength("0.25")
    assert fixed is not None and strength(np.zeros((2, 128, 128, 3), np.uint8), fixed).tolist() == [0.25, 0.25]
    for bad in ("1.5", "-0.1", "strong"):
        with pytest.raises(ValueError):
            parse_strength(bad)
    with pytest.raises(SystemExit) as e:
        main(["enhance", "in.png", "-o", "out.png", "--strength", "strong"])
    assert e.value.code == 2 and "strength must be auto, full or a number" in capsys.readouterr().err


def test_person_fade_leaves_a_face_as_sharp_as_the_persons_references(clean: np.ndarray) -> None:
    """A receiver fades the change out on a face within 0.5 of the person's references' mean detail
    (ln Laplacian variance), keeps all of it from 1.5 below; damaged crops keep their weight."""
    from dataclasses import replace

    ref = float(np.mean(log_detail(clean)))
    lo, hi = person_fade(clean)
    assert (lo, hi) == pytest.approx((ref - 1.5, ref - 0.5))
    cfg = replace(DEFAULT_STRENGTH, person_fade=(lo, hi))
    ld = np.array([ref - 0.4, ref - 1.0, ref - 2.0])
    base = strength_at(ld, DEFAULT_STRENGTH)
    w = strength_at(ld, cfg)
    assert w[0] == 0 and w[1] == pytest.approx(base[1] / 2, abs=1e-6) and w[2] == pytest.approx(base[2])
    severe = np.stack([degrade(c, "severe", i) for i, c in enumerate(clean)])
    assert np.allclose(strength(severe, cfg), strength(severe, DEFAULT_STRENGTH))
    with pytest.raises(ValueError):
        StrengthConfig(person_fade=(2.0, 1.0))


def test_the_views_strength_fades_on_the_shared_persons_own_detail(clean: np.ndarray) -> None:
    """``likeness view`` (``view_strength``) sets the person fade from the shared identity's reference
    crops; without stored crops, or without a strength, it changes nothing."""
    from enhancer.commands.assemble import view_strength
    from enhancer.identity_store import StoredIdentity

    with_crops = StoredIdentity("p", None, np.zeros((1, 8), np.float32), {}, None, clean)
    without = StoredIdentity("p", None, np.zeros((1, 8), np.float32), {}, None, None)
    assert view_strength(with_crops, DEFAULT_STRENGTH).person_fade == person_fade(clean)
    assert view_strength(with_crops, DEFAULT_STRENGTH).fade == DEFAULT_STRENGTH.fade
    assert view_strength(without, DEFAULT_STRENGTH) is DEFAULT_STRENGTH
    assert view_strength(with_crops, None) is None


def test_a_weight_under_the_skip_threshold_changes_no_pixel() -> None:
    """The pipeline skips the generator below ``UNCHANGED_BELOW`` because the blend would round every
    pixel back to the input, even for the largest change there is (0 <-> 255); just above half a level
    it would not."""
    from enhancer.pipeline import UNCHANGED_BELOW, generator_needed

    lq = np.zeros((2, 8, 8, 3), np.uint8)
    lq[1] = 255
    under = np.full(2, np.nextafter(np.float32(UNCHANGED_BELOW), np.float32(0)), np.float32)
    assert np.array_equal(blend(lq, 255 - lq, under), lq)
    assert not np.array_equal(blend(lq, 255 - lq, np.full(2, 0.51 / 255, np.float32)), lq)
    assert generator_needed(np.array([0.0, UNCHANGED_BELOW, 0.3], np.float32), 3).tolist() == [False, True, True]
    assert generator_needed(None, 2).all()


class CountingInverter(Inverting):
    """``Inverting``, counting the crops it is given per call."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        self.calls.append(len(crops))
        return super().restore(crops, identity, noise)


def test_the_generator_runs_only_on_faces_whose_strength_keeps_a_change(
        shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real faces in one frame: one with a fine stripe pattern laid over it (detail beyond the
    default fade: weight 0), one blurred (weight ~0.8). The engine gets the blurred one only, and the
    frame is bit-identical to the one made when the engine runs on both and the blend discards the first."""
    import cv2

    import enhancer.pipeline as pipeline
    from enhancer.imageio import read_image

    a, b = (cv2.resize(read_image(p), (200, 218)) for p in sorted((shared_data / "celeba").rglob("*.jpg"))[:2])
    stripes = np.tile([[-30], [30]], (109, 200))[..., None]
    img = np.hstack([np.clip(a.astype(int) + stripes, 0, 255).astype(np.uint8), cv2.GaussianBlur(b, (0, 0), 1.5)])
    frames, calls, generated = [], [], []
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(pipeline, "generator_needed", lambda w, n: np.ones(n, bool))
        engine = CountingInverter()
        pipe = FramePipeline(engine, strength=DEFAULT_STRENGTH)
        results = [pipe.process(img, i / 30) for i in range(3)]
        assert [r.faces for r in results] == [2, 2, 2]
        assert sorted(pipe._weights.values())[0] == 0.0 and sorted(pipe._weights.values())[1] > 0.5, pipe._weights
        frames.append([r.frame for r in results])
        calls.append(engine.calls)
        generated.append([r.generated for r in results])
    assert calls == [[1, 1, 1], [2, 2, 2]] and generated == [[1, 1, 1], [2, 2, 2]]
    assert all(np.array_equal(x, y) for x, y in zip(*frames, strict=True))
    # nothing to change anywhere: no engine call at all, the faces still tracked
    monkeypatch.undo()
    engine = CountingInverter()
    r = FramePipeline(engine, strength=StrengthConfig(intercept=0.0, slope=0.0)).process(img, 0.0)
    assert r.faces == 2 and r.generated == 0 and engine.calls == []


def test_the_person_fade_applies_to_the_enrolled_persons_face_only(shared_data: Path) -> None:
    """A view's person fade is read off the shared person's references; a second person in their
    picture keeps the strength without it. Here the fade would keep nothing on any face, so the
    enrolled (larger) face gets weight 0 and the other its ordinary weight."""
    import cv2

    from enhancer.imageio import read_image

    a, b = (cv2.GaussianBlur(cv2.resize(read_image(p), size), (0, 0), 1.5)
            for p, size in zip(sorted((shared_data / "celeba").rglob("*.jpg"))[:2], [(240, 262), (200, 262)],
                               strict=True))
    img = np.hstack([a, b])
    cfg = StrengthConfig(fade=DEFAULT_STRENGTH.fade, person_fade=(-10.0, -9.0))
    pipe = FramePipeline(Inverting(), identity=np.ones((1, 8), np.float32), null_identity=np.zeros((1, 8), np.float32),
                         strength=cfg)
    r = pipe.process(img, 0.0)
    assert r.faces == 2
    owner = pipe._assigned[1]
    others = [w for k, w in pipe._weights.items() if k != owner]
    assert pipe._weights[owner] == 0.0 and len(others) == 1 and others[0] > 0.5, pipe._weights
    # alone, the same person fade applies to the one face there is
    alone = FramePipeline(Inverting(), identity=np.ones((1, 8), np.float32), strength=cfg)
    assert alone.process(b, 0.0).faces == 1 and list(alone._weights.values()) == [0.0]
