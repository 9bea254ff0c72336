"""Encode a publisher's enhanced video once, however many viewers watch it.

aiortc encodes per ``RTCRtpSender``, so N viewers of one publisher cost N video encodes of the
same frames. On a 2-core bridge those encodes, not the enhancer, were what capped a room (8
viewers: 23 fps, a third of frames enhanced, because the encoders took the cores). An SFU
sends one encoding to everybody; ``SharedEncoder`` does the same inside the bridge: one encoder
per (publisher, codec), whose bitstream every viewer's sender gets as pre-encoded ``av.Packet``
objects. aiortc then only packetizes them (each viewer keeps its own SSRC, RTP sequence,
timestamps, VP8 picture ids, NACK history).

What sharing costs, as in any SFU without simulcast: one bitrate for all viewers (the lowest
receiver estimate, REMB), and a keyframe for all whenever one viewer joins, falls behind or
reports loss (PLI/FIR). The encoder is aiortc's own (same settings, rate control and keyframe
logic); only its packetizer is skipped, so the bitstream is exactly what a per-viewer sender
would have made.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import av
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpsender import RTCRtpSender

from .codecs import ENCODERS
from .rate_control import ENCODER_ATTR, budget_retransmissions, capped_encoder_class, rate_controlled_encoder

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, 90_000)  # RTP video clock; what the encoders return timestamps in
QUEUE_FRAMES = 8  # a viewer further behind than this is resynchronised at the next keyframe
# Forced keyframes (joins, PLIs, resyncs) at most this often: each is several times a delta
# frame's size for *every* viewer, so one stalled or lossy viewer must not flood the rest.
# A request made in between is served when the interval is up.
KEYFRAME_MIN_INTERVAL_S = 0.5
ANNEX_B = b"\x00\x00\x00\x01"


def vp8_is_keyframe(frame: bytes) -> bool:
    """RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame."""
    return len(frame) > 0 and frame[0] & 0x01 == 0


def h264_is_keyframe(nals: Iterable[bytes]) -> bool:
    """An IDR slice (NAL type 5) makes an access unit decodable on its own."""
    return any(len(n) > 0 and n[0] & 0x1F == 5 for n in nals)


class _Vp8Bitstream(Vp8Encoder):
    """aiortc's VP8 encoder, returning the whole encoded frame instead of RTP payloads."""

    @classmethod
    def _packetize(cls, buffer: bytes, picture_id: int) -> list[bytes]:  # type: ignore[override]
        return [buffer] if buffer else []


class _H264Bitstream(H264Encoder):
    """aiortc's H.264 encoder, returning the access unit's NAL units instead of RTP payloads."""

    @classmethod
    def _packetize(cls, packages: Iterable[bytes]) -> list[bytes]:  # type: ignore[override]
        return list(packages)


def _join(mime: str, chunks: list[bytes]) -> tuple[bytes, bool]:
    """The encoder's output as one packet's bytes (VP8 frame, or H.264 Annex B) and whether it is a keyframe."""
    if mime == "video/vp8":
        return chunks[0], vp8_is_keyframe(chunks[0])
    return b"".join(ANNEX_B + n for n in chunks), h264_is_keyframe(chunks)


BITSTREAM_ENCODERS: dict[str, type] = {"video/vp8": _Vp8Bitstream, "video/h264": _H264Bitstream}


def shareable(mime: str | None) -> bool:
    return mime is not None and mime.lower() in BITSTREAM_ENCODERS


RAISE_STEP = 1.25  # raise the shared bitrate only by at least this factor ...
RAISE_INTERVAL_S = 2.0  # ... and at most this often; a drop of over 10 % is followed at once
DROP_STEP = 0.9


def next_bitrate(current: int, lowest: int | None, since_change_s: float) -> int:
    """The shared encoder's next target from the lowest receiver estimate.

    Why not follow every estimate: aiortc's encoders (ours too) restart, with a keyframe, on any
    bitrate change over 10 %, and REMB ramps up in ~5 % steps, so a fresh call used to get a
    keyframe every ~1.5 s for its first ~20 s, for every viewer at once. Congestion is still
    followed at once (a drop past 10 %); increases wait for a 25 % step, at most every 2 s."""
    if lowest is None:
        return current
    if lowest < current * DROP_STEP:
        return lowest
    if lowest >= current * RAISE_STEP and since_change_s >= RAISE_INTERVAL_S:
        return lowest
    return current


