"""Rate control for every sender the bridge or ``likeness call`` owns: bitrate floor, start and cap, resend budget.

Per sender, never process-wide: each measure wraps one sender's (or encoder's) own hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpSender
from aiortc.codecs import h264, vpx
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTP_HISTORY_SIZE, RtcpRrPacket, RtcpSrPacket

from .codecs import ENCODERS, private_frame

# The encoders' own bounds; aiortc clamps REMB-driven targets to these.
BITRATE_RANGE = (100_000, 20_000_000)

# Measured with Chromium behind a shaped link (benchmarks/poor_link.py): aiortc's senders, left
# as they are, froze a 640x480 call on a 300 kbit/s link (0.1 fps, 34 % loss, ~1.3 s of jitter
# buffer) although the viewer's estimate (REMB) was under the link. Two measures for every
# sender the bridge or ``likeness call`` owns:
# * aiortc's VP8 floor is 250 kbit/s (H.264: 500): a slower link can only congest. Ours is
#   ``BITRATE_RANGE[0]``, 100 kbit/s.
# * aiortc answers every NACK. On a congested link the answers keep it congested: the queue drops
#   packets, the receiver NACKs them, the retransmissions fill the queue again (without the
#   budget, 11-23 % loss and 6-17 s frozen in 15 s at 200-300 kbit/s in 3 of 4 runs). Resends get
#   a budget of RETRANSMIT_SHARE of the bitrate; past it, a receiver recovers by a keyframe.
# Encoding at 0.85 of the estimate as well measured no different and cost 15 % of the bitrate
# on every link, so the encoder follows the estimate itself.
# * A queue that stays full has no delay trend, so a delay-based estimate (REMB) does not fall
#   while the link drops packets (measured: 130 kbit/s sent into a 150 kbit/s link, its queue full
#   from the warm-up on, ~2 drops a second). Senders also back off on the loss receivers report
#   (GCC's loss-based controller): ``LossCeiling``.

# GCC's loss-based controller (draft-ietf-rmcat-gcc-02, section 6): the reported fraction lost
# over which the ceiling falls, under which it rises, and the rise per report
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_RISE = 1.05

RETRANSMIT_SHARE = 0.15
RETRANSMIT_BURST_S = 0.5
ENCODER_ATTR = "_RTCRtpSender__encoder"  # aiortc creates it lazily; we install ours before media flows
RTP_HISTORY_ATTR = "_RTCRtpSender__rtp_history"
# Start and ceiling per codec (bit/s) for a sender with no operator cap: aiortc's, except that
# VP8 starts at 300 kbit/s (libwebrtc's start) instead of 500: before the first estimate arrives
# a 500 kbit/s start overfills a slow link's queue, which cost a 200-300 kbit/s viewer 2-6 s of
# frozen picture in its first 6 s (0-2.4 s from 300); on fast links the estimate takes the
# encoder up within seconds. H.264 keeps aiortc's 1 Mbit/s start (not measured on slow links).
VP8_START = 300_000
DEFAULT_BITRATES: dict[str, tuple[int, int]] = {"video/vp8": (VP8_START, vpx.MAX_BITRATE),
                                                 "video/h264": (h264.DEFAULT_BITRATE, h264.MAX_BITRATE)}


class RetransmitBudget:
    """A token bucket of bytes refilled at ``share`` x the current bitrate. Pure (the caller
    passes the clock and the bitrate), so it is tested alone."""

    def __init__(self, share: float, burst_s: float) -> None:
        self.share = share
        self.burst_s = burst_s
        self.tokens: float | None = None  # bytes; None until the first call (starts full)
        self.last = 0.0
        self.denied = 0

    def allow(self, size: int, now: float, bitrate: int) -> bool:
        rate = self.share * bitrate / 8  # bytes per second
        depth = rate * self.burst_s
        if self.tokens is None:
            self.tokens = depth
        else:
            self.tokens = min(depth, self.tokens + rate * max(0.0, now - self.last))
        self.last = now
        if size <= self.tokens:
            self.tokens -= size
            return True
        self.denied += 1
        return False


class LossCeiling:
    """A bitrate ceiling from the loss a receiver reports: times (1 - loss / 2) over ``LOSS_HIGH``,
    times ``LOSS_RISE`` under ``LOSS_LOW``, held between, kept within ``floor``-``cap``. Pure."""

    def __init__(self, start: int, floor: int, cap: int) -> None:
        self.floor, self.cap = floor, cap
        self.bitrate = float(max(floor, min(start, cap)))

    def report(self, fraction_lost: int) -> int:
        """One receiver report's fraction lost (RTCP's 0-255 scale): the new ceiling, bit/s."""
        loss = fraction_lost / 256
        if loss > LOSS_HIGH:
            self.bitrate *= 1 - 0.5 * loss
        elif loss < LOSS_LOW:
            self.bitrate *= LOSS_RISE
        self.bitrate = max(self.floor, min(self.bitrate, self.cap))
        return int(self.bitrate)


def budget_retransmissions(sender: RTCRtpSender, bitrate: Callable[[], int],
                           on_denied: Callable[[], None] | None = None) -> RetransmitBudget:
    """Answer ``sender``'s NACKs only within a ``RetransmitBudget`` of ``bitrate()`` (its
    encoder's current target). Per sender, by wrapping its instance's retransmit hook."""
    budget = RetransmitBudget(RETRANSMIT_SHARE, RETRANSMIT_BURST_S)
    original = sender._retransmit
    history = getattr(sender, RTP_HISTORY_ATTR, None)

    async def retransmit(sequence_number: int) -> None:
        packet = history.get(sequence_number % RTP_HISTORY_SIZE) if history is not None else None
        size = len(packet.payload) + 12 if packet is not None else 0
        if budget.allow(size, time.monotonic(), bitrate()):
            await original(sequence_number)
        elif on_denied is not None:
            on_denied()

    sender._retransmit = retransmit  # type: ignore[method-assign]
    return budget


def capped_encoder_class(base: type) -> type:
    """An aiortc encoder class whose target bitrate starts at, and never exceeds, a cap.

    aiortc encoders start at a fixed default and follow the receiver's REMB estimate within
    built-in bounds; the bridge wants the operator's bitrate as the ceiling and start point.
    The floor is ``BITRATE_RANGE[0]``, below aiortc's own (see above). ``start`` (default: the
    cap) lets the target begin lower than the ceiling.
    """
    owner = next(c for c in base.__mro__ if "target_bitrate" in vars(c))  # aiortc's class, for subclasses too
    mangled = f"_{owner.__name__.lstrip('_')}__target_bitrate"

    class Capped(base):  # type: ignore[misc, valid-type]
        def __init__(self, cap: int, start: int | None = None) -> None:
            super().__init__()
            self._cap = int(cap)
            self._estimate = self._bound(start if start is not None else cap)  # the receiver's, or the start
            self._loss_ceiling: int | None = None  # ``LossCeiling``'s, once reports come
            setattr(self, mangled, self._estimate)

        def encode(self, frame: Any, force_keyframe: bool = False) -> Any:
            return super().encode(private_frame(frame), force_keyframe)

        def _bound(self, bitrate: float) -> int:
            return max(BITRATE_RANGE[0], min(int(bitrate), self._cap))

        def _apply(self) -> None:
            ceiling = self._loss_ceiling if self._loss_ceiling is not None else self._cap
            setattr(self, mangled, self._bound(min(self._estimate, ceiling)))

        @property
        def target_bitrate(self) -> int:
            return getattr(self, mangled)

        @target_bitrate.setter
        def target_bitrate(self, bitrate: int) -> None:
            self._estimate = self._bound(bitrate)
            self._apply()

        @property
        def loss_ceiling(self) -> int | None:
            return self._loss_ceiling

        @loss_ceiling.setter
        def loss_ceiling(self, bitrate: int | None) -> None:
            self._loss_ceiling = bitrate
            self._apply()

    Capped.__name__ = f"Capped{base.__name__}"
    return Capped


def clamp_bitrate(bitrate: int) -> int:
    """An operator's bitrate ceiling brought into the range the encoders accept."""
    return max(BITRATE_RANGE[0], min(int(bitrate), BITRATE_RANGE[1]))


