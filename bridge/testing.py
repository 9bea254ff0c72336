"""Real-media helpers for bridge tests and benchmarks: a paced clip track, frame stamps, a sink.

Frames carry their index as a 12-bit black/white barcode in the bottom rows, big enough
to survive VP8/H.264 at low bitrates, so a receiver two hops away knows exactly which
source frame it holds (for latency and for comparing against the input).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import aiohttp
import aioice.ice
import av
import cv2
import numpy as np
import psutil
from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from enhancer.pipeline import BicubicEngine, FramePipeline

from .client import Resource, delete, negotiate
from .jitter import release_frames_on_marker
from .rtc import (
    control_sender_rate,
    disable_loopback_candidates,
    enable_loopback_candidates,
    is_loopback_host,
    prefer_codec,
    rtc_configuration,
)
from .server import BRIDGE_KEY, Bridge, BridgeConfig, create_app
from .track import ProcessorFactory

REPO = Path(__file__).resolve().parents[1]
STAMP_BITS = 12
STAMP_ROWS = 16
VIDEO_CLOCK = 90_000


def videos_dir() -> Path:
    """Real clips: $LIKENESS_VIDEOS, else $LIKENESS_DATA/videos, else ../shared/data/videos beside the repo (CI)."""
    if os.environ.get("LIKENESS_VIDEOS"):
        return Path(os.environ["LIKENESS_VIDEOS"])
    if os.environ.get("LIKENESS_DATA"):
        return Path(os.environ["LIKENESS_DATA"]) / "videos"
    return REPO.parent / "shared" / "data" / "videos"


def letterbox(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` scaled into a black (w, h) canvas, aspect kept (faces are not distorted)."""
    w, h = size
    canvas = np.zeros((h, w, 3), np.uint8)
    s = min(w / img.shape[1], h / img.shape[0])
    nw, nh = round(img.shape[1] * s), round(img.shape[0] * s)
    x, y = (w - nw) // 2, (h - nh) // 2
    canvas[y:y + nh, x:x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return canvas


def load_clip(path: str | Path, max_frames: int, size: tuple[int, int] | None = None) -> tuple[list[np.ndarray], float]:
    """Decode up to ``max_frames`` BGR frames (letterboxed to ``size`` = (w, h) if given) and the clip fps."""
    frames = []
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        fps = float(stream.average_rate or 30)
        for f in c.decode(stream):
            img = f.to_ndarray(format="bgr24")
            if size is not None and (img.shape[1], img.shape[0]) != size:
                img = letterbox(img, size)
            frames.append(img)
            if len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return frames, fps


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
    """The index written by ``stamp`` (reads the centre of each block)."""
    h, w = img.shape[:2]
    bw = w // STAMP_BITS
    g = img.mean(axis=2) if img.ndim == 3 else img
    rows = g[h - STAMP_ROWS + 4 : h - 4]
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
    """Reads a remote track until stopped; keeps arrival times and every ``keep_every``-th image."""

    track: MediaStreamTrack
    keep_every: int = 0
    max_kept: int = 24  # images kept at most (a soak must not measure its own sink)
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
                keep = self.keep_every and n % self.keep_every == 0 and kept < self.max_kept
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


# ------------------------------------------------------------------------ bridge harness


@asynccontextmanager
async def serve_bridge(config: BridgeConfig, factory: ProcessorFactory) -> AsyncIterator[tuple[str, Bridge]]:
    """Run a bridge on ``config.host`` (free port with port 0) for the duration of the block;
    yields (base URL, Bridge).

    On a loopback host media stays on loopback: every ICE agent in the process gathers 127.0.0.1
    only. On another address (e.g. a ``netlab.ShapedLink``'s ``host_ip``) ICE gathers as aioice
    does by itself, so a peer behind that link pairs over it.
    """
    loopback = is_loopback_host(config.host)
    if config.loopback_ice is None:
        config = dataclasses.replace(config, loopback_ice="only" if loopback else "off")
    app = create_app(config, factory)
    runner = web.AppRunner(app, handle_signals=False)
    previous = aioice.ice.get_host_addresses
    if loopback:
        enable_loopback_candidates(only=True)
    else:  # whatever an earlier bridge in this process set up: gather the real interfaces
        disable_loopback_candidates()
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://{config.host}:{port}", app[BRIDGE_KEY]
    finally:
        await runner.cleanup()
        aioice.ice.get_host_addresses = previous  # leave the process as we found it


@dataclass
class Peer:
    """An aiortc peer with its WHIP/WHEP resource and, for viewers, one sink per received track."""

    pc: RTCPeerConnection
    resource: Resource
    sinks: list[FrameSink] = field(default_factory=list)

    async def leave(self, http: aiohttp.ClientSession, token: str | None = None) -> int:
        status = await delete(http, self.resource, token)
        for s in self.sinks:
            await s.stop()
        await self.pc.close()
        return status


async def publish(
    http: aiohttp.ClientSession, url: str, track: MediaStreamTrack, token: str | None = None,
    codec: str | None = None, bitrate: int | None = None,
) -> Peer:
    """Send ``track`` to a WHIP endpoint."""
    pc = RTCPeerConnection(rtc_configuration())
    t = pc.addTransceiver(track, direction="sendonly")
    prefer_codec(t, codec)
    control_sender_rate(t.sender, bitrate)
    try:
        return Peer(pc, await negotiate(http, url, pc, token))
    except BaseException:
        await pc.close()
        raise


async def view(
    http: aiohttp.ClientSession, url: str, videos: int = 1, token: str | None = None, keep_every: int = 0,
    release_on_marker: bool = False, codec: str | None = None,
) -> Peer:
    """Receive a room from a WHEP endpoint with ``videos`` recvonly video m-lines; with
    ``release_on_marker`` this viewer decodes a frame on its last packet, as browsers do (aiortc's
    own rule, the default, waits for the next frame's first packet)."""
    pc = RTCPeerConnection(rtc_configuration())
    for _ in range(videos):
        t = pc.addTransceiver("video", direction="recvonly")
        prefer_codec(t, codec)
        if release_on_marker:
            release_frames_on_marker(t.receiver)
    sinks: list[FrameSink] = []

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        sinks.append(FrameSink(track, keep_every=keep_every).start())

    try:
        return Peer(pc, await negotiate(http, url, pc, token), sinks)
    except BaseException:
        await pc.close()
        raise


async def wait_until(cond, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    """Poll ``cond()`` every 50 ms; AssertionError naming ``what`` if it is still false after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class RtpLoss:
    """Counts of what ``drop_incoming_rtp`` let through and dropped."""

    passed: int = 0
    dropped: int = 0


def drop_incoming_rtp(pc: RTCPeerConnection, rate: float, seed: int = 0) -> RtpLoss:
    """Drop a seeded share ``rate`` of the RTP packets ``pc`` receives (RTCP untouched), as a
    lossy link would: they vanish after arrival, so NACKs, retransmissions and PLIs run for real.

    Wraps each of the connection's DTLS transports on the instance; call once the transports
    exist (after negotiation). In-process, so a test needs no network namespace or netem."""
    rng = np.random.default_rng(seed)
    loss = RtpLoss()
    for transport in {r.transport for r in pc.getReceivers() if r.transport is not None}:
        handle = transport._handle_rtp_data

        async def lossy(data: bytes, arrival_time_ms: int, handle=handle) -> None:  # type: ignore[no-untyped-def]
            if rng.random() < rate:
                loss.dropped += 1
                return
            loss.passed += 1
            await handle(data, arrival_time_ms)

        transport._handle_rtp_data = lossy  # type: ignore[method-assign]
    return loss


# ------------------------------------------------------------------ checks used by tests


def face_box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """A box around the face from 5 landmarks (eye distance based), clipped to the frame."""
    c = landmarks.mean(0)
    ed = float(np.linalg.norm(landmarks[[0, 1]].mean(0) - landmarks[[2, 3]].mean(0)))
    h, w = shape[:2]
    x0, x1 = int(max(0, c[0] - 1.3 * ed)), int(min(w, c[0] + 1.3 * ed))
    y0, y1 = int(max(0, c[1] - 1.4 * ed)), int(min(h - 20, c[1] + 1.6 * ed))
    return slice(y0, y1), slice(x0, x1)


def enhancement_correlation(received: np.ndarray, raw: np.ndarray) -> float | None:
    """Correlation, inside the face, between (received - raw) and (enhanced raw - raw).

    Positive when the received frame carries the enhancer's change; around zero or
    negative (codec blur is the opposite of sharpening) for a passthrough frame.
    """
    res = FramePipeline(BicubicEngine()).process(raw, 0.0)
    if not res.enhanced:
        return None
    ys, xs = face_box(res.landmarks[0], raw.shape)
    d = res.frame[ys, xs].astype(np.float32) - raw[ys, xs]
    r = received[ys, xs].astype(np.float32) - raw[ys, xs]
    d -= d.mean()
    r -= r.mean()
    den = float(np.sqrt((d * d).sum() * (r * r).sum()))
    return float((d * r).sum() / den) if den > 0 else None


def http_client() -> aiohttp.ClientSession:
    """HTTP client without keep-alive, so its idle connections do not look like leaked server tasks."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))


def snapshot() -> tuple[set[asyncio.Task], set[threading.Thread]]:
    return set(asyncio.all_tasks()), set(threading.enumerate())


async def assert_no_leaks(before: tuple[set[asyncio.Task], set[threading.Thread]], timeout: float = 8.0) -> None:
    """Every task and thread started since ``before`` is gone (asyncio's shared executor threads excepted)."""
    tasks0, threads0 = before
    end = time.monotonic() + timeout
    while True:
        tasks = {t for t in asyncio.all_tasks() - tasks0 if t is not asyncio.current_task() and not t.done()}
        threads = {t for t in set(threading.enumerate()) - threads0
                   if t.is_alive() and not t.name.startswith("asyncio_")}
        if not tasks and not threads:
            return
        if time.monotonic() > end:
            names = sorted(t.get_name() + ":" + repr(t.get_coro())[:80] for t in tasks)
            raise AssertionError(f"leaked tasks {names} threads {sorted(t.name for t in threads)}")
        await asyncio.sleep(0.1)


def write_y4m(frames: list[np.ndarray], path: str | Path, fps: float, size: tuple[int, int] | None = None) -> Path:
    """Write BGR frames as a Y4M (I420) file, e.g. for Chromium's --use-file-for-fake-video-capture.

    With ``size`` = (w, h) each frame is letterboxed into that size (aspect kept).
    """
    path = Path(path)
    h0, w0 = frames[0].shape[:2]
    w, h = size or (w0 - w0 % 2, h0 - h0 % 2)
    num, den = Fraction(fps).limit_denominator(1001).as_integer_ratio()
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{num}:{den} Ip A1:1 C420jpeg\n".encode())
        for img in frames:
            canvas = letterbox(img, (w, h))
            yuv = VideoFrame.from_ndarray(canvas, format="bgr24").reformat(format="yuv420p").to_ndarray()
            f.write(b"FRAME\n")
            f.write(np.ascontiguousarray(yuv).tobytes())
    return path


class CpuWatch:
    """How much CPU *other* processes used while a timing test ran.

    Real-time assertions (fps, enhanced share) only mean something on a machine that is not
    busy with someone else's work: CI runs alone, a shared development machine may not.
    ``busy`` says the measurement was starved, so a test can fall back to a weaker bound
    and say why, instead of failing on another process's load.
    """

    def __init__(self, busy_cores: float = 0.5) -> None:
        self.busy_cores = busy_cores
        self.others_cores = 0.0
        self._t0 = 0.0
        self._sys0 = 0.0
        self._own0 = 0.0

    @staticmethod
    def _system_busy() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    @staticmethod
    def _own() -> float:
        p = psutil.Process()
        total = sum(p.cpu_times()[:4])  # user, system, children_user, children_system
        for c in p.children(recursive=True):
            try:
                total += sum(c.cpu_times()[:2])
            except psutil.Error:
                pass
        return total

    def start(self) -> CpuWatch:
        self._t0, self._sys0, self._own0 = time.monotonic(), self._system_busy(), self._own()
        return self

    def stop(self) -> CpuWatch:
        dt = max(time.monotonic() - self._t0, 1e-6)
        others = (self._system_busy() - self._sys0) - (self._own() - self._own0)
        self.others_cores = max(0.0, others / dt)
        return self

    @property
    def busy(self) -> bool:
        return self.others_cores > self.busy_cores

    def note(self) -> str:
        return f"other processes used {self.others_cores:.2f} cores during the measurement" + (
            " (machine busy: real-time bounds relaxed)" if self.busy else "")
