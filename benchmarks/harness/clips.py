"""Real clips for benchmarks and tests: where they live, decoding, letterboxing, Y4M for Chromium.

Benchmarks measure on real footage (faces, motion, codecs' behaviour on them), never on
synthetic frames; this is the one place that finds and decodes it.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av import VideoFrame

REPO = Path(__file__).resolve().parents[2]


def videos_dir() -> Path:
    """Real clips: $LIKENESS_VIDEOS, else $LIKENESS_DATA/videos, else ../shared/data/videos beside the repo (CI)."""
    if os.environ.get("LIKENESS_VIDEOS"):
        return Path(os.environ["LIKENESS_VIDEOS"])
    if os.environ.get("LIKENESS_DATA"):
        return Path(os.environ["LIKENESS_DATA"]) / "videos"
    return REPO.parent / "shared" / "data" / "videos"


def letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled into a black (w, h) canvas, aspect kept (faces are not distorted)."""
    w, h = size
    canvas = np.zeros((h, w, 3), np.uint8)
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = round(img.shape[1] * s), round(img.shape[0] * s)
    x, y = (w - nw) // 2, (h - nh) // 2
    canvas[y:y + nh, x:x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return canvas


def load_clip(path: str | Path, max_frames: int, size: tuple[int, int] | None = None) -> tuple[list[np.ndarray], float]:
    """Decode up to ``max_frames`` BGR frames (letterboxed to ``size`` = (w, h) if given) and the clip fps."""
    frames = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 30)
        for f in c.decode(stream):
            img = f.to_ndarray(format="bgr24")
            if size is not None and (img.shape[1], img.shape[0]) != size:
                img = letterbox(img, size)
            frames.append(img)
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return frames, fps



def write_y4m(frames: list[np.ndarray], path: str | Path, fps: float, size: tuple[int, int] | None = None) -> Path:
    """Write BGR frames as a Y4M (I420) file, e.g. for Chromium's --use-file-for-fake-video-capture.

    With ``size`` = (w, h) each frame is letterboxed into that size (aspect kept).
    """
    path = Path(path)
    h0, w0 = frames[0].shape[:2]
    w, h = size or (w0 - w0 % 2, h0 - h0 % 2)
    num, den = Fraction(fps).limit_denominator(1001).as_integer_ratio()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{num}:{den} Ip A1:1 C420jpeg\n".encode())
        for img in frames:
            canvas = letterbox(img, (w, h))
            yuv = VideoFrame.from_ndarray(canvas, format="bgr24").reformat(format="yuv420p").to_ndarray()
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(yuv).tobytes())
    return path
