"""Hand each incoming video frame to the decoder as soon as its last packet arrives.

aiortc's video jitter buffer knows a frame is complete only when a packet of the *next* frame
arrives (a new RTP timestamp), so every frame the bridge receives waits one frame interval
(33 ms at 30 fps) before it is even decoded. Senders mark a frame's last packet with the RTP
marker bit (RFC 7741 for VP8, RFC 6184 for H.264; aiortc and browsers both do), so a frame whose
packets are all present up to a marked one is complete now. ``MarkerJitterBuffer`` releases it
then, and otherwise behaves exactly like aiortc's (loss, reordering, NACK retransmissions,
capacity), which it falls back to for everything else.

It also gives up on a hole. aiortc waits for a missing packet until the buffer overflows: 512
packets, which at 200-300 kbit/s (about one packet per frame) is ~16 s of frozen video, with no
keyframe asked for in between. Measured: ``likeness call`` through a 300 kbit/s uplink
(``benchmarks/poor_link.py --scenario call``) froze for good after its first second, whose
burst lost packets that were never resent. A hole that has held frames back for ``give_up_s``
(0.5 s: many round trips for a NACK to be answered) is skipped with the frames it breaks, and
the receiver sends a PLI, so the sender's next keyframe restarts the picture.

Until that keyframe the buffer releases nothing. The inter frames behind a lost one reference it,
and a decoder given them anyway draws garbage (measured in ``benchmarks/receiver.py``'s shaped-link
lab at 150 kbit/s: 124 of 180 frames unreadable; with this wait 18 of 180 when it was limited to 3 s,
0 of 90 at 10 s); libwebrtc holds the last
good picture instead, and so does this buffer: it asks again every ``REASK_S`` and, should the
sender never answer, passes frames again after ``KEYFRAME_WAIT_MAX_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

RECEIVER_ATTR = "_RTCRtpReceiver__jitter_buffer"
VIDEO_CAPACITY = 512  # aiortc's own for video
GIVE_UP_S = 0.5
KEYFRAME_WAIT_MAX_S = 10.0
# how long the wait lets a keyframe take before asking again: a full queue's round trip is 0.4 s
# or more, and each PLI costs a keyframe, several frames' worth of a slow link
REASK_S = 1.0
VP8_START_CODE = b"\x9d\x01\x2a"
H264_IDR = 5


def is_keyframe(data: bytes) -> bool:
    """Whether a depayloaded frame (aiortc's ``JitterFrame.data``) decodes on its own: a VP8 key
    frame (frame tag bit 0 clear, then the key-frame start code) or an H.264 access unit (Annex B,
    as aiortc depayloads it) with an IDR slice."""
    if len(data) >= 6 and not data[0] & 1 and data[3:6] == VP8_START_CODE:
        return True
    if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return False
    i = data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        if data[i + 3] & 0x1F == H264_IDR:
            return True
        i = data.find(b"\x00\x00\x01", i + 3)
    return False


class MarkerJitterBuffer(JitterBuffer):
    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False, give_up_s: float = GIVE_UP_S,
                 clock: Callable[[], float] = time.monotonic, keyframe_wait_s: float = KEYFRAME_WAIT_MAX_S,
                 reask_s: float = REASK_S) -> None:
        super().__init__(capacity, prefetch, is_video)
        self.give_up_s = give_up_s
        self.keyframe_wait_s = keyframe_wait_s
        self.reask_s = reask_s
        self._clock = clock
        self._blocked_since: float | None = None  # when a hole first held frames back
        self._broken: tuple[float, float] | None = None  # (since, last PLI): waiting for a keyframe
        self.holes_skipped = 0
        self.frames_withheld = 0  # frames not released while waiting for a keyframe
        self.waits_expired = 0  # waits that ran out (``KEYFRAME_WAIT_MAX_S``) and let inter frames through

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = self._add(packet)
        if not self._is_video or (self._broken is None and not pli):
            return pli, frame  # the usual case: nothing lost, nothing awaited
        now = self._clock()
        if pli:  # a hole given up, or aiortc's own reset: what follows references lost frames
            self._broken = (now, now) if self._broken is None else (self._broken[0], now)
        if frame is None:
            return pli, frame
        since, asked = self._broken
        key = is_keyframe(frame.data)
        if key or now - since >= self.keyframe_wait_s:
            self.waits_expired += not key
            self._broken = None
            return pli, frame
        self.frames_withheld += 1
        if now - asked >= self.reask_s:  # that keyframe (or the PLI) was lost too: ask again
            self._broken = (since, now)
            pli = True
        return pli, None

    def _add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """aiortc's ``add`` with marker release and the hole given up."""
        pli, frame = super().add(packet)
        if not self._is_video or self._origin is None:
            return pli, frame
        stored = self._packets[packet.sequence_number % self.capacity] is packet
        blocked = stored and frame is None and self._first_hole() < uint16_add(packet.sequence_number, -self._origin)
        if not blocked:
            self._blocked_since = None
            return pli, frame
        now = self._clock()
        if self._blocked_since is None:
            self._blocked_since = now
        elif now - self._blocked_since >= self.give_up_s:
            self._skip_hole()
            self._blocked_since = None
            pli = True
            if frame is None:
                frame = self._remove_frame(packet.sequence_number)
        return pli, frame

    def _first_hole(self) -> int:
        """Slots from the origin to the first missing packet."""
        n = 0
        while n < self.capacity and self._packets[(self._origin + n) % self.capacity] is not None:
            n += 1
        return n

    def _skip_hole(self) -> None:
        """Drop the frame with the first hole, and the frame right after a missing packet (its
        first packets may be what is missing): up to a frame that starts after a present packet."""
        n, drop, after_gap = 0, set(), False
        while n < self.capacity - 1:
            p = self._packets[(self._origin + n) % self.capacity]
            if p is None:
                after_gap = True
            elif p.timestamp in drop or after_gap or not drop:
                drop.add(p.timestamp)
                after_gap = False
            else:
                break  # a new frame whose previous packet is here: complete from its start
            n += 1
        self.remove(n)
        self.holes_skipped += 1

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        frame = self._marked_frame()
        return frame if frame is not None else super()._remove_frame(sequence_number)

    def _marked_frame(self) -> JitterFrame | None:
        """The oldest frame, if its packets from the buffer's origin up to a marked one are all
        here and share one timestamp; those packets leave the buffer."""
        if self._origin is None:
            return None
        packets = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or (packets and packet.timestamp != packets[0].timestamp):
                return None  # a gap, or the frame ended unmarked: aiortc's rule decides
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets), timestamp=packets[0].timestamp)  # type: ignore[attr-defined]
        return None


def release_frames_on_marker(receiver: RTCRtpReceiver) -> None:
    """Give a video ``receiver`` (before any packet arrives) the marker-aware jitter buffer."""
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "video":
        return
    setattr(receiver, RECEIVER_ATTR, MarkerJitterBuffer(capacity=VIDEO_CAPACITY, is_video=True))
