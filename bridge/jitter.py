"""Hand each incoming video frame to the decoder as soon as its last packet arrives.

aiortc's video jitter buffer knows a frame is complete only when a packet of the *next* frame
arrives (a new RTP timestamp), so every frame the bridge receives waits one frame interval
(33 ms at 30 fps) before it is even decoded. Senders mark a frame's last packet with the RTP
marker bit (RFC 7741 for VP8, RFC 6184 for H.264; aiortc and browsers both do), so a frame whose
packets are all present up to a marked one is complete now. ``MarkerJitterBuffer`` releases it
then, and otherwise behaves exactly like aiortc's (loss, reordering, NACK retransmissions,
capacity), which it falls back to for everything else.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcrtpreceiver import RTCRtpReceiver

RECEIVER_ATTR = "_RTCRtpReceiver__jitter_buffer"
VIDEO_CAPACITY = 512  # aiortc's own for video


class MarkerJitterBuffer(JitterBuffer):
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
