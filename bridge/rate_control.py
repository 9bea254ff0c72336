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
from aiortc.rtp import RTP_HISTORY_SIZE

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
            setattr(self, mangled, self._bound(start if start is not None else cap))

        def encode(self, frame: Any, force_keyframe: bool = False) -> Any:
            return super().encode(private_frame(frame), force_keyframe)

        def _bound(self, bitrate: float) -> int:
            return max(BITRATE_RANGE[0], min(int(bitrate), self._cap))

        @property
        def target_bitrate(self) -> int:
            return getattr(self, mangled)

        @target_bitrate.setter
        def target_bitrate(self, bitrate: int) -> None:
            setattr(self, mangled, self._bound(bitrate))

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
