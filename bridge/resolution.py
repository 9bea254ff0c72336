"""The sender's resolution ladder: half the picture's size when the bitrate is too low for all of it.

Why: at a few hundred kbit/s an encoder spreads too few bits over a 640x480 picture and the face
comes out blocky; the same bits over a quarter of the pixels keep more of it. Offline (aiortc's
VP8, a talking head, face PSNR against the source in the aligned crop;
docs/receiver.md) half size gained 0.6-0.7 dB at 150 kbit/s and 0.1 dB at 250-300, and lost 0.1 dB
at 500. libwebrtc's senders scale this way; aiortc's never do. The receiver shows the smaller
picture at its own size (a browser scales it up; ``likeness view`` restores and re-serves it).

Thresholds are in bits per second per source pixel, so a 720p sender halves at a proportionally
higher rate; the gap between going down and coming back up, and a least time between switches,
keep the ladder from flapping, since every switch restarts the encoder with a keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass

import av


@dataclass(frozen=True)
class ResolutionLadder:
    down_bpp: float = 0.55  # below this many bit/s per source pixel, send half size (169 kbit/s at 640x480)
    up_bpp: float = 0.9  # at or above this, full size again (276 kbit/s at 640x480)
    hold_s: float = 3.0  # the least time between two switches
    min_side: int = 120  # never send a picture whose shorter side is under this

    def __post_init__(self) -> None:
        if not 0 < self.down_bpp < self.up_bpp or self.hold_s < 0 or self.min_side < 16:
            raise ValueError(f"invalid resolution ladder: {self}")


DEFAULT_LADDER = ResolutionLadder()
HALF = 0.5


def next_scale(current: float, bitrate: float, width: int, height: int, since_switch_s: float,
               ladder: ResolutionLadder) -> float:
    """The scale (1 or ``HALF``) to send a ``width`` x ``height`` source at, given the encoder's
    target ``bitrate`` (bit/s), the scale now and the seconds since it last changed."""
    if min(width, height) * HALF < ladder.min_side:
        return 1.0
    if since_switch_s < ladder.hold_s:
        return current
    bpp = bitrate / (width * height)
    if current == 1.0 and bpp < ladder.down_bpp:
        return HALF
    if current != 1.0 and bpp >= ladder.up_bpp:
        return 1.0
    return current


def scaled(frame: av.VideoFrame, scale: float) -> av.VideoFrame:
    """``frame`` as yuv420p at ``scale`` of its size (even sides, area-averaged), pts and time base
    kept; a new frame object."""
    w = max(2, round(frame.width * scale) // 2 * 2)
    h = max(2, round(frame.height * scale) // 2 * 2)
    return frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
