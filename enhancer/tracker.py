"""Real-time multi-face tracking: sparse detection, per-frame landmark refinement, smoothing.

HOG detection (~10-40 ms) runs on a downscaled frame every ``detect_every`` frames or when a
track is lost; in between, each track's box is predicted from its last landmarks and the
5-point predictor (~0.1 ms) refines them on the full-resolution frame. Landmarks are smoothed
with a One-Euro filter so the aligned crop does not jitter.

With no face in view there is nothing to track, so every frame used to run a detection
(~20 ms a frame for an empty room). The tracker backs off instead: the first ``miss_grace``
face-less frames are all searched (a face lost for a moment is found again at once), then the
gap between searches doubles up to ``miss_every_max`` frames and never exceeds
``miss_gap_max_s`` seconds, so a face that comes into view is picked up within that; as soon
as one is found, tracking (and ``detect_every``) takes over again.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import cv2
import numpy as np

from .detect import Detection, detect_faces, landmarks5
from .smoothing import OneEuroParams, OneEuroState, one_euro
from .worker import Worker


@dataclass(frozen=True)
class TrackerConfig:
    detect_every: int = 10
    detect_max_side: int = 480
    detect_upsample: int = 0
    iou_match: float = 0.3
    max_faces: int = 4
    min_eye_distance: float = 12.0  # px; smaller faces are not worth enhancing
    max_scale_jump: float = 1.35  # landmark scale change between frames that means "lost"
    # no face in view: detect on this many frames in a row, then back off (module docstring)
    miss_grace: int = 3
    miss_every_max: int = 8  # frames: the widest gap between detections while nothing is found
    miss_gap_max_s: float = 0.3  # seconds: ... and never wider than this (low frame rates)
    smoothing: OneEuroParams = field(default_factory=OneEuroParams)


@dataclass(frozen=True)
class TrackedFace:
    track_id: int
    landmarks: np.ndarray  # smoothed 5x2, what alignment should use
    raw_landmarks: np.ndarray  # unsmoothed 5x2
    box: np.ndarray  # x0, y0, x1, y1


@dataclass
class _Track:
    track_id: int
    raw: np.ndarray
    rel_box: np.ndarray  # box centre offset and size in units of eye distance
    state: OneEuroState | None = None


def eye_distance(lm: np.ndarray) -> float:
    """Distance between eye centres of a dlib 5-point set."""
    return float(np.linalg.norm((lm[0] + lm[1]) / 2 - (lm[2] + lm[3]) / 2))


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _relative_box(box: np.ndarray, lm: np.ndarray) -> np.ndarray:
    d = max(eye_distance(lm), 1e-3)
    c = lm.mean(0)
    return np.array([((box[0] + box[2]) / 2 - c[0]) / d, ((box[1] + box[3]) / 2 - c[1]) / d,
                     (box[2] - box[0]) / d, (box[3] - box[1]) / d])


def _box_from(lm: np.ndarray, rel: np.ndarray) -> np.ndarray:
    d = eye_distance(lm)
    c = lm.mean(0) + rel[:2] * d
    hw, hh = rel[2] * d / 2, rel[3] * d / 2
    return np.array([c[0] - hw, c[1] - hh, c[0] + hw, c[1] + hh], dtype=np.float32)


class FaceTracker:
    """Stateful tracker for one video stream; ``update`` once per frame."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame = 0
        self._force_detect = True
        self.last_was_detection = False
        self._misses = 0  # detections in a row that found no face
        self._last_detect: tuple[int, float] | None = None  # (frame number, time) of the last detection
        self._worker: Worker | None = None  # periodic detection off the frame thread (in_background)
        self._detecting: tuple[Future, int] | None = None  # a background detection and the epoch it began in
        self._epoch = 0  # bumped by every detection on the frame thread: older background results are stale
        self._size: tuple[int, int] | None = None  # (height, width) of the last frame

    def in_background(self) -> None:
        """From now on, run the periodic re-detection of tracked faces in a background thread.

        Why: in a call that detection (10-40 ms) made its frame miss the deadline and go out
        un-enhanced, about once a second (docs/receiver.md). Its answer can as well arrive a frame or
        two later: a new face is picked up then, the boxes re-anchored to where the landmarks are by
        then. A search with no face tracked stays on the frame; offline runs never call this, so they
        stay reproducible frame by frame."""
        if self._worker is None:
            self._worker = Worker("detect")

    def close(self) -> None:
        """Stop the background detection thread, if any (non-blocking; idempotent)."""
        if self._worker is not None:
            self._worker.close()

    def join(self, timeout: float) -> bool:
        """After ``close``: wait up to ``timeout`` s for a background detection in flight."""
        return self._worker is None or self._worker.join(timeout)

    def reset(self) -> None:
        self._tracks.clear()
        self._force_detect = True
        self._misses = 0
        self._epoch += 1

    def _search_due(self, t: float) -> bool:
        """With no track: whether this frame runs a detection (the back-off in the module docstring)."""
        cfg = self.config
        if self._force_detect or self._misses < cfg.miss_grace or self._last_detect is None:
            return True
        frame, at = self._last_detect
        gap = min(2 ** (self._misses - cfg.miss_grace + 1), cfg.miss_every_max)
        # a clock that went backwards (a new stream's timestamps) also searches at once
        return self._frame - frame >= gap or not 0 <= t - at < cfg.miss_gap_max_s

    def update(self, frame_bgr: np.ndarray, t: float | None = None) -> list[TrackedFace]:
        cfg = self.config
        t = self._frame / 30.0 if t is None else t
        if frame_bgr.shape[:2] != self._size:  # a stream that changed size (libwebrtc senders scale on a
            if self._size is not None:  # slow link): the tracks' pixels mean nothing on it, so search this frame
                self.reset()
            self._size = frame_bgr.shape[:2]
        background = False
        if self._tracks:
            detect = self._force_detect or self._frame % cfg.detect_every == 0
            background = detect and not self._force_detect and self._worker is not None
            detect = detect and not background
        else:
            detect = self._search_due(t)
        self.last_was_detection = detect
        if not detect and not self._tracks:  # no face in view and not searching this frame
            self._frame += 1
            return []
        gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
        h, w = gray.shape[:2]
        if detect:
            self._last_detect = (self._frame, t)
        self._frame += 1
        self._force_detect = False
        if background:  # the worker keeps the frame: a grey frame passed in is the caller's, so copied
            frame = gray if frame_bgr.ndim == 3 else gray.copy()
            fut = self._worker.submit(lambda: detect_faces(frame, cfg.detect_max_side, cfg.detect_upsample))
            if fut is not None:
                self._detecting = (fut, self._epoch)
        if detect:
            self._epoch += 1
            self._associate(detect_faces(gray, cfg.detect_max_side, cfg.detect_upsample))
            self._misses = 0 if self._tracks else self._misses + 1
        else:
            kept = []
            for tr in self._tracks:
                box = _box_from(tr.raw, tr.rel_box)
                lm = landmarks5(gray, box)
                ratio = eye_distance(lm) / max(eye_distance(tr.raw), 1e-3)
                centre = lm.mean(0)
                inside = 0 <= centre[0] < w and 0 <= centre[1] < h
                if inside and 1 / cfg.max_scale_jump < ratio < cfg.max_scale_jump:
                    tr.raw = lm
                    kept.append(tr)
                else:
                    self._force_detect = True
            self._tracks = kept
            if self._detecting is not None and self._detecting[0].done():
                (fut, epoch), self._detecting = self._detecting, None
                self._worker.collected(fut)
                dets = fut.result()  # a detection that raised raises here, where the caller counts errors
                if epoch == self._epoch and self._tracks:
                    self._associate(dets, gray)
        out = []
        for tr in self._tracks:
            d = eye_distance(tr.raw)
            tr.state = one_euro(tr.state, tr.raw, t, cfg.smoothing, scale=d)
            sm = tr.state.x.astype(np.float32)
            out.append(TrackedFace(tr.track_id, sm, tr.raw.copy(), _box_from(sm, tr.rel_box)))
        return out

    def _associate(self, dets: list[Detection], now: np.ndarray | None = None) -> None:
        """Tracks from a detection: matched to the tracked boxes by overlap, new faces added, faces
        it did not find dropped. ``now``: the current frame when the detection ran on an earlier one
        (in the background): tracked faces keep the landmarks they have now and take only the box
        geometry, and a new face's landmarks are refined on ``now``."""
        cfg = self.config
        dets = [d for d in dets if eye_distance(d.landmarks) >= cfg.min_eye_distance][: cfg.max_faces]
        old_boxes = [_box_from(tr.raw, tr.rel_box) for tr in self._tracks]
        used: set[int] = set()
        new_tracks = []
        for d in dets:
            best, best_iou = -1, cfg.iou_match
            for i, ob in enumerate(old_boxes):
                iou = box_iou(d.box, ob)
                if i not in used and iou > best_iou:
                    best, best_iou = i, iou
            rel = _relative_box(d.box, d.landmarks)
            if best >= 0:
                used.add(best)
                tr = self._tracks[best]
                tr.rel_box = rel
                if now is None:
                    tr.raw = d.landmarks
            else:
                tr = _Track(self._next_id, d.landmarks if now is None else landmarks5(now, d.box), rel)
                self._next_id += 1
            new_tracks.append(tr)
        self._tracks = new_tracks
