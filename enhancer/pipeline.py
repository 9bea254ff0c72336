"""The frame pipeline: track -> align -> engine (batched over faces) -> paste back.

One object, used by `likeness enhance`, the WebRTC bridge and the benchmarks, so all three
measure and ship the same code path. Each stream gets its own pipeline (its own tracker
state and its own fixed noise, so the sampler is deterministic and video does not flicker
from resampled noise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from .align import alignment_matrix, paste_back, warp_crops
from .strength import DEFAULT_STRENGTH, StrengthConfig, blend
from .strength import strength as strength_weights
from .tracker import FaceTracker, TrackerConfig

STRENGTH_SMOOTHING = 0.2  # EMA factor per frame (~5-frame time constant): steady, yet follows a bitrate change


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


Matcher = Callable[[np.ndarray], np.ndarray]  # (F, S, S, 3) uint8 crops -> (F, D) identity vectors


def assign_identity(scores: np.ndarray | None, areas: np.ndarray) -> int:
    """Which face gets the enrolled identity: the best-matching one if a matcher scored them,
    else the largest (on a webcam the user is nearly always the largest face)."""
    if scores is not None and len(scores):
        return int(np.argmax(scores))
    return int(np.argmax(areas))


class FramePipeline:
    """Enhances every tracked face in a frame with one batched engine call.

    With an enrolled identity and several faces, the identity goes to one face only (see
    ``assign_identity``); the others are restored in the generic mode. The choice is sticky
    per track and re-made only when the set of tracked faces changes.
    """

    def __init__(
        self,
        engine: Engine,
        identity: np.ndarray | None = None,
        tracker_config: TrackerConfig | None = None,
        seed: int = 0,
        max_faces: int = 4,
        matcher: Matcher | None = None,
        null_identity: np.ndarray | None = None,
        strength: StrengthConfig | None = None,
    ) -> None:
        self.engine = engine
        self.strength = strength  # None: keep the engine's output as is
        self.identity = identity
        self.tracker = FaceTracker(tracker_config or TrackerConfig(max_faces=max_faces))
        self.noise = stream_noise(seed, max_faces, engine.size)
        self.max_faces = max_faces
        self.matcher = matcher
        self.null_identity = null_identity if null_identity is not None else getattr(engine, "null_identity", None)
        self._assigned: tuple[frozenset[int], int] | None = None  # (track ids, track id with the identity)
        self._weights: dict[int, float] = {}  # track id -> smoothed strength

    def _strength(self, faces: list, crops: np.ndarray) -> np.ndarray:
        """Per-face strength, smoothed per track so that the blend does not flicker frame to frame."""
        assert self.strength is not None
        raw = strength_weights(crops, self.strength)
        alive = {f.track_id for f in faces}
        self._weights = {k: v for k, v in self._weights.items() if k in alive}
        for i, f in enumerate(faces):
            prev = self._weights.get(f.track_id)
            raw[i] = raw[i] if prev is None else prev + STRENGTH_SMOOTHING * (raw[i] - prev)
            self._weights[f.track_id] = float(raw[i])
        return raw

    def _identities(self, faces: list, crops: np.ndarray) -> np.ndarray | None:
        if self.identity is None:
            return None
        n = len(faces)
        if n == 1 or self.null_identity is None:
            return np.repeat(self.identity[None], n, 0)
        ids = frozenset(f.track_id for f in faces)
        if self._assigned is None or self._assigned[0] != ids:
            scores = None
            if self.matcher is not None:
                vecs = self.matcher(crops)
                ref = self.identity[0] / (np.linalg.norm(self.identity[0]) + 1e-8)
                scores = vecs @ ref / (np.linalg.norm(vecs, axis=1) + 1e-8)
            areas = np.array([(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces])
            self._assigned = (ids, faces[assign_identity(scores, areas)].track_id)
        out = np.repeat(self.null_identity[None], n, 0).astype(np.float32)
        for i, f in enumerate(faces):
            if f.track_id == self._assigned[1]:
                out[i] = self.identity
        return out

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
        ident = self._identities(faces, crops)
        restored = self.engine.restore(crops, ident, self.noise[: len(faces)])
        if self.strength is not None:
            restored = blend(crops, restored, self._strength(faces, crops))
        t3 = time.perf_counter()
        tm["engine"] = (t3 - t2) * 1e3
        out = paste_back(frame_bgr, restored, mats, crops)
        tm["paste"] = (time.perf_counter() - t3) * 1e3
        tm["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(out, len(faces), True, tm, [f.landmarks for f in faces])


def build_pipeline(
    identity: str | None = None,
    engine: str = "auto",
    steps: int | None = None,
    weights: str | None = None,
    seed: int = 0,
    max_faces: int = 4,
    home: str | None = None,
    strength: StrengthConfig | None = DEFAULT_STRENGTH,
) -> FramePipeline:
    """The product pipeline: best available engine for the packaged student, the named
    enrolled identity (checked against the engine's encoder), an identity matcher, and the
    adaptive strength (``enhancer.strength``; None keeps the generator's full output)."""
    from engines import create_engine

    from .identity_store import IdentityStore

    eng = create_engine(engine, weights=weights, steps=steps)
    ident = None
    matcher = None
    if identity:
        ident = IdentityStore(home).load(identity, eng.info.encoder_id)
        matcher = encoder_matcher(weights)
    return FramePipeline(eng, ident, seed=seed, max_faces=max_faces, matcher=matcher, strength=strength)


def encoder_matcher(weights: str | None = None) -> Matcher:
    """Our own identity encoder's global vector per crop (never the dlib judge)."""
    import torch

    from .weights import load_restorer

    model, _ = load_restorer(weights, kind="student")

    def match(crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.inference_mode():
            return model.encode(x[:, None])[:, 0].numpy()

    return match
