"""`likeness demo` and `likeness enhance` run as users run them (a subprocess), on real photos and video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import celeba_by_identity

CLIP = "dreamtalk__data__style_clip__video__W009_front_neutral_level1_001.mp4"
CLIP_FRAMES = 40  # 1.6 s at 25 fps


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).parent / "likeness"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "enhancer.cli"]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=180)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_one_line_error(r: subprocess.CompletedProcess[str]) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("likeness: error: "), r.stderr


# --- likeness demo -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("demo")
    return run_cli("demo", "--out", out, "--runs", "2"), out


def test_demo_writes_before_after_face_zoom_and_timings(demo) -> None:
    r, out = demo
    assert r.returncode == 0, r.stderr
    assert f"wrote {out / 'before_after.png'}" in r.stdout
    assert f"wrote {out / 'face_zoom.png'}" in r.stdout
    summary = json.loads((out / "timings.json").read_text())
    assert summary["faces"] == 1 and summary["runs"] == 2 and "total" in summary["timings_ms_median"]
    h, w = summary["frame"]
    x0, y0, x1, y1 = summary["face_box"]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and x1 - x0 == y1 - y0


def test_demo_face_zoom_layout_and_content(demo) -> None:
    r, out = demo
    assert r.returncode == 0, r.stderr
    zoom = cv2.imread(str(out / "face_zoom.png"))
    full = cv2.imread(str(out / "before_after.png"))
    assert zoom is not None and full is not None
    # three square zoomed faces side by side, each big enough to judge, with a label band below
    side = zoom.shape[1] // 3
    assert zoom.shape[1] == 3 * side and 256 <= side <= 320 and zoom.shape[0] > side
    quality, likeness, original = (zoom[:side, i * side:(i + 1) * side] for i in range(3))
    # the clean photo's face is far from the degraded one's: the same box was cut from both
    assert mean_abs_diff(original, quality) > 8
    # the model changed the face: a few grey levels on average (measured 2.0), many pixels by > 4
    assert mean_abs_diff(likeness, quality) > 1.0
    changed = np.abs(likeness.astype(np.int16) - quality.astype(np.int16)).max(2) > 4
    assert changed.mean() > 0.10
    # before_after: the full-frame row (the demo photo is 512 px wide) above the same strip, under 1600 px
    assert full.shape[1] <= 1600 and full.shape[1] == 3 * 512
    left = (full.shape[1] - zoom.shape[1]) // 2
    assert np.array_equal(full[-zoom.shape[0]:, left:left + zoom.shape[1]], zoom)


# --- likeness enhance --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> Path:
    """The first 'wild' (uncropped) CelebA photo: one face, HOG finds it."""
    by_id = celeba_by_identity(shared_data, "wild")
    return shared_data / "celeba" / next(iter(by_id.values()))[0]


def test_enhance_image_changes_the_face_only(photo: Path, tmp_path: Path) -> None:
    """A damaged face is restored and nothing else changes; the same photo undamaged (a sharp face,
    beyond the strength's fade) comes back as it was."""
    from enhancer.degrade import degrade
    from enhancer.detect import detect_faces

    damaged = tmp_path / "damaged.png"
    assert cv2.imwrite(str(damaged), degrade(cv2.imread(str(photo)), "mild", seed=0))
    for src_path, changed in ((damaged, True), (photo, False)):
        out = tmp_path / f"enhanced-{src_path.stem}.png"  # lossless: pixels away from the face come back exactly
        r = run_cli("enhance", src_path, "-o", out)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout.splitlines()[0])["faces"] == 1
        src, dst = cv2.imread(str(src_path)), cv2.imread(str(out))
        assert dst is not None and dst.shape == src.shape
        x0, y0, x1, y1 = detect_faces(src)[0].box.round().astype(int)
        face_change = mean_abs_diff(dst[y0:y1, x0:x1], src[y0:y1, x0:x1])
        assert face_change > 1.0 if changed else face_change < 0.5, (src_path.name, face_change)
        # outside the face box grown 2x about its centre (the feathered paste stays inside) nothing changes
        cx, cy, s = (x0 + x1) // 2, (y0 + y1) // 2, x1 - x0
        far = np.ones(src.shape[:2], bool)
        far[max(cy - s, 0):cy + s, max(cx - s, 0):cx + s] = False
        assert far.mean() > 0.3 and np.array_equal(dst[far], src[far])


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def test_enhance_video_changes_the_face(shared_data: Path, tmp_path: Path) -> None:
    """A video whose frames arrive damaged (the moderate preset, as a call delivers them) gets its face
    restored, and little else changes."""
    from enhancer.degrade import degrade
    from enhancer.enhance import enhance_video
    from enhancer.pipeline import FrameResult

    frames = []
    with av.open(str(shared_data / "videos" / CLIP)) as c:
        for f in c.decode(video=0):
            frames.append(degrade(f.to_ndarray(format="bgr24"), "moderate", seed=len(frames)))
            if len(frames) == CLIP_FRAMES:
                break
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as o:
        s = o.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt, s.options = frames[0].shape[1], frames[0].shape[0], "yuv420p", {"crf": "10"}
        for img in frames:
            o.mux(s.encode(av.VideoFrame.from_ndarray(img, format="bgr24")))
        o.mux(s.encode(None))

    out = tmp_path / "enhanced.mp4"
    r = run_cli("enhance", clip, "-o", out)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.splitlines()[0])
    assert stats["frames"] == stats["frames_with_faces"] == CLIP_FRAMES

    class Untouched:  # the same decode/encode path with no model: isolates what the model changed
        def process(self, frame: np.ndarray, t: float | None = None) -> FrameResult:
            return FrameResult(frame, 0, False)

    control = tmp_path / "control.mp4"
    enhance_video(Untouched(), clip, control)
    got, ref = _decode(out), _decode(control)
    assert len(got) == len(ref) == CLIP_FRAMES
    # this clip's face fills the middle of the 256 px frame; the top rows are background
    face = [mean_abs_diff(g[60:230, 40:215], c[60:230, 40:215]) for g, c in zip(got, ref, strict=True)]
    top = [mean_abs_diff(g[:20], c[:20]) for g, c in zip(got, ref, strict=True)]
    assert min(face) > 1.0 and np.mean(face) > 2 * np.mean(top)


def test_enhance_missing_file_is_one_line_error(tmp_path: Path) -> None:
    r = run_cli("enhance", tmp_path / "nope.jpg", "-o", tmp_path / "out.png")
    assert_one_line_error(r)
    assert "no such file" in r.stderr


@pytest.mark.parametrize("name", ["notes.jpg", "notes.txt"])
def test_enhance_non_image_is_one_line_error(name: str, tmp_path: Path) -> None:
    bad = tmp_path / name
    bad.write_text("meeting notes, not a picture\n")
    r = run_cli("enhance", bad, "-o", tmp_path / "out.png")
    assert_one_line_error(r)
    assert "not a readable" in r.stderr
    assert not (tmp_path / "out.png").exists()
