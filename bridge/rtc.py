"""WebRTC plumbing shared by the server and `likeness call`: ICE config, loopback, codecs, bitrate, SDP checks.

Everything here is per-connection except ``enable_loopback_candidates``, the one documented,
opt-in process-wide patch (aioice has no per-connection hook for host addresses).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aioice.ice
import av
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs import h264, vpx
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTP_HISTORY_SIZE
from aiortc.sdp import SessionDescription

log = logging.getLogger(__name__)

CODECS = {"vp8": "video/VP8", "h264": "video/H264"}
MAX_SDP_BYTES = 64 * 1024
# The encoders' own bounds; aiortc clamps REMB-driven targets to these.
BITRATE_RANGE = (100_000, 20_000_000)

_ORIGINAL_GET_HOST_ADDRESSES: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


class SdpError(ValueError):
    """An SDP offer the bridge cannot use; the message is fit for an HTTP 400 body."""


# ---------------------------------------------------------------------------------------- ICE


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (what a local-only bind looks like)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _loopback_only(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return ["127.0.0.1"] if use_ipv4 else []


def _with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    extra = ["127.0.0.1"] if use_ipv4 else []
    return extra + [a for a in _ORIGINAL_GET_HOST_ADDRESSES(use_ipv4, use_ipv6) if a not in extra]


def enable_loopback_candidates(only: bool = True) -> None:
    """Make every ICE agent in this process gather 127.0.0.1 as a host candidate.

    Why: aioice's ``get_host_addresses`` skips 127.0.0.1 and has no per-connection option,
    so peers on one machine with no other interface (CI, sandboxes) could not connect, and
    tests would pair over the machine's external interface. This swaps that one function:

    * ``only=True``: 127.0.0.1 is the only host candidate, so media never leaves loopback
      (``serve`` on a loopback host, tests, benchmarks);
    * ``only=False``: 127.0.0.1 is added to the usual addresses (``call`` to a local URL, or
      ``serve --loopback-ice add``): a peer that offers loopback candidates pairs over
      127.0.0.1, another one over the machine's own LAN address.

    Process-wide and opt-in; ``only=False`` never widens an earlier ``only=True``.
    ``disable_loopback_candidates`` undoes it.
    """
    if not only and aioice.ice.get_host_addresses is _loopback_only:
        return
    aioice.ice.get_host_addresses = _loopback_only if only else _with_loopback


def disable_loopback_candidates() -> None:
    """Restore aioice's own host-address gathering."""
    aioice.ice.get_host_addresses = _ORIGINAL_GET_HOST_ADDRESSES


@contextlib.contextmanager
def loopback_candidates(mode: str) -> Iterator[None]:
    """For the block, every ICE agent in the process gathers host candidates as ``mode`` says:
    'only' 127.0.0.1, 'add' 127.0.0.1 and the machine's addresses, 'off' aioice's own (the
    machine's addresses, no loopback). Exactly that, whatever was set before; restored after."""
    gather = {"only": _loopback_only, "add": _with_loopback, "off": _ORIGINAL_GET_HOST_ADDRESSES}[mode]
    previous = aioice.ice.get_host_addresses
    aioice.ice.get_host_addresses = gather
    try:
        yield
    finally:
        aioice.ice.get_host_addresses = previous


def loopback_mode() -> str | None:
    """'only', 'added' or None: what ``enable_loopback_candidates`` set up."""
    f = aioice.ice.get_host_addresses
    return "only" if f is _loopback_only else "added" if f is _with_loopback else None


def ice_server(url: str) -> RTCIceServer:
    """RTCIceServer from 'stun:host:port' or 'turn:user:pass@host:port[?transport=udp]'."""
    parts = urlsplit(url)
    if parts.scheme not in ("stun", "stuns", "turn", "turns"):
        raise ValueError(f"ICE server URL must start with stun:, stuns:, turn: or turns:, got {url!r}")
    rest = url.split(":", 1)[1]
    if "@" in rest:
        cred, host = rest.rsplit("@", 1)
        user, _, password = cred.partition(":")
        return RTCIceServer(urls=f"{parts.scheme}:{host}", username=unquote(user), credential=unquote(password))
    return RTCIceServer(urls=url)


def rtc_configuration(ice_servers: list[str] | None = None) -> RTCConfiguration:
    """No STUN/TURN unless asked: aiortc's default would contact a public Google STUN server."""
    return RTCConfiguration(iceServers=[ice_server(u) for u in (ice_servers or [])])


_CANDIDATE_RE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", re.IGNORECASE)


def keep_loopback_candidates(sdp: str) -> str:
    """Drop remote ICE candidates that are not on 127.0.0.0/8 or ::1.

    Used when the bridge only gathers loopback: pairs towards a peer's other interfaces
    could never succeed and only slow connectivity checks down.
    """
    out = []
    for line in sdp.splitlines():
        m = _CANDIDATE_RE.match(line)
        if m and not is_loopback_host(m.group(1)):
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


# ---------------------------------------------------------------------------------------- SDP


@dataclass(frozen=True)
class OfferInfo:
    """What the bridge needs to know about an offer before handing it to aiortc."""

    kinds: list[str]  # m-line kinds in order ("audio", "video", other)
    directions: list[str | None]

    @property
    def video_count(self) -> int:
        return self.kinds.count("video")


