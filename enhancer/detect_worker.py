"""The tracker's periodic re-detection, run beside the frames instead of on one of them.

Why: while faces are tracked, every ``detect_every``-th frame runs a full HOG detection (10-40 ms)
to find faces that came into view and to re-anchor the tracked boxes. In a call that frame then
misses its deadline and goes out un-enhanced, about once a second (docs/receiver.md). The
detection's answer can just as well arrive a frame or two later: a new face is picked up then,
and the boxes are re-anchored to where the landmarks are by then. So one daemon thread runs one
detection at a time on a copy of the frame, and the tracker takes the result on a later frame.
Only the tracker uses it, and only when asked (a call's pipeline); offline runs stay exactly
reproducible frame by frame.
"""

from __future__ import annotations

import threading

import numpy as np

from .detect import Detection, detect_faces


class DetectionWorker:
    """One background detection at a time; ``take`` returns a finished one exactly once."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._job: tuple[np.ndarray, int, int, int] | None = None
        self._result: tuple[int, list[Detection] | BaseException] | None = None
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="likeness-detect", daemon=True)
        self._thread.start()

    def submit(self, gray: np.ndarray, max_side: int, upsample: int, tag: int) -> bool:
        """Start a detection on ``gray`` (the worker keeps it: pass a frame nobody writes to), or
        return False while one is running. ``tag`` comes back with the result."""
        with self._cv:
            if self._busy or self._closed:
                return False
            self._busy = True
            self._job = (gray, max_side, upsample, tag)
            self._cv.notify()
            return True

    def take(self) -> tuple[int, list[Detection]] | None:
        """(tag, detections) of a finished detection, once; None while none is ready. A detection
        that raised re-raises here, on the frame thread, where the caller counts its errors."""
        with self._cv:
            result, self._result = self._result, None
        if result is None:
            return None
        tag, dets = result
        if isinstance(dets, BaseException):
            raise dets
        return tag, dets

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                (gray, max_side, upsample, tag), self._job = self._job, None
            try:
                dets: list[Detection] | BaseException = detect_faces(gray, max_side, upsample)
            except Exception as e:  # handed to the frame thread; this thread lives on
                dets = e
            with self._cv:
                self._result = (tag, dets)
                self._busy = False

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def join(self, timeout: float) -> bool:
        """After ``close``: wait for a detection in flight (a daemon thread left inside dlib at
        interpreter exit aborts the process on Python 3.11); True when the thread is gone."""
        self._thread.join(timeout)
        return not self._thread.is_alive()