_CAPPED = {mime: capped_encoder_class(base) for mime, base in ENCODERS.items()}


def rate_controlled_encoder(mime: str, cap: int | None, capped: type | None = None) -> Any:
    """An encoder for ``mime`` (``capped``: a ``capped_encoder_class``, default aiortc's own
    encoder's) starting at ``cap`` and never above it, or without a cap at
    ``DEFAULT_BITRATES``' start and ceiling; one rule for a sender's encoder and a shared one."""
    start, ceiling = DEFAULT_BITRATES[mime]
    cls = capped if capped is not None else _CAPPED[mime]
    return cls(clamp_bitrate(cap), None) if cap else cls(ceiling, start)


def control_sender_rate(sender: RTCRtpSender, cap: int | None) -> None:
    """Give ``sender`` (VP8/H.264) the congestion measures above: an encoder that starts at
    ``cap`` (none: ``DEFAULT_BITRATES``), never exceeds it (none: aiortc's ceiling) and follows the
    receiver's estimate down to our floor; and a retransmission budget.

    aiortc creates the encoder lazily on the first frame with no parameters; we wrap the
    sender's per-instance frame hook to install ours instead. Per sender, no global state.
    """
    original = sender._next_encoded_frame

    async def next_encoded_frame(codec: RTCRtpCodecParameters):  # type: ignore[no-untyped-def]
        mime = codec.mimeType.lower()
        if getattr(sender, ENCODER_ATTR, None) is None and mime in _CAPPED:
            setattr(sender, ENCODER_ATTR, rate_controlled_encoder(mime, cap))
        return await original(codec)

    def bitrate() -> int:
        enc = getattr(sender, ENCODER_ATTR, None)
        return int(getattr(enc, "target_bitrate", 0) or (clamp_bitrate(cap) if cap else BITRATE_RANGE[0]))

    sender._next_encoded_frame = next_encoded_frame  # type: ignore[method-assign]
    budget_retransmissions(sender, bitrate)
    back_off_on_loss(sender)


def back_off_on_loss(sender: RTCRtpSender) -> None:
    """Hold ``sender``'s encoder (ours, from ``control_sender_rate``) under a ``LossCeiling`` fed by
    the receiver reports for its stream. Per sender, by wrapping its instance's RTCP hook."""
    original = sender._handle_rtcp_packet
    ceiling: list[LossCeiling] = []  # made on the first report, from the encoder's target then

    async def handle_rtcp_packet(packet: Any) -> None:
        await original(packet)
        if not isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            return
        enc = getattr(sender, ENCODER_ATTR, None)
        if not hasattr(enc, "loss_ceiling"):
            return  # no encoder yet, or not one of ours
        for report in packet.reports:
            if report.ssrc == sender._ssrc:
                if not ceiling:
                    ceiling.append(LossCeiling(enc.target_bitrate, BITRATE_RANGE[0], enc._cap))
                enc.loss_ceiling = ceiling[0].report(report.fraction_lost)

    sender._handle_rtcp_packet = handle_rtcp_packet  # type: ignore[method-assign]
