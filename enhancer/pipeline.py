"""The frame pipeline: track -> align -> engine (batched over faces) -> paste back.

One object, used by `likeness enhance`, the WebRTC bridge and the benchmarks, so all three
measure and ship the same code path. Each stream gets its own pipeline (its own tracker
state and its own fixed noise, so the sampler is deterministic and video does not flicker
from resampled noise).

In a call, frames have deadlines. With ``reuse`` set and a time budget passed to
``process``, the generator runs in its own thread on the newest crops while the frame
thread tracks, aligns and pastes; a frame whose own restoration is not back in time gets
the last restored *detail* instead (``enhancer.detail``), so every frame goes out enhanced
rather than alternating between enhanced and raw faces when the cores are busy. The tracker's
periodic re-detection then runs beside the frames as well (``enhancer.worker``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from .align import DEFAULT_NATIVE, NativeDetail, alignment_matrix, keep_native, paste_back, warp_crops
from .detail import DetailStore, ReuseConfig, residuals
from .detail_transfer import PreparedReferences, transfer_detail
from .strength import StrengthConfig, blend, log_detail, strength_at
from .tracker import FaceTracker, TrackerConfig
from .worker import Worker

STRENGTH_SMOOTHING = 0.2  # EMA factor per frame (~5-frame time constant): steady, yet follows a bitrate change


class Engine(Protocol):
    """A face restorer: (F, S, S, 3) uint8 BGR crops in, the same shape out."""

    name: str
    size: int

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray: ...


@dataclass
class FrameResult:
    frame: np.ndarray
    faces: int
    enhanced: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    landmarks: list[np.ndarray] = field(default_factory=list)
    fresh: int = 0  # faces restored by the generator for this very frame
    reused: int = 0  # faces given an earlier frame's restored detail (see ``enhancer.detail``)
    generated: int = 0  # of the fresh faces, those the generator ran on (the rest kept no change)


# a strength under which the blend leaves every pixel as it was (|w * change| stays under half a
# level and the blend rounds): the generator's output would be thrown away, so it is not computed
UNCHANGED_BELOW = 0.49 / 255


def generator_needed(w: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) which faces the generator must run on: all without a strength, else those whose weight
    keeps some of its change. Why: a face that arrives clean gets weight 0 (the strength's fades),
    and on a good webcam that is every frame; the engine is most of a frame's cost."""
    if w is None:
        return np.ones(n, bool)
    return np.asarray(w) >= UNCHANGED_BELOW


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
        reuse: ReuseConfig | None = None,
        reference_detail: PreparedReferences | None = None,
        native: NativeDetail | None = DEFAULT_NATIVE,
    ) -> None:
        self.engine = engine
        # how much of a large face's own detail beyond the crop stays when pasting (None: none, the
        # restored crop replaces the face)
        self.native = native
        # the enrolled person's reference detail, added to their face after the generator (None: off)
        self.reference_detail = reference_detail if identity is not None else None
        self.strength = strength  # None: keep the engine's output as is
        self.reuse = reuse  # None: no detail reuse; process() always waits for the generator
        # restored detail per face, kept only when late frames may reuse it (no per-frame copies otherwise)
        self.details = DetailStore(reuse) if reuse is not None else None
        self._generator: Worker | None = None  # started on the first call with a budget
        self._finish_s = 0.0  # smoothed seconds from the end of a budgeted wait to the pasted frame
        self._clock0 = time.monotonic()
        self.identity = identity
        self.tracker = FaceTracker(tracker_config or TrackerConfig(max_faces=max_faces))
        self.noise = stream_noise(seed, max_faces, engine.size)
        self.max_faces = max_faces
        self.matcher = matcher
        self.null_identity = null_identity if null_identity is not None else getattr(engine, "null_identity", None)
        self._assigned: tuple[frozenset[int], int] | None = None  # (track ids, track id with the identity)
        self._weights: dict[int, float] = {}  # track id -> smoothed strength

    def _strength(self, faces: list, detail: np.ndarray, owners: np.ndarray) -> np.ndarray:
        """Per-face strength from the crops' ``log_detail``, smoothed per track so that the blend does
        not flicker frame to frame. The person fade, read off the enrolled person's references, applies
        to their face (``owners``) only: it says nothing of anyone else in the picture."""
        assert self.strength is not None
        raw = strength_at(detail, self.strength)
        if self.strength.person_fade is not None and not owners.all():
            others = ~owners
            raw[others] = strength_at(detail[others], replace(self.strength, person_fade=None))
        alive = {f.track_id for f in faces}
        self._weights = {k: v for k, v in self._weights.items() if k in alive}
        for i, f in enumerate(faces):
            prev = self._weights.get(f.track_id)
            raw[i] = raw[i] if prev is None else prev + STRENGTH_SMOOTHING * (raw[i] - prev)
            self._weights[f.track_id] = float(raw[i])
        return raw

    def _identities(self, faces: list, crops: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """Per-face identities (None without an enrolled one) and which faces carry the enrolled one."""
        n = len(faces)
        if self.identity is None:
            return None, np.zeros(n, bool)
        if n == 1 or self.null_identity is None:
            return np.repeat(self.identity[None], n, 0), np.ones(n, bool)
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
        owners = np.array([f.track_id == self._assigned[1] for f in faces])
        out[owners] = self.identity
        return out, owners

    def _prepare(self, frame_bgr: np.ndarray, t: float | None) -> tuple[dict[str, float], float, tuple | None]:
        """Track and align: (timings, start, (faces, matrices, crops, their log detail or None, frame time)
        or None without a face). The crops' detail is computed once here for the strength and the paste."""
        tm: dict[str, float] = {}
        t0 = time.perf_counter()
        faces = self.tracker.update(frame_bgr, t)[: self.max_faces]
        t1 = time.perf_counter()
        tm["track"] = (t1 - t0) * 1e3
        if self.details is not None:
            self.details.keep({f.track_id for f in faces})
        if not faces:
            return tm, t0, None
        size = self.engine.size
        mats = np.stack([alignment_matrix(f.landmarks, size) for f in faces])
        crops = warp_crops(frame_bgr, mats, size)
        detail = log_detail(crops) if self.strength is not None or self.native is not None else None
        tm["align"] = (time.perf_counter() - t1) * 1e3
        now = t if t is not None else time.monotonic() - self._clock0
        return tm, t0, (faces, mats, crops, detail, now)

    def _inputs(self, faces: list, crops: np.ndarray, detail: np.ndarray | None) -> tuple:
        """What the generator call needs, computed on the frame thread (the per-track state lives here):
        (track ids, crops, identities, which faces are the enrolled person, strength weights or None)."""
        ident, owners = self._identities(faces, crops)
        w = self._strength(faces, detail, owners) if self.strength is not None else None
        return [f.track_id for f in faces], crops, ident, owners, w

    def _restore(self, ids: list[int], crops: np.ndarray, ident: np.ndarray | None, owners: np.ndarray,
                 w: np.ndarray | None, now: float) -> tuple[np.ndarray, int]:
        """The generator on the crops whose strength keeps some of its change (then the strength blend
        and the enrolled person's reference detail): (restored crops, faces the generator ran on).
        Remembers the detail it added."""
        run = generator_needed(w, len(crops))
        if run.all():
            restored = self.engine.restore(crops, ident, self.noise[: len(crops)])
        else:
            restored = crops.copy()
            if run.any():
                restored[run] = self.engine.restore(crops[run], None if ident is None else ident[run],
                                                    self.noise[: len(crops)][run])
        if w is not None:
            restored = blend(crops, restored, w)
        if self.reference_detail is not None and owners.any():
            restored = np.stack([transfer_detail(r, c, self.reference_detail) if own else r
                                 for r, c, own in zip(restored, crops, owners, strict=True)])
        if self.details is not None:
            self.details.put(ids, crops, residuals(crops, restored), now)
        return restored, int(run.sum())

    def _paste(self, frame_bgr: np.ndarray, faces: list, mats: np.ndarray, crops: np.ndarray,
               detail: np.ndarray | None, restored: np.ndarray, keep: np.ndarray, tm: dict[str, float],
               t0: float, fresh: int, reused: int, generated: int = 0) -> FrameResult:
        t3 = time.perf_counter()
        if keep.any():
            share = keep_native(detail[keep], self.native) if self.native is not None else np.zeros(int(keep.sum()))
            out = paste_back(frame_bgr, restored[keep], mats[keep], crops[keep], share)
        else:
            out = frame_bgr
        tm["paste"] = (time.perf_counter() - t3) * 1e3
        tm["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(out, len(faces), bool(keep.any()), tm, [f.landmarks for f in faces], fresh, reused,
                           generated)

    def process(self, frame_bgr: np.ndarray, t: float | None = None, budget_s: float | None = None) -> FrameResult:
        """Enhance one frame. ``t``: its timestamp in seconds (None: a still image or unknown).

        ``budget_s`` (only with ``reuse``): seconds this call may take. The generator then runs
        in the background; if this frame's restoration is not back in time, the face gets the
        last restored detail (or stays as it is when there is none young enough). Without a
        budget the call waits for the generator, as offline enhancement wants.
        """
        if budget_s is not None and self.reuse is not None:
            return self._process_within(frame_bgr, t, budget_s)
        tm, t0, prep = self._prepare(frame_bgr, t)
        if prep is None:
            return FrameResult(frame_bgr, 0, False, tm)
        faces, mats, crops, detail, now = prep
        t2 = time.perf_counter()
        restored, generated = self._restore(*self._inputs(faces, crops, detail), now)
        tm["engine"] = (time.perf_counter() - t2) * 1e3
        keep = np.ones(len(faces), bool)
        return self._paste(frame_bgr, faces, mats, crops, detail, restored, keep, tm, t0, len(faces), 0, generated)

    def process_reusing(self, frame_bgr: np.ndarray, t: float | None = None) -> FrameResult:
        """Enhance one frame with stored detail only, never running the generator: what a late
        frame gets. Deterministic, so ``benchmarks/studies/detail_reuse.py`` can measure it exactly."""
        if self.details is None:
            raise ValueError("process_reusing needs a pipeline built with reuse=ReuseConfig(...)")
        tm, t0, prep = self._prepare(frame_bgr, t)
        if prep is None:
            return FrameResult(frame_bgr, 0, False, tm)
        faces, mats, crops, detail, now = prep
        restored, keep = self._with_detail(faces, crops, now)
        tm["engine"] = 0.0
        return self._paste(frame_bgr, faces, mats, crops, detail, restored, keep, tm, t0, 0, int(keep.sum()))

    def _with_detail(self, faces: list, crops: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        assert self.details is not None  # only reached with reuse
        restored = crops.copy()
        keep = np.zeros(len(faces), bool)
        for i, f in enumerate(faces):
            out = self.details.apply(f.track_id, crops[i], now)
            if out is not None:
                restored[i] = out
                keep[i] = True
        return restored, keep

    def _process_within(self, frame_bgr: np.ndarray, t: float | None, budget_s: float) -> FrameResult:
        gen = self._generator
        if gen is None:
            gen = self._generator = Worker("generator", self.reuse.generator_nice, self.reuse.generator_interval_s)
            self.tracker.in_background()  # a frame with a deadline does not wait for a re-detection either
        gen.raise_failure()  # a background call that failed after its frame had gone out
        tm, t0, prep = self._prepare(frame_bgr, t)
        if prep is None:
            return FrameResult(frame_bgr, 0, False, tm)
        faces, mats, crops, detail, now = prep
        t2 = time.perf_counter()
        inputs = self._inputs(faces, crops, detail)
        fut = gen.submit(lambda: self._restore(*inputs, now))
        done = None
        if fut is not None:
            wait = budget_s - (t2 - t0) - max(PASTE_RESERVE_S, FINISH_MARGIN * self._finish_s)
            if gen.last_ms is not None and gen.last_ms / 1e3 > wait:
                wait = 0.0  # the last call took longer than this frame has left: holding it is futile
            try:
                done = fut.result(timeout=max(wait, 0.0))
                gen.collected(fut)
            except FutureTimeout:
                pass
            except BaseException:
                gen.collected(fut)
                self.details.clear()
                raise
        t3 = time.perf_counter()
        tm["engine"] = (t3 - t2) * 1e3
        if gen.last_ms is not None:
            tm["generator"] = gen.last_ms
        if done is not None:
            restored, generated = done
            keep = np.ones(len(faces), bool)
            result = self._paste(frame_bgr, faces, mats, crops, detail, restored, keep, tm, t0, len(faces), 0,
                                 generated)
        else:
            restored, keep = self._with_detail(faces, crops, now)
            result = self._paste(frame_bgr, faces, mats, crops, detail, restored, keep, tm, t0, 0, int(keep.sum()))
        self._finish_s += FINISH_SMOOTHING * (time.perf_counter() - t3 - self._finish_s)
        return result

    def close(self) -> None:
        """Stop the background generator and detection threads, if started (idempotent, non-blocking)."""
        if self._generator is not None:
            self._generator.close()
        self.tracker.close()

    def join(self, timeout: float) -> bool:
        """After ``close``: wait up to ``timeout`` s for a generator call or background detection in flight
        to end; True when neither thread is left. Why: Python 3.11 ends a daemon thread that is still inside native code
        at interpreter exit with pthread_exit, and a C++ frame (torch, ONNX Runtime) on its stack turns
        that into std::terminate: the process aborts on its way out (seen with `likeness view`; dlib too)."""
        end = time.monotonic() + timeout
        generator = self._generator is None or self._generator.join(timeout)
        return self.tracker.join(max(0.0, end - time.monotonic())) and generator


PASTE_RESERVE_S = 0.002  # kept back from a frame's budget for paste-back (measured ~0.8 ms at 480p) ...
# ... or this times the measured time from the end of the wait to the pasted frame (detail, motion
# gate, paste), smoothed, when that is more: 2.4 ms on a loaded 2-core machine, where a fixed 2 ms
# made the frame that waited for the generator miss its deadline and go out raw
FINISH_MARGIN = 1.5
FINISH_SMOOTHING = 0.2
