"""Restored detail, kept per tracked face so that a late frame can still be enhanced.

Why: in a call the generator sometimes cannot finish a frame before its deadline (the
publisher's encoder, the viewers' decoders and the generator share two cores). Sending
that frame's face raw makes the face alternate between restored and smeared several times
a second, which is worse to watch than either. What the generator adds to a crop — its
*detail*, ``restored - input`` after the strength blend — lives in the aligned crop's
coordinates, where the face hardly moves from frame to frame (alignment removes head
motion), so the last detail added to the current crop restores it nearly as well, for a
few frames. It expires after ``max_age_s``: longer, and a moving mouth or blink ghosts.

Pure functions plus one small store; the threading lives in ``enhancer.pipeline``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ReuseConfig:
    """How long restored detail may stand in for a frame's own restoration."""

    max_age_s: float = 0.2  # ~6 frames at 30 fps; benchmarks/detail_reuse.py measures ages 1-5 frames


def residuals(lq: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """(F, S, S, 3) uint8 crops -> int16 detail ``restored - lq`` (exact, so re-adding is lossless)."""
    return restored.astype(np.int16) - lq.astype(np.int16)


def add_detail(lq: np.ndarray, detail: np.ndarray) -> np.ndarray:
    """One uint8 crop plus int16 detail, clipped: the stand-in restoration of a late frame."""
    return np.clip(lq.astype(np.int16) + detail, 0, 255).astype(np.uint8)


@dataclass
class _Entry:
    detail: np.ndarray  # (S, S, 3) int16
    t: float  # time of the frame it was restored from


class DetailStore:
    """Latest detail per track id; written by the generator thread, read by the frame thread."""

    def __init__(self, config: ReuseConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._by_track: dict[int, _Entry] = {}

    def put(self, track_ids: list[int], detail: np.ndarray, t: float) -> None:
        """Store each face's detail unless a newer frame's is already there (results can land out of order)."""
        with self._lock:
            for tid, d in zip(track_ids, detail, strict=True):
                old = self._by_track.get(tid)
                if old is None or old.t <= t:
                    self._by_track[tid] = _Entry(d, t)

    def get(self, track_id: int, t: float) -> tuple[np.ndarray, float] | None:
        """(detail, age in s) for a face at time ``t``, or None when there is none young enough."""
        with self._lock:
            e = self._by_track.get(track_id)
        if e is None:
            return None
        age = t - e.t
        if age < 0 or age > self.config.max_age_s:  # a timestamp jump back (new source) counts as expired
            return None
        return e.detail, age

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
