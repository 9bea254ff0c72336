"""The frame pipeline: track -> align -> engine (batched over faces) -> paste back.

One object, used by `likeness enhance`, the WebRTC bridge and the benchmarks, so all three
measure and ship the same code path. Each stream gets its own pipeline (its own tracker
state and its own fixed noise, so the sampler is deterministic and video does not flicker
from resampled noise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from .align import alignment_matrix, paste_back, warp_crops
from .tracker import FaceTracker, TrackerConfig


class Engine(Protocol):
    """A face restorer: (F, S, S, 3) uint8 BGR crops in, the same shape out."""

    name: str
    size: int

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray: ...


class BicubicEngine:
    """Classic baseline: what the receiver already sees (bicubic) plus a mild unsharp mask.

    Not a model: it stands in where no weights are available and is the speed floor in
    benchmarks.
    """

    name = "bicubic"

    def __init__(self, size: int = 128) -> None:
        self.size = size

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        out = np.empty_like(crops)
        for i, c in enumerate(crops):
            blur = cv2.GaussianBlur(c, (0, 0), 1.2)
            out[i] = cv2.addWeighted(c, 1.6, blur, -0.6, 0)
        return out


@dataclass
class FrameResult:
    frame: np.ndarray
    faces: int
    enhanced: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    landmarks: list[np.ndarray] = field(default_factory=list)


def stream_noise(seed: int, n: int, size: int) -> np.ndarray:
    """Fixed per-stream noise (n, 3, S, S): the same noise every frame keeps output stable."""
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


class FramePipeline:
    """Enhances every tracked face in a frame with one batched engine call."""

    def __init__(
        self,
        engine: Engine,
        identity: np.ndarray | None = None,
        tracker_config: TrackerConfig | None = None,
        seed: int = 0,
        max_faces: int = 4,
    ) -> None:
        self.engine = engine
        self.identity = identity
        self.tracker = FaceTracker(tracker_config or TrackerConfig(max_faces=max_faces))
        self.noise = stream_noise(seed, max_faces, engine.size)
        self.max_faces = max_faces

    def process(self, frame_bgr: np.ndarray, t: float | None = None) -> FrameResult:
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        faces = self.tracker.update(frame_bgr, t)[: self.max_faces]
        t1 = time.perf_counter()
        tm["track"] = (t1 - t0) * 1e3
        if not faces:
            return FrameResult(frame_bgr, 0, False, tm)
        size = self.engine.size
        mats = np.stack([alignment_matrix(f.landmarks, size) for f in faces])
        crops = warp_crops(frame_bgr, mats, size)
        t2 = time.perf_counter()
        tm["align"] = (t2 - t1) * 1e3
        ident = None if self.identity is None else np.repeat(self.identity[None], len(faces), 0)
        restored = self.engine.restore(crops, ident, self.noise[: len(faces)])
        t3 = time.perf_counter()
        tm["engine"] = (t3 - t2) * 1e3
        out = paste_back(frame_bgr, restored, mats, crops)
        tm["paste"] = (time.perf_counter() - t3) * 1e3
        tm["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(out, len(faces), True, tm, [f.landmarks for f in faces])
