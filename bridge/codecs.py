"""Video codecs: which the bridge offers first, which an answer chose, and aiortc's encoder for each.

``CODECS`` names what ``--codec`` accepts; ``ENCODERS`` is what a sender encodes with (and, in
``fanout``, packetizes with); ``private_frame`` is what every encoder we create is fed.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.sdp import SessionDescription

CODECS = {"vp8": "video/VP8", "h264": "video/H264"}
# aiortc's encoder per codec: what a sender encodes with (and, in fanout.py, packetizes with)
ENCODERS: dict[str, type] = {"video/vp8": Vp8Encoder, "video/h264": H264Encoder}


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


def _media(sdp: str) -> list[Any]:
    """An answer's m-lines; none for an SDP that does not parse (it was ours, so only in tests)."""
    try:
        return SessionDescription.parse(sdp).media
    except Exception:
        return []


def negotiated_codecs(sdp: str) -> list[str | None]:
    """Per m-line of an answer (in order, every kind), the mime type it sends with (lower case),
    None for an m-line without codecs; empty for an SDP that does not parse."""
    return [m.rtp.codecs[0].mimeType.lower() if m.rtp.codecs else None for m in _media(sdp)]


def negotiated_codec(sdp: str) -> str | None:
    """Name of the first video codec in an answer (what the call actually uses)."""
    for m in _media(sdp):
        if m.kind == "video" and m.rtp.codecs:
            return m.rtp.codecs[0].mimeType.split("/")[-1]
    return None


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
