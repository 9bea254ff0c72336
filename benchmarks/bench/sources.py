"""The frames every stage is timed on: a real clip at each resolution, or a synthetic moving face offline."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from benchmarks.bench.config import RESOLUTIONS
from enhancer.errors import InputError

CLIP = "LivePortrait__assets__examples__driving__d13.mp4"
SOURCE_FRAMES_MAX = 120  # frames held per resolution; played back and forth (720p: ~330 MB)


def default_source() -> Path | None:
    """The d13 clip from the shared data (``$LIKENESS_DATA`` or ../shared/data), if present."""
    roots = [Path(os.environ["LIKENESS_DATA"])] if os.environ.get("LIKENESS_DATA") else []
    roots.append(Path(__file__).resolve().parents[3] / "shared" / "data")
    roots.append(Path("/work/shared/data"))
    for r in roots:
        if (r / "videos" / CLIP).is_file():
            return r / "videos" / CLIP
    return None


def synthetic_frames(size: tuple[int, int], n: int) -> list[np.ndarray]:
    """Grace Hopper (matplotlib's bundled photo) panned across a textured canvas, so that the
    tracker has to follow a moving face when no clip is available offline."""
    from matplotlib import cbook

    photo = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    w, h = size
    s = 0.7 * h / photo.shape[0]
    face = cv2.resize(photo, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    fh, fw = face.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg = np.stack([60 + 40 * np.sin(xx / 37.0), 80 + 30 * np.cos(yy / 23.0), 70 + 50 * (xx / w)], -1)
    bg = np.clip(bg, 0, 255).astype(np.uint8)
    frames = []
    for i in range(n):
        ph = 2 * math.pi * i / 120.0
        x = int((w - fw) * (0.5 + 0.4 * math.sin(ph)))
        y = int((h - fh) * (0.5 + 0.3 * math.sin(2 * ph)))
        img = bg.copy()
        img[y:y + fh, x:x + fw] = face
        frames.append(img)
    return frames


@dataclass
class Source:
    """Frames per resolution (played back and forth, so motion stays continuous) and their fps."""

    description: str
    fps: float
    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)

    def frame(self, res: str, i: int) -> np.ndarray:
        f = self.frames[res]
        if len(f) == 1:
            return f[0]
        period = 2 * len(f) - 2
        k = i % period
        return f[k if k < len(f) else period - k]

    def loop(self, res: str) -> list[np.ndarray]:
        """One back-and-forth cycle as a list (references, no copies), for a looping WebRTC source."""
        f = self.frames[res]
        return f + f[-2:0:-1]


def through_camera(src: Source, camera: str) -> Source:
    """The source as a poor camera gives it: ``enhancer.degrade`` with the preset ``camera`` on every
    frame (seeded by the frame's index, so every run times the same frames), or as it is for "none"."""
    if camera == "none":
        return src
    from enhancer.degrade import degrade

    frames = {res: [degrade(f, camera, i) for i, f in enumerate(fs)] for res, fs in src.frames.items()}
    return Source(f"{src.description}, through the {camera!r} degradation", src.fps, frames)


def load_source(path: str | None, resolutions: list[str], n: int) -> Source:
    if path is not None and not Path(path).is_file():
        raise InputError(f"{path}: no such video file")
    clip = Path(path) if path else default_source()
    n = max(2, min(n, SOURCE_FRAMES_MAX))
    if clip is None:
        src = Source("synthetic: matplotlib grace_hopper.jpg panned across the canvas", 30.0)
        for res in resolutions:
            src.frames[res] = synthetic_frames(RESOLUTIONS[res], n)
        return src
    from benchmarks.harness.clips import load_clip

    src = Source(f"{clip.name} (letterboxed)", 30.0)
    for res in resolutions:
        try:
            src.frames[res], src.fps = load_clip(clip, n, RESOLUTIONS[res])
        except (OSError, ValueError) as e:  # av raises OSError subclasses for unreadable files
            raise InputError(f"{clip}: cannot decode video ({e})") from None
    return src


def face_crops(src: Source, res: str, size: int, k: int) -> np.ndarray:
    """``k`` aligned crops of the source's face, from frames spread over the clip."""
    from enhancer.align import alignment_matrix, warp_crops
    from enhancer.tracker import FaceTracker

    tracker = FaceTracker()
    crops = []
    n = len(src.frames[res])
    pick = 0
    for i in range(n):
        faces = tracker.update(src.frame(res, i), i / src.fps)
        if faces and i >= pick:
            crops.append(warp_crops(src.frame(res, i), alignment_matrix(faces[0].landmarks, size)[None], size)[0])
            pick = i + max(1, n // k)
        if len(crops) == k:
            break
    if not crops:  # no face in the source: timings hold, quality does not matter here
        crops = [np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)]
    while len(crops) < k:
        crops.append(crops[len(crops) % len(crops)])
    return np.stack(crops)
