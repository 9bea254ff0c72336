"""One background thread that runs one call at a time: the generator beside the frames, and the
tracker's periodic re-detection beside them in a call.

Why a thread of its own rather than a ThreadPoolExecutor: its threads are joined at interpreter
exit, so a hung engine would hang the process on the way out; a daemon thread does not (and
``join`` lets an owner wait for a native call in flight before exit).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class Worker:
    """One daemon thread running one call at a time, always the newest one submitted (the frame
    pipeline's generator, the tracker's background detection).

    ``submit`` returns None while a call runs (or rests, ``min_interval_s``), so callers never queue
    work behind a stale one.
    """

    def __init__(self, name: str, nice: int = 0, min_interval_s: float = 0.0) -> None:
        self._nice = nice
        self._min_interval_s = min_interval_s
        self._last_start = -float("inf")
        self._cv = threading.Condition()
        self._job: tuple[Future, Callable[[], Any]] | None = None
        self._current: Future | None = None  # submitted and not yet collected by its submitter
        self._closed = False
        self.last_ms: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"likeness-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future | None:
        """Start ``fn`` now, or return None while an earlier call is still running."""
        with self._cv:
            cur = self._current
            if self._closed or (cur is not None and (not cur.done() or cur.exception() is not None)):
                return None  # busy, or a failure not yet reported (raise_failure reports it next frame)
            now = time.monotonic()
            if now - self._last_start < self._min_interval_s:
                return None  # rested: frames in between take the stored detail
            self._last_start = now
            fut: Future = Future()
            self._current = fut
            self._job = (fut, fn)
            self._cv.notify()
            return fut

    def collected(self, fut: Future) -> None:
        """Whoever submitted ``fut`` saw its outcome; nobody needs to hear of it again."""
        with self._cv:
            if self._current is fut:
                self._current = None

    def raise_failure(self) -> None:
        """Re-raise, once, the error of a call whose submitter stopped waiting before it failed."""
        with self._cv:
            fut = self._current
            if fut is None or not fut.done() or fut.exception() is None:
                return
            self._current = None
        raise fut.exception()  # type: ignore[misc]

    def _run(self) -> None:
        if self._nice > 0:  # lower this thread only (Linux: per-thread nice); frames and codecs go first
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0)
                               + self._nice)
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                fut, fn = self._job  # type: ignore[misc]
                self._job = None
            t0 = time.perf_counter()
            try:
                fut.set_result(fn())
            except BaseException as e:  # handed to the submitter; the thread itself must live on
                fut.set_exception(e)
            self.last_ms = (time.perf_counter() - t0) * 1e3

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()
