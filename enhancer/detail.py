"""Restored detail, kept per tracked face so that a late frame can still be enhanced.

Why: in a call the generator sometimes cannot finish a frame before its deadline (the
publisher's encoder, the viewers' decoders and the generator share two cores). Sending
that frame's face raw makes the face alternate between restored and smeared several times
a second, which is worse to watch than either. What the generator adds to a crop — its
*detail*, ``restored - input`` after the strength blend — lives in the aligned crop's
coordinates, where the face hardly moves from frame to frame (alignment removes head
motion), so the last detail added to the current crop restores it nearly as well, for a
few frames. It expires after ``max_age_s``. Where the face did change (a blink, the mouth,
landmark error), old detail would ghost: eyes drawn where the lids are now closed. So the
detail is gated per pixel by how much the input crop itself changed since the detail's frame
(``motion_gate``): kept where the crop is the same, faded out where it moved.

Pure functions plus one small store; the threading lives in ``enhancer.pipeline``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ReuseConfig:
    """How long restored detail may stand in for a frame's own restoration."""

    max_age_s: float = 0.2  # ~6 frames at 30 fps; benchmarks/studies/detail_reuse.py measures ages 1-7 frames
    # motion gate, in grey levels of the blurred |crop now - crop then|: detail kept whole below
    # gate_lo, dropped above gate_hi, linear between (inf, inf: no gate)
    gate_lo: float = 8.0
    gate_hi: float = 32.0
    gate_blur: float = 2.0  # px: the difference is smoothed so codec noise does not gate
    generator_nice: int = 0  # >0: run the generator thread at a lower OS priority than the frames
    generator_interval_s: float = 0.0  # at least this long between generator starts (0: whenever idle)


def residuals(lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """(F, S, S, 3) uint8 crops -> int16 detail ``restored - lq`` (exact, so re-adding is lossless)."""
    return restored.astype(np.int16) - lq.astype(np.int16)


def motion_gate(lq: np.ndarray, lq_then: np.ndarray, config: ReuseConfig) -> np.ndarray | None:
    """(S, S, 1) float32 weight in [0, 1] for old detail on crop ``lq``: 1 where the crop is as it
    was when the detail was made, 0 where it changed; None when the gate is off."""
    if not np.isfinite(config.gate_hi):
        return None
    d = cv2.absdiff(lq, lq_then).astype(np.float32).mean(-1)
    if config.gate_blur > 0:
        d = cv2.GaussianBlur(d, (0, 0), config.gate_blur)
    span = max(config.gate_hi - config.gate_lo, 1e-6)
    return np.clip((config.gate_hi - d) / span, 0.0, 1.0)[..., None]


def add_detail(lq: np.ndarray, detail: np.ndarray, gate: np.ndarray | None = None) -> np.ndarray:
    """One uint8 crop plus int16 detail (times ``gate`` if given), clipped: the stand-in
    restoration of a late frame."""
    if gate is None:
        return np.clip(lq.astype(np.int16) + detail, 0, 255).astype(np.uint8)
    return np.clip(lq.astype(np.float32) + gate * detail + 0.5, 0, 255).astype(np.uint8)


@dataclass
class _Entry:
    detail: np.ndarray  # (S, S, 3) int16
    lq: np.ndarray  # (S, S, 3) uint8: the crop it was added to (for the motion gate)
    t: float  # time of the frame it was restored from


class DetailStore:
    """Latest detail per track id; written by the generator thread, read by the frame thread."""

    def __init__(self, config: ReuseConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._by_track: dict[int, _Entry] = {}

    def put(self, track_ids: list[int], lq: np.ndarray, detail: np.ndarray, t: float) -> None:
        """Store each face's detail (and the crop it belongs to) unless a newer frame's is already
        there (results can land out of order)."""
        with self._lock:
            for tid, c, d in zip(track_ids, lq, detail, strict=True):
                old = self._by_track.get(tid)
                if old is None or old.t <= t:
                    self._by_track[tid] = _Entry(d, c, t)

    def get(self, track_id: int, t: float) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(detail, its crop, age in s) for a face at time ``t``, or None when there is none young enough."""
        with self._lock:
            e = self._by_track.get(track_id)
        if e is None:
            return None
        age = t - e.t
        if age < 0 or age > self.config.max_age_s:  # a timestamp jump back (new source) counts as expired
            return None
        return e.detail, e.lq, age

    def apply(self, track_id: int, lq: np.ndarray, t: float) -> np.ndarray | None:
        """Crop ``lq`` of this face at time ``t`` with its stored detail (motion-gated), or None."""
        hit = self.get(track_id, t)
        if hit is None:
            return None
        detail, lq_then, _ = hit
        return add_detail(lq, detail, motion_gate(lq, lq_then, self.config))

    def keep(self, track_ids: set[int]) -> None:
        """Forget faces that are no longer tracked (their ids are never reused)."""
        with self._lock:
            for tid in [k for k in self._by_track if k not in track_ids]:
                del self._by_track[tid]

    def clear(self) -> None:
        with self._lock:
            self._by_track.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_track)
