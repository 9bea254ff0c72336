"""EnhancingTrack: a video track that enhances another one without ever stalling the call.

Design (why it is shaped like this):

* A pump task drains the source as fast as frames arrive. aiortc's receiver queue is
  unbounded, so a consumer slower than the network would otherwise build latency without
  limit; here at most ``max_pending`` frames wait and older ones are dropped (latest wins).
* Enhancement runs in one worker thread per track (torch/onnx/OpenCV release the GIL), so
  the event loop keeps receiving, encoding and sending while a frame is processed.
* Every frame has a deadline (``deadline_frames`` source intervals after arrival, or
  ``deadline_ms``). If the enhanced frame is not back by then, or the enhancer raised, the
  original frame goes out instead (passthrough), so video keeps flowing at the source rate.
  The worker always picks up the next frame, so enhancement resumes as soon as the enhancer
  is fast (or healthy) again.
* A processor with detail reuse (``FramePipeline(reuse=...)``, what the bridge builds) is
  given the time left to the deadline: it runs the generator in the background and, when that
  is late, gives the frame the last restored detail, so the worker finishes in time and
  frames go out enhanced ("reused") instead of raw while the cores are busy.
* Output frames keep the source's pts/time_base, so A/V sync and RTP timing are untouched.
* ``processor=None`` makes a relay: a stream its publisher already enhanced (``likeness call``)
  keeps the pump (bounded queue, latest wins) and the stats, but no frame is converted or
  processed (no worker thread); the stats say ``"processing": "relay"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from enhancer.pipeline import FrameResult

log = logging.getLogger(__name__)

DEMAND_WINDOW_S = 1.0  # no recv() for this long: nobody is watching, do not burn CPU enhancing
EMIT_RESERVE_S = 0.003  # kept back from a frame's deadline for the BGR -> YUV conversion and hand-off


class FrameProcessor(Protocol):
    """What the bridge needs from a pipeline; ``enhancer.pipeline.FramePipeline`` is one."""

    def process(self, frame_bgr: np.ndarray, t: float | None = None) -> FrameResult: ...


ProcessorFactory = Callable[[str | None], FrameProcessor]
"""Builds one processor per stream for an identity name (or None); called off the event loop."""


class _Rate:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self._t: deque[float] = deque()

    def add(self, now: float) -> None:
        self._t.append(now)
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._t and now - self._t[0] > self.window_s:
            self._t.popleft()

    def rate(self, now: float) -> float:
        self._prune(now)
        if len(self._t) < 2:
            return 0.0
        span = max(now - self._t[0], self._t[-1] - self._t[0], 1e-6)
        return (len(self._t) - 1) / span if span < self.window_s else len(self._t) / self.window_s


@dataclass(eq=False)
class _Job:
    """One source frame on its way out: enhanced by the worker or passed through."""

    frame: VideoFrame
    arrived: float
    deadline: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    submitted: bool = False
    result: VideoFrame | None = None
    error: BaseException | None = None
    faces: int = 0
    reused: bool = False  # enhanced with earlier detail, not this frame's own restoration


@dataclass
class _Counters:
    frames_in: int = 0
    frames_out: int = 0
    enhanced: int = 0
    enhanced_reused: int = 0  # of ``enhanced``: with an earlier frame's restored detail
    no_face: int = 0
    passthrough_late: int = 0  # enhancer too slow for the deadline
    passthrough_busy: int = 0  # worker still busy with an earlier, already-late frame
    passthrough_error: int = 0
    dropped: int = 0  # frames never sent (consumer slower than source)
    unread: int = 0  # frames discarded while nobody was reading the track yet
    late_results: int = 0  # enhanced frames that came back after their deadline (discarded)
    relayed: int = 0  # frames sent as they came, by a relay (``processor=None``)


class EnhancingTrack(MediaStreamTrack):
    """Video track returning ``processor.process`` applied to ``source``'s frames, or the originals on time.

    ``processor=None``: a relay, every frame goes out as it came (see the module docstring).
    Construct inside a running event loop; call ``aclose()`` (or ``stop()``) when done.
    Tracks whose processors share non-thread-safe state (dlib's detector) share ``lock``.
    """

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        processor: FrameProcessor | None,
        *,
        deadline_frames: float = 1.5,
        deadline_ms: float | None = None,
        max_pending: int = 2,
        name: str = "track",
        lock: threading.Lock | None = None,
    ) -> None:
        super().__init__()
        if source.kind != "video":
            raise ValueError(f"EnhancingTrack needs a video source, got {source.kind}")
        self.name = name
        self._source = source
        self._processor = processor
        # Held around process(): enhancer.detect shares one dlib HOG detector per process,
        # and dlib detectors must not run in two threads at once (it aborts the process).
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._deadline_frames = deadline_frames
        self._deadline_ms = deadline_ms
        self._max_pending = max(1, max_pending)
        self._loop = asyncio.get_running_loop()
        self._pending: deque[_Job] = deque()
        self._waiting: _Job | None = None  # the job recv() is currently waiting on
        self._new_frame = asyncio.Event()
        self._source_ended = False
        self._interval = 1 / 30
        self._last_arrival: float | None = None
        self._last_pts: tuple[int | None, Any] = (None, None)  # (pts, time_base) of the previous frame
        self._last_demand = -1e9
        self._busy = False
        self._jobs: queue.SimpleQueue[tuple[_Job, float | None] | None] = queue.SimpleQueue()
        self.c = _Counters()
        self._errors: dict[str, int] = {}
        self._erroring = False
        self._missed_logged = False  # "missed the deadline" is logged once per track, like each error kind
        self._stage_ms: dict[str, float] = {}
        self._faces = 0
        self._rate_in = _Rate()
        self._rate_out = _Rate()
        self._rate_enh = _Rate()
        self._rate_reused = _Rate()
        # processors with detail reuse take the time left to the deadline (see the module docstring)
        self._budgeted = getattr(processor, "reuse", None) is not None
        self._started = time.monotonic()
        self._thread: threading.Thread | None = None
        if processor is not None:
            self._thread = threading.Thread(target=self._work, name=f"likeness-enhance-{name}", daemon=True)
            self._thread.start()
        self._pump_task = self._loop.create_task(self._pump(), name=f"likeness-pump-{name}")

    # ------------------------------------------------------------------ event-loop side

    def _source_dt(self, frame: Any, now: float) -> float | None:
        """Seconds between this frame and the previous one: from their timestamps when both have
        them, else from arrival times. Why timestamps: a starved or jittery network delivers
        frames in bursts, and bursts measured by arrival would shrink the deadline just when the
        enhancer most needs it (measured: 50 -> 15 ms under CPU starvation)."""
        pts, tb = getattr(frame, "pts", None), getattr(frame, "time_base", None)
        prev_pts, prev_tb = self._last_pts
        self._last_pts = (pts, tb)
        if pts is not None and tb is not None and prev_pts is not None and prev_tb == tb and pts > prev_pts:
            return float((pts - prev_pts) * tb)
        return None if self._last_arrival is None else now - self._last_arrival

    def idle_s(self) -> float:
        """Seconds since the last source frame arrived (since creation if none has yet): how a
        bridge tells a silently dead publisher (killed, unplugged) from a live one."""
        return time.monotonic() - (self._last_arrival if self._last_arrival is not None else self._started)

    def _deadline_s(self) -> float:
        if self._deadline_ms is not None:
            return self._deadline_ms / 1e3
        return self._deadline_frames * self._interval

    async def _pump(self) -> None:
        """Drain the source continuously so nothing queues up unseen behind us."""
        try:
            while True:
                frame = await self._source.recv()
                now = time.monotonic()
                dt = self._source_dt(frame, now)
                if dt is not None:
                    self._interval += 0.1 * (min(max(dt, 1 / 120), 1 / 5) - self._interval)
                self._last_arrival = now
                self.c.frames_in += 1
                self._rate_in.add(now)
                self._pending.append(_Job(frame, now, now + self._deadline_s()))
                while len(self._pending) > self._max_pending:
                    self._pending.popleft().done.set()
                    if now - self._last_demand <= DEMAND_WINDOW_S:
                        self.c.dropped += 1
                    else:
                        self.c.unread += 1
                self._kick()
                self._new_frame.set()
        except MediaStreamError:
            pass
        finally:
            self._source_ended = True
            self._new_frame.set()

    def _kick(self) -> None:
        """Hand the oldest job that can still make its deadline to the worker, if it is idle."""
        if self._busy or self.readyState != "live" or self._processor is None:
            return
        now = time.monotonic()
        if now - self._last_demand > DEMAND_WINDOW_S and self._waiting is None:
            return
        candidates = ([self._waiting] if self._waiting else []) + list(self._pending)
        for job in candidates:
            if not job.submitted and job.deadline > now:
                job.submitted = True
                self._busy = True
                t = (
                    float(job.frame.pts * job.frame.time_base)
                    if job.frame.pts is not None and job.frame.time_base
                    else None
                )
                self._jobs.put((job, t))
                return

    def _finished(
        self, job: _Job, result: FrameResult | None, out: VideoFrame | None, error: BaseException | None
    ) -> None:
        """Worker completion, run on the loop."""
        self._busy = False
        if error is not None:
            kind = type(error).__name__
            self._errors[kind] = self._errors.get(kind, 0) + 1
            if self._errors[kind] == 1:
                log.warning(
                    "%s: enhancer raised %s: %s; frames pass through un-enhanced until it recovers",
                    self.name,
                    kind,
                    error,
                )
            self._erroring = True
            job.error = error
        elif result is not None:
            if self._erroring:
                log.info("%s: enhancer recovered", self.name)
                self._erroring = False
            for k, v in result.timings_ms.items():
                old = self._stage_ms.get(k)
                self._stage_ms[k] = v if old is None else old + 0.2 * (v - old)
            self._faces = result.faces
            job.faces = result.faces
            job.result = out
            job.reused = out is not None and result.fresh == 0 and result.reused > 0
            if job is not self._waiting and all(job is not p for p in self._pending):
                self.c.late_results += 1
        job.done.set()
        self._kick()

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._last_demand = time.monotonic()
        while not self._pending:
            if self._source_ended:
                self.stop()
                raise MediaStreamError
            self._new_frame.clear()
            await self._new_frame.wait()
            if self.readyState != "live":
                raise MediaStreamError
        job = self._pending.popleft()
        if self._processor is None:  # a relay: nothing to wait for
            return self._emit(job)
        self._waiting = job
        try:
            self._kick()
            remaining = job.deadline - time.monotonic()
            if not job.done.is_set() and remaining > 0:
                try:
                    await asyncio.wait_for(job.done.wait(), remaining)
                except TimeoutError:
                    pass
        finally:
            self._waiting = None
        if self.readyState != "live":
            raise MediaStreamError
        return self._emit(job)

    def _emit(self, job: _Job) -> VideoFrame:
        now = time.monotonic()
        self.c.frames_out += 1
        self._rate_out.add(now)
        if self._processor is None:
            self.c.relayed += 1
            return job.frame
        if job.result is not None:
            self.c.enhanced += 1
            self._rate_enh.add(now)
            if job.reused:
                self.c.enhanced_reused += 1
                self._rate_reused.add(now)
            return job.result
        if job.error is not None:
            self.c.passthrough_error += 1
        elif job.done.is_set():
            self.c.no_face += 1
        elif job.submitted:
            self.c.passthrough_late += 1
            self._log_missed()
        else:
            self.c.passthrough_busy += 1
            self._log_missed()
        return job.frame

    def _log_missed(self) -> None:
        """Say once that the enhancer is too slow (or hung): otherwise it would only show in the stats."""
        if not self._missed_logged:
            self._missed_logged = True
            log.warning(
                "%s: enhancer missed the %.0f ms deadline; frames pass through un-enhanced while it is slow",
                self.name,
                self._deadline_s() * 1e3,
            )

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        processor = self._processor
        assert processor is not None  # relays start no worker
        while True:
            item = self._jobs.get()
            if item is None:
                return
            job, t = item
            result = out = error = None
            try:
                img = job.frame.to_ndarray(format="bgr24")
                with self._lock:
                    if self._budgeted:
                        budget = job.deadline - time.monotonic() - EMIT_RESERVE_S
                        result = processor.process(img, t, budget_s=max(budget, 0.0))
                    else:
                        result = processor.process(img, t)
                if result.enhanced:
                    out = VideoFrame.from_ndarray(np.ascontiguousarray(result.frame), format="bgr24")
                    out = out.reformat(format="yuv420p")  # what the encoder wants; do it here, off the loop
                    out.pts = job.frame.pts
                    out.time_base = job.frame.time_base
            except Exception as e:  # the enhancer's failure must never end the call
                error = e
            try:
                self._loop.call_soon_threadsafe(self._finished, job, result, out, error)
            except RuntimeError:  # loop closed during shutdown
                return

    # ------------------------------------------------------------------ lifecycle, stats

    def stop(self) -> None:
        """End the track: wakes any recv(), stops the pump and asks the worker thread to exit."""
        if self.readyState == "live":
            super().stop()
            self._jobs.put(None)
            close = getattr(self._processor, "close", None)
            if close is not None:
                close()  # e.g. the pipeline's background generator thread (non-blocking)
            self._pump_task.cancel()
            self._new_frame.set()
            if self._waiting is not None:
                self._waiting.done.set()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop and wait until the pump task, the worker thread and the processor's own generator thread
        are gone (no leaks, no native call left running at interpreter exit)."""
        self.stop()
        try:
            await self._pump_task
        except (asyncio.CancelledError, Exception):
            pass
        end = time.monotonic() + timeout
        while self.worker_alive and time.monotonic() < end:
            await asyncio.sleep(0.01)
        join = getattr(self._processor, "join", None)  # the pipeline's generator thread (FramePipeline.join)
        if join is not None:
            await asyncio.to_thread(join, max(0.0, end - time.monotonic()))

    @property
    def worker_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        """A JSON-able snapshot for the stats endpoint and tests."""
        now = time.monotonic()
        c = self.c
        out_rate = self._rate_out.rate(now)
        return {
            "name": self.name,
            "state": self.readyState,
            # "relay": the publisher enhanced the stream itself, frames go out untouched
            "processing": "enhance" if self._processor is not None else "relay",
            "uptime_s": round(now - self._started, 2),
            "fps_in": round(self._rate_in.rate(now), 2),
            "fps_out": round(out_rate, 2),
            "enhanced_share": round(min(1.0, self._rate_enh.rate(now) / out_rate), 3) if out_rate > 0 else 0.0,
            "enhanced_share_total": round(c.enhanced / c.frames_out, 3) if c.frames_out else 0.0,
            # of the frames out, those enhanced with an earlier frame's detail (the generator was late)
            "reused_share": round(min(1.0, self._rate_reused.rate(now) / out_rate), 3) if out_rate > 0 else 0.0,
            "reused_share_total": round(c.enhanced_reused / c.frames_out, 3) if c.frames_out else 0.0,
            "frames_in": c.frames_in,
            "frames_out": c.frames_out,
            "enhanced": c.enhanced,
            "enhanced_reused": c.enhanced_reused,
            "no_face": c.no_face,
            "passthrough_late": c.passthrough_late,
            "passthrough_busy": c.passthrough_busy,
            "passthrough_error": c.passthrough_error,
            "dropped": c.dropped,
            "unread": c.unread,
            "late_results": c.late_results,
            "relayed": c.relayed,
            "errors": dict(self._errors),
            "faces": self._faces,
            "stage_ms": {k: round(v, 2) for k, v in self._stage_ms.items()},
            "deadline_ms": round(self._deadline_s() * 1e3, 1),
            "source_fps_estimate": round(1 / self._interval, 2),
        }
