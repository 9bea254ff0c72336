"""Stamped real-time media: a paced clip track, a sink that reads the stamps, glass-to-glass latency.

Frames carry their index as a 12-bit black/white barcode in the bottom rows, big enough
to survive VP8/H.264 at low bitrates, so a receiver two hops away knows exactly which
source frame it holds (for latency and for comparing against the input).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

STAMP_BITS = 12
STAMP_ROWS = 16
VIDEO_CLOCK = 90_000


def stamp(img: np.ndarray, index: int) -> np.ndarray:
    """Copy of ``img`` with ``index`` (mod 4096) as a barcode in the bottom ``STAMP_ROWS`` rows."""
    out = img.copy()
    h, w = out.shape[:2]
    bw = w // STAMP_BITS
    for b in range(STAMP_BITS):
        v = 255 if (index >> b) & 1 else 0
        out[h - STAMP_ROWS :, b * bw : (b + 1) * bw] = v
    return out


def read_stamp(img: np.ndarray) -> int:
    """The index written by ``stamp`` (reads the centre of each block). Also on a picture a sender
    halved (libwebrtc scales its pictures down on a slow link): the rows read lie in the bottom half
    of the stamp's band."""
    h, w = img.shape[:2]
    bw = w // STAMP_BITS
    g = img.mean(axis=2) if img.ndim == 3 else img
    rows = g[h - STAMP_ROWS // 2 + 2 : h - 2]
    value = 0
    for b in range(STAMP_BITS):
        block = rows[:, b * bw + bw // 4 : (b + 1) * bw - bw // 4]
        if block.mean() > 128:
            value |= 1 << b
    return value


def _luma(frame: VideoFrame) -> np.ndarray:
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        y = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return y[:, : frame.width]
    return frame.to_ndarray(format="gray")


class ClipTrack(MediaStreamTrack):
    """Plays decoded frames in a loop at ``fps`` in real time, stamping each with its index."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float, max_frames: int | None = None) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.max_frames = max_frames
        self.sent_at: dict[int, float] = {}
        self._n = 0
        self._start: float | None = None

    def source_frame(self, index: int) -> np.ndarray:
        """The exact BGR image sent as frame ``index``."""
        return stamp(self.frames[index % len(self.frames)], index)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live" or (self.max_frames is not None and self._n >= self.max_frames):
            self.stop()
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._n / self.fps
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = self._n
        self._n += 1
        frame = VideoFrame.from_ndarray(self.source_frame(n), format="bgr24")
        frame.pts = round(n * VIDEO_CLOCK / self.fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK)
        self.sent_at[n] = time.monotonic()
        return frame

    @property
    def sent(self) -> int:
        return self._n


@dataclass
class Received:
    index: int
    at: float
    image: np.ndarray | None


@dataclass
class FrameSink:
    """Reads a remote track until stopped; keeps arrival times and every ``keep_every``-th image
    from the ``keep_from``-th frame received on (the ones before: a warm-up)."""

    track: MediaStreamTrack
    keep_every: int = 0
    max_kept: int = 24  # images kept at most (a soak must not measure its own sink)
    keep_from: int = 0
    frames: list[Received] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> FrameSink:
        self.task = asyncio.get_running_loop().create_task(self._run(), name="likeness-test-sink")
        return self

    async def _run(self) -> None:
        n = kept = 0
        try:
            while True:
                f = await self.track.recv()
                now = time.monotonic()
                keep = self.keep_every and n >= self.keep_from and (n - self.keep_from) % self.keep_every == 0 \
                    and kept < self.max_kept
                if keep:
                    kept += 1
                    img = f.to_ndarray(format="bgr24")
                    self.frames.append(Received(read_stamp(img), now, img))
                else:  # the luma plane is enough for the stamp and costs nothing to convert
                    self.frames.append(Received(read_stamp(_luma(f)), now, None))
                n += 1
        except MediaStreamError:
            pass

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass

    def fps(self, since: float | None = None) -> float:
        fr = [r for r in self.frames if since is None or r.at >= since]
        if len(fr) < 2:
            return 0.0
        return (len(fr) - 1) / (fr[-1].at - fr[0].at)


def latencies_ms(sink: FrameSink, source: ClipTrack, since: float | None = None) -> list[float]:
    """Per-frame glass-to-glass latency (source recv() -> sink recv()), via the stamps."""
    out = []
    for r in sink.frames:
        if since is not None and r.at < since:
            continue
        # the stamp is the index mod 4096: pick the most recent send with that residue
        cands = [i for i in (r.index + k * (1 << STAMP_BITS) for k in range(64)) if i in source.sent_at]
        sent = [source.sent_at[i] for i in cands if source.sent_at[i] <= r.at]
        if sent:
            out.append((r.at - max(sent)) * 1e3)
    return out
