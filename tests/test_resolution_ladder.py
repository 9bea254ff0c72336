"""The sender's resolution ladder (bridge/resolution.py): half size on a slow link, full size back
on a fast one, with hysteresis and a hold time; and the encoders really send at that size."""

from __future__ import annotations

import fractions

import av
import cv2
import numpy as np
import pytest

from benchmarks.harness.clips import load_clip, videos_dir
from bridge.rate_control import rate_controlled_encoder
from bridge.resolution import DEFAULT_LADDER, HALF, ResolutionLadder, next_scale


def test_next_scale_halves_below_the_threshold_and_returns_above_the_upper_one() -> None:
    lad = DEFAULT_LADDER
    px = 640 * 480
    assert next_scale(1.0, 150_000, 640, 480, 10.0, lad) == HALF
    assert next_scale(1.0, 0.99 * lad.down_bpp * px, 640, 480, 10.0, lad) == HALF
    assert next_scale(1.0, 1.01 * lad.down_bpp * px, 640, 480, 10.0, lad) == 1.0
    # between the two thresholds the ladder stays where it is, whichever side it came from
    between = (lad.down_bpp + lad.up_bpp) / 2 * px
    assert next_scale(1.0, between, 640, 480, 10.0, lad) == 1.0
    assert next_scale(HALF, between, 640, 480, 10.0, lad) == HALF
    assert next_scale(HALF, lad.up_bpp * px, 640, 480, 10.0, lad) == 1.0
    # a 720p source halves at a proportionally higher rate
    assert next_scale(1.0, 400_000, 1280, 720, 10.0, lad) == HALF
    assert next_scale(1.0, 400_000, 640, 480, 10.0, lad) == 1.0


def test_next_scale_waits_the_hold_time_and_never_goes_under_the_smallest_side() -> None:
    lad = ResolutionLadder(hold_s=3.0, min_side=120)
    assert next_scale(HALF, 1_000_000, 640, 480, 2.9, lad) == HALF  # switched 2.9 s ago: not yet
    assert next_scale(HALF, 1_000_000, 640, 480, 3.0, lad) == 1.0
    assert next_scale(1.0, 30_000, 320, 240, 10.0, lad) == HALF  # 160x120 is allowed
    assert next_scale(1.0, 20_000, 224, 224, 10.0, lad) == 1.0  # 112x112 is not
    with pytest.raises(ValueError):
        ResolutionLadder(down_bpp=1.2, up_bpp=1.0)


def _frames(n: int, w: int = 640, h: int = 480) -> list[av.VideoFrame]:
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
    out = []
    for i in range(n):
        f = av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="bgr24")
        f.pts, f.time_base = i * 3000, fractions.Fraction(1, 90_000)
        out.append(f)
    return out


def _decoded_sizes(enc, frames: list[av.VideoFrame], bitrates: list[int] | None = None) -> list[tuple[int, int]]:
    """Encode with ``enc`` (aiortc's VP8 payloads, one packet per frame at these sizes), decode with
    libvpx, return each decoded picture's (width, height)."""
    from aiortc.codecs.vpx import Vp8Decoder, vp8_depayload
    from aiortc.jitterbuffer import JitterFrame

    dec = Vp8Decoder()
    sizes = []
    for i, f in enumerate(frames):
        if bitrates is not None:
            enc.target_bitrate = bitrates[i]
        payloads, ts = enc.encode(f)
        data = b"".join(vp8_depayload(p) for p in payloads)
        for out in dec.decode(JitterFrame(data=data, timestamp=ts)):
            sizes.append((out.width, out.height))
    return sizes


def test_a_slow_sender_sends_half_size_and_a_fast_one_full_size() -> None:
    slow = rate_controlled_encoder("video/vp8", 150_000)
    assert _decoded_sizes(slow, _frames(5)) == [(320, 240)] * 5
    assert slow.scale == HALF
    fast = rate_controlled_encoder("video/vp8", 1_000_000)
    assert _decoded_sizes(fast, _frames(5)) == [(640, 480)] * 5
    off = rate_controlled_encoder("video/vp8", 150_000, ladder=None)
    assert _decoded_sizes(off, _frames(5)) == [(640, 480)] * 5


def test_the_ladder_follows_the_estimate_both_ways() -> None:
    """A receiver's estimate falling then rising takes the picture down and back up, each switch
    decodable (the encoder restarts with a keyframe at the new size)."""
    enc = rate_controlled_encoder("video/vp8", 1_000_000, ladder=ResolutionLadder(hold_s=0.0))
    rates = [1_000_000] * 3 + [150_000] * 4 + [220_000] * 2 + [800_000] * 3
    sizes = _decoded_sizes(enc, _frames(len(rates)), rates)
    assert sizes == [(640, 480)] * 3 + [(320, 240)] * 6 + [(640, 480)] * 3


def test_the_pipeline_follows_a_stream_that_changes_size() -> None:
    """What a receiver of a laddered stream sees: the same face at half size from one frame to the
    next. The face is enhanced on both sides of the switch and tracked where it now is."""
    from enhancer.commands.assemble import build_pipeline
    from enhancer.detect import detect_faces

    clip = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} not found (../shared/data)")
    frames, fps = load_clip(clip, 16, (640, 480))
    pipe = build_pipeline(identity=None, engine="onnxruntime")
    try:
        for i, f in enumerate(frames):
            img = f if i < 8 else cv2.resize(f, (320, 240), interpolation=cv2.INTER_AREA)
            r = pipe.process(img, i / fps)
            assert r.frame.shape == img.shape and r.enhanced, i
            if i in (7, 8, 15):
                truth = detect_faces(img, upsample=1)[0].landmarks.mean(0)
                assert np.linalg.norm(r.landmarks[0].mean(0) - truth) < 0.02 * img.shape[1], i
    finally:
        pipe.close()
