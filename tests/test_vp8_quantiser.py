"""The VP8 header reader of benchmarks/studies/vp8_quantiser.py against libvpx itself."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from benchmarks.studies.vp8_quantiser import base_quantiser


def _encode(q: int, n: int = 4) -> list[bytes]:
    """``n`` frames through libvpx held at quantiser ``q`` (its 0-63 scale), key frame first."""
    base = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    c = av.CodecContext.create("libvpx", "w")
    c.width, c.height, c.pix_fmt, c.time_base = 160, 120, "yuv420p", Fraction(1, 30)
    c.bit_rate, c.qmin, c.qmax = 500_000, q, q
    c.options = {"deadline": "realtime", "cpu-used": "-6", "lag-in-frames": "0"}
    out = []
    for i in range(n):
        f = av.VideoFrame.from_ndarray(np.roll(base, i, 1), format="bgr24")
        f.pts, f.time_base = i, Fraction(1, 30)
        out += [bytes(p) for p in c.encode(f)]
    return out


def test_base_quantiser_is_what_libvpx_was_held_at() -> None:
    """libvpx maps its 0-63 quantiser to the 0-127 index the header carries (its q_trans table:
    4 -> 4, 30 -> 39, 63 -> 127), on key and inter frames alike."""
    for q, index in ((4, 4), (30, 39), (63, 127)):
        frames = _encode(q)
        assert not frames[0][0] & 1 and all(f[0] & 1 for f in frames[1:])  # a key frame, then inter frames
        assert [base_quantiser(f) for f in frames] == [index] * len(frames), q


def test_a_truncated_or_foreign_frame_is_refused() -> None:
    with pytest.raises(ValueError):
        base_quantiser(b"\x00")
    with pytest.raises(ValueError):
        base_quantiser(b"\x00\x00\x00\x00\x00\x00" + bytes(10))  # key frame tag without the start code