MAX_LOGGED_SDP = 8000


def redact_sdp(sdp: str) -> str:
    """The SDP with its ICE password and DTLS fingerprints blanked, fit for a log."""
    out = []
    for line in sdp.splitlines():
        if line.startswith(("a=ice-pwd:", "a=fingerprint:")):
            line = line.split(":", 1)[0] + ":<redacted>"
        out.append(line)
    return "\n".join(out)


def check_offer(sdp: str) -> OfferInfo:
    """Validate an SDP offer enough that aiortc will not fail on it with an internal error."""
    if not sdp or not sdp.strip():
        raise SdpError("empty SDP body")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise SdpError(f"SDP larger than {MAX_SDP_BYTES} bytes")
    if not sdp.lstrip().startswith("v=0"):
        raise SdpError("malformed SDP: must start with 'v=0'")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as e:  # aiortc's parser raises assorted errors (AssertionError, ValueError...)
        # Logged whole (credentials redacted): a real browser's offer failing here once in many
        # runs (IndexError, Chromium, 2026-11-28) could not be reproduced, so keep the evidence.
        log.warning("unparseable SDP offer (%s: %s):\n%s", type(e).__name__, e, redact_sdp(sdp)[:MAX_LOGGED_SDP])
        raise SdpError(f"malformed SDP: {type(e).__name__} {e}".strip()) from None
    kinds = [m.kind for m in desc.media]
    if "video" not in kinds:
        raise SdpError("SDP offer has no video m-line")
    for m in desc.media:
        if m.kind in ("audio", "video"):
            if not m.ice.usernameFragment or not m.ice.password:
                raise SdpError(f"SDP {m.kind} m-line has no ICE credentials (a=ice-ufrag/a=ice-pwd)")
            if not m.dtls or not m.dtls.fingerprints:
                raise SdpError(f"SDP {m.kind} m-line has no DTLS fingerprint")
            if not m.rtp.codecs:
                raise SdpError(f"SDP {m.kind} m-line lists no codecs")
    return OfferInfo(kinds, [m.direction for m in desc.media])


# ----------------------------------------------------------------------------- codecs, bitrate


def prefer_codec(transceiver: RTCRtpTransceiver, codec: str | None) -> None:
    """Put ``codec`` (vp8|h264) first in the transceiver's preferences, keeping the others as fallback.

    Must be called on a transceiver created before ``setRemoteDescription`` so aiortc
    negotiates with it.
    """
    if not codec or transceiver.kind != "video":
        return
    mime = CODECS[codec].lower()
    caps = RTCRtpSender.getCapabilities("video").codecs
    first = [c for c in caps if c.mimeType.lower() == mime]
    rest = [c for c in caps if c.mimeType.lower() != mime]
    transceiver.setCodecPreferences(first + rest)


# ----------------------------------------------------------------------------- congestion
#
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


def _copy_plane(src: Any, dst: Any) -> None:
    rows, width = dst.height, dst.width
    s = np.frombuffer(src, np.uint8)[: rows * src.line_size].reshape(rows, src.line_size)
    d = np.frombuffer(dst, np.uint8)[: rows * dst.line_size].reshape(rows, dst.line_size)
    d[:, :width] = s[:, :width]


def private_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """``frame`` as yuv420p in a frame object nobody else holds (pixels copied when it already is).

    Why: PyAV's encode rebases the frame's pts to the codec's time base *in place* (VP8
    1/1,000,000, H.264 1/30) and aiortc marks forced keyframes on it, while a relayed frame is
    one object for every encoder of that publisher, each on its own executor thread. A VP8
    encode that read a pts the H.264 thread had just rebased to 1/30 failed with 'Invalid data
    found when processing input' (libvpx: pts below the first), which ended every viewer's
    stream; short of that, the two codecs' timestamps jittered each other. Cost: one memcpy of
    the frame (median 0.08 ms at 640x480, 0.12 ms at 720p), nothing when the frame needs converting anyway."""
    if frame.format.name != "yuv420p":
        return frame.reformat(format="yuv420p")  # a new frame, pts and time base copied
    own = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for src, dst in zip(frame.planes, own.planes, strict=True):
        _copy_plane(src, dst)
    own.pts = frame.pts
    if frame.time_base is not None:
        own.time_base = frame.time_base
    return own


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


# aiortc's encoder per codec: what a sender encodes with (and, in fanout.py, packetizes with)
ENCODERS: dict[str, type] = {"video/vp8": Vp8Encoder, "video/h264": H264Encoder}
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


def negotiated_codecs(sdp: str) -> list[str | None]:
    """Per m-line of an answer (in order, every kind), the mime type it sends with (lower case),
    None for an m-line without codecs or an SDP that does not parse."""
    try:
        desc = SessionDescription.parse(sdp)
    except Exception:
        return []
    return [m.rtp.codecs[0].mimeType.lower() if m.rtp.codecs else None for m in desc.media]


def negotiated_codec(sdp: str) -> str | None:
    """Name of the first video codec in an answer (what the call actually uses)."""
    try:
        desc = SessionDescription.parse(sdp)
    except Exception:
        return None
    for m in desc.media:
        if m.kind == "video" and m.rtp.codecs:
            return m.rtp.codecs[0].mimeType.split("/")[-1]
    return None
