"""`likeness faces show` and `likeness degrade`: real inputs work, bad inputs fail in one line."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from enhancer.cli import main


def likeness_cmd() -> list[str]:
    """The installed console script (what users run), else the module."""
    script = Path(sys.executable).parent / "likeness"
    return [str(script)] if script.exists() else [sys.executable, "-m", "enhancer.cli"]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*likeness_cmd(), *map(str, args)], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bad and unusual inputs, all made in a temp folder from real data."""
    d = tmp_path_factory.mktemp("cli")
    with (shared_data / "celeba" / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "crops"]
    face = shared_data / "celeba" / rows[0]["path"]
    other = shared_data / "celeba" / next(r for r in rows if r["identity"] != rows[0]["identity"])["path"]
    img = cv2.imread(str(face))
    p = {"face": face, "missing": d / "nope.jpg", "folder": d}
    p["empty"] = d / "empty.jpg"
    p["empty"].write_bytes(b"")
    p["truncated"] = d / "truncated.jpg"
    p["truncated"].write_bytes(face.read_bytes()[:1500])
    damaged = bytearray(face.read_bytes())
    for i in range(len(damaged) // 3, len(damaged) - 16, 37):  # garble the entropy-coded data
        damaged[i] = (damaged[i] * 7 + 3) % 256
    p["garbled"] = d / "garbled.jpg"
    p["garbled"].write_bytes(bytes(damaged))
    p["tiny"] = d / "tiny.png"
    cv2.imwrite(str(p["tiny"]), np.full((1, 1, 3), 200, np.uint8))
    p["gray"] = d / "gray.png"
    cv2.imwrite(str(p["gray"]), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    p["rgba"] = d / "rgba.png"
    cv2.imwrite(str(p["rgba"]), cv2.cvtColor(img, cv2.COLOR_BGR2BGRA))
    p["flat"] = d / "flat.png"
    cv2.imwrite(str(p["flat"]), np.full((240, 320, 3), 90, np.uint8))
    p["two"] = d / "two.png"
    right = cv2.resize(cv2.imread(str(other)), (img.shape[1], img.shape[0]))
    cv2.imwrite(str(p["two"]), np.hstack([img, np.full_like(img[:, :30], 127), right]))
    p["audio"] = d / "audio_only.mp4"
    with av.open(str(p["audio"]), "w") as c:
        s = c.add_stream("aac", rate=16000)
        s.layout = "mono"
        for i in range(8):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, i * 1024
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    p["garbage_video"] = d / "garbage.mp4"
    p["garbage_video"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    p["video"] = d / "clip.mp4"
    shutil.copyfile(
        shared_data / "videos" / "dreamtalk__data__style_clip__video__W009_front_neutral_level1_001.mp4", p["video"]
    )
    p["not_a_folder"] = d / "plainfile"
    p["not_a_folder"].write_text("x")
    return p


def assert_one_line_error(r: subprocess.CompletedProcess[str], *words: str) -> None:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, f"expected one line on stderr, got: {r.stderr!r}"
    assert lines[0].startswith("likeness: error:")
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"


BAD_INPUTS = [
    ("missing", "no such file"),
    ("folder", "directory"),
    ("empty", "empty"),
    ("truncated", "not a readable image"),
    ("tiny", "too small"),
    ("audio", "no video stream"),
    ("garbage_video", "not a readable video"),
]


@pytest.mark.parametrize("command", ["faces", "degrade"])
@pytest.mark.parametrize("case,words", BAD_INPUTS, ids=[c for c, _ in BAD_INPUTS])
def test_bad_input_fails_in_one_line(inputs: dict[str, Path], tmp_path: Path, command: str, case: str,
                                     words: str) -> None:
    out = tmp_path / "out.png"
    args = ["faces", "show"] if command == "faces" else ["degrade", "--preset", "severe"]
    r = run_cli(*args, inputs[case], "-o", out)
    assert_one_line_error(r, words)
    assert not out.exists()


def test_no_face_is_a_clear_error(inputs: dict[str, Path], tmp_path: Path) -> None:
    r = run_cli("faces", "show", inputs["flat"], "-o", tmp_path / "o.png")
    assert_one_line_error(r, "no face found")


def test_bad_outputs_and_frames(inputs: dict[str, Path], tmp_path: Path) -> None:
    assert_one_line_error(run_cli("degrade", inputs["face"], "-o", tmp_path / "o.xyz"), "unknown output image format")
    assert_one_line_error(run_cli("faces", "show", inputs["face"], "-o", inputs["not_a_folder"] / "o.png"),
                          "cannot write")
    assert_one_line_error(run_cli("faces", "show", inputs["video"], "--frame", "100000", "-o", tmp_path / "o.png"),
                          "frame 100000")


@pytest.mark.parametrize("case", ["face", "gray", "rgba"])
def test_faces_show_works_and_converts(inputs: dict[str, Path], tmp_path: Path, case: str) -> None:
    out = tmp_path / "show.png"
    r = run_cli("faces", "show", inputs[case], "-o", out)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip() == ""
    shown = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    src = cv2.imread(str(inputs["face"]))
    assert shown.ndim == 3 and shown.shape[2] == 3
    assert shown.shape[0] >= src.shape[0] and shown.shape[1] >= src.shape[1] + 128  # side panel
    # the original image is on the left, only annotated (boxes, dots) on top
    left = shown[: src.shape[0], : src.shape[1]].astype(np.int16)
    ref = cv2.cvtColor(cv2.cvtColor(src, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) if case == "gray" else src
    assert np.mean(np.abs(left - ref) == 0) > 0.7


def test_faces_show_two_faces_and_video_frame(inputs: dict[str, Path], tmp_path: Path) -> None:
    rc = main(["faces", "show", str(inputs["two"]), "-o", str(tmp_path / "two.png")])
    assert rc == 0
    shown, src = cv2.imread(str(tmp_path / "two.png")), cv2.imread(str(inputs["two"]))
    panel = shown[:, src.shape[1]:]
    blocks = [panel[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128]
              for r in range(panel.shape[0] // 128) for c in range(panel.shape[1] // 128)]
    assert sum(b.std() > 5 for b in blocks) == 2, "two aligned crops in the side panel"
    r = run_cli("faces", "show", inputs["video"], "--frame", "50", "-o", tmp_path / "v.png")
    assert r.returncode == 0 and "1 face(s)" in r.stdout, r.stderr


def test_degrade_cli_is_deterministic(inputs: dict[str, Path], tmp_path: Path) -> None:
    outs = [tmp_path / f"d{i}.png" for i in range(3)]
    for out, seed in zip(outs, [5, 5, 6], strict=True):
        assert main(["degrade", str(inputs["face"]), "--preset", "severe", "--seed", str(seed), "-o", str(out)]) == 0
    a, b, c = (cv2.imread(str(o)) for o in outs)
    src = cv2.imread(str(inputs["face"]))
    assert a.shape == src.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert main(["degrade", str(inputs["gray"]), "--preset", "mild", "-o", str(tmp_path / "g.png")]) == 0
    assert main(["degrade", str(inputs["rgba"]), "--preset", "mild", "-o", str(tmp_path / "r.png")]) == 0


@pytest.mark.parametrize("command", ["faces", "degrade"])
def test_damaged_jpeg_reports_one_line(inputs: dict[str, Path], tmp_path: Path, command: str) -> None:
    """libjpeg prints its own warnings on stderr; the CLI folds them into its single line."""
    out = tmp_path / "o.png"
    args = ["faces", "show"] if command == "faces" else ["degrade"]
    r = run_cli(*args, inputs["garbled"], "-o", out)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, r.stderr
    assert "damage" in lines[0]
    assert lines[0].startswith("likeness: warning:" if r.returncode == 0 else "likeness: error:")
    assert out.exists() == (r.returncode == 0)