def lowest_estimate(estimates: Iterable[int | None]) -> int | None:
    """The shared encoder's target: the lowest receiver estimate among viewers
    that reported one (None: nobody has yet, keep the encoder's own start). The encoder clamps
    it to its floor and the operator's cap. Pure, so it is tested alone."""
    vals = [int(e) for e in estimates if e is not None]
    return min(vals) if vals else None


def _reporting_packer(base: type, report: Callable[[int], None]) -> Any:
    """A per-sender packer whose REMB updates are passed on to the shared encoder (the sender
    sets ``target_bitrate`` on its encoder when a receiver estimate arrives)."""

    class Reporting(base):  # type: ignore[misc, valid-type]
        @property
        def target_bitrate(self) -> int:
            return super().target_bitrate

        @target_bitrate.setter
        def target_bitrate(self, bitrate: int) -> None:
            report(int(bitrate))

    return Reporting()


@dataclass
class FanoutStats:
    frames_encoded: int = 0
    keyframes: int = 0
    keyframe_requests: int = 0
    bitrate: int = 0
    retransmits_denied: int = 0  # NACKed packets not resent: over a viewer's RetransmitBudget


class PacketTrack(MediaStreamTrack):
    """One viewer's copy of the shared bitstream, for its sender to packetize."""

    kind = "video"

    def __init__(self) -> None:
        super().__init__()
        self._owner: SharedEncoder | None = None  # set by SharedEncoder.subscribe
        self._queue: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue(QUEUE_FRAMES)
        self._need_key = True  # a decoder can only start at a keyframe
        # the sender starts reading once its connection is up (ICE, DTLS): until then nothing is
        # queued and no keyframe is asked for, so a viewer still connecting (or never) costs nothing
        self._started = False
        self.estimate: int | None = None  # this viewer's latest REMB, bit/s
        self.resyncs = 0  # times it fell QUEUE_FRAMES behind and was restarted at a keyframe
        self.retransmits_denied = 0  # NACKed packets over its retransmission budget

    @property
    def wants_keyframe(self) -> bool:
        return self._started and self._need_key

    def offer(self, data: bytes, timestamp: int, keyframe: bool) -> None:
        """Queue one encoded frame, if this viewer can use it (``wants_keyframe`` says when it cannot)."""
        if not self._started:
            return
        if self._queue.full():  # behind: drop its backlog, restart at a keyframe
            self._drain()
            self._need_key = True
            self.resyncs += 1
        if self._need_key and not keyframe:
            return
        self._need_key = False
        self._queue.put_nowait((data, timestamp))

    def _drain(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()

    def end(self) -> None:
        """The source ended: the next ``recv`` raises, which stops the viewer's sender."""
        self._drain()
        self._queue.put_nowait(None)

    async def recv(self) -> av.Packet:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        if not self._started:
            self._started = True
            if self._owner is not None:
                self._owner.request_keyframe()  # this viewer's decoder starts there
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        packet = av.Packet(item[0])
        packet.pts = item[1]
        packet.time_base = VIDEO_TIME_BASE
        return packet

    def stop(self) -> None:
        super().stop()
        if self._owner is not None:
            self._owner.unsubscribe(self)


class SharedEncoder:
    """One encoder for one publisher's video in one codec, feeding any number of viewers.

    Runs only while someone watches: the first subscriber starts the encode loop, the last one
    leaving stops it and the relay subscription it reads from (``on_idle`` lets the bridge
    forget it)."""

    def __init__(self, source: MediaStreamTrack, mime: str, cap: int | None = None,
                 on_idle: Callable[[SharedEncoder], None] | None = None) -> None:
        mime = mime.lower()
        if mime not in BITSTREAM_ENCODERS:
            raise ValueError(f"no shared encoder for {mime}")
        self.source = source
        self.mime = mime
        self.subscribers: list[PacketTrack] = []
        # the same start, ceiling and floor as a per-viewer sender's encoder (rate_control.py)
        self._encoder = rate_controlled_encoder(mime, cap, capped_encoder_class(BITSTREAM_ENCODERS[mime]))
        self.stats = FanoutStats(bitrate=self._encoder.target_bitrate)
        self._force_keyframe = False
        self._last_forced = -float("inf")  # loop time of the last forced keyframe
        self._last_rate_change = -float("inf")  # loop time the target bitrate last changed
        self._on_idle = on_idle
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # ------------------------------------------------------------ viewers

    def subscribe(self, track: PacketTrack, sender: RTCRtpSender | None) -> None:
        """Feed ``track``, the track of ``sender`` (negotiated in this codec), the shared bitstream.

        Hooks the sender so its keyframe requests (PLI/FIR from its viewer) and its receiver
        estimates (REMB) reach this encoder (no sender: no hooks). A track stopped before this is
        left alone. The track asks for its first keyframe when its sender starts reading."""
        if self._closed:
            raise RuntimeError("shared encoder closed")
        if track.readyState != "live":
            return
        track._owner = self

        def report(bitrate: int) -> None:
            track.estimate = bitrate

        if sender is not None:
            setattr(sender, ENCODER_ATTR, _reporting_packer(ENCODERS[self.mime], report))
            original = sender._send_keyframe

            def send_keyframe() -> None:
                original()
                self.request_keyframe()

            sender._send_keyframe = send_keyframe  # type: ignore[method-assign]
            budget_retransmissions(sender, lambda: self._encoder.target_bitrate, lambda: self._denied(track))
        self.subscribers.append(track)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"likeness-encode-{self.mime}")

    def _denied(self, track: PacketTrack) -> None:
        track.retransmits_denied += 1
        self.stats.retransmits_denied += 1

    def unsubscribe(self, track: PacketTrack) -> None:
        if track in self.subscribers:
            self.subscribers.remove(track)
        if not self.subscribers:
            self.close()

    def request_keyframe(self) -> None:
        self.stats.keyframe_requests += 1
        self._force_keyframe = True

    # ------------------------------------------------------------ encoding

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.subscribers:
                frame = await self.source.recv()
                if not self.subscribers:
                    break
                current = self._encoder.target_bitrate
                target = next_bitrate(current, lowest_estimate(s.estimate for s in self.subscribers),
                                      loop.time() - self._last_rate_change)
                if target != current:
                    self._encoder.target_bitrate = target
                    if self._encoder.target_bitrate != current:  # not clamped back to where it was
                        self._last_rate_change = loop.time()
                self.stats.bitrate = self._encoder.target_bitrate
                force = self._force_keyframe and loop.time() - self._last_forced >= KEYFRAME_MIN_INTERVAL_S
                if force:
                    self._force_keyframe, self._last_forced = False, loop.time()
                chunks, timestamp = await loop.run_in_executor(None, self._encoder.encode, frame, force)
                if not chunks:
                    continue
                data, key = _join(self.mime, chunks)
                self.stats.frames_encoded += 1
                self.stats.keyframes += key
                for sub in list(self.subscribers):
                    sub.offer(data, timestamp, key)
                if key:  # any keyframe answers every request so far (joins, PLIs, resyncs)
                    self._force_keyframe = False
                if any(sub.wants_keyframe for sub in self.subscribers):
                    self._force_keyframe = True
        except MediaStreamError:
            pass  # the publisher left
        except Exception:  # an encoder fault must not leave viewers hanging silently
            log.exception("shared %s encoder failed; ending its viewers' streams", self.mime)
        finally:
            self._end_all()

    def _end_all(self) -> None:
        for sub in list(self.subscribers):
            sub.end()
        self.close()

    def close(self) -> None:
        """Stop encoding and release the source; idempotent."""
        if self._closed:
            return
        self._closed = True
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.source.stop()
        if self._on_idle is not None:
            self._on_idle(self)

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        """For shutdown: let a cancelled encode loop finish unwinding."""
        task = self._task
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task
