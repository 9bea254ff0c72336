"""The marker-aware jitter buffer: frames out on their last packet, otherwise aiortc's behaviour.

Packets are aiortc ``RtpPacket`` objects as its receiver fills them (``_data`` = depayloaded
bytes); the equivalence test replays a seeded stream with loss-and-retransmit and reordering
through both buffers.
"""

from __future__ import annotations

import asyncio
import fractions
import random

import av
import pytest
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.config import BridgeConfig, check_config
from bridge.factory import default_processor_factory
from bridge.jitter import RECEIVER_ATTR, MarkerJitterBuffer
from enhancer.errors import LikenessError

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"


def pkt(seq: int, ts: int, marker: bool, data: bytes) -> RtpPacket:
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq % 65536, timestamp=ts)
    p._data = data  # type: ignore[attr-defined]
    return p


def stream(frames: int, seed: int, first_seq: int = 65500) -> list[RtpPacket]:
    """``frames`` frames of 1-4 packets each, marker on each frame's last packet (sequence wraps)."""
    rng = random.Random(seed)
    out, seq = [], first_seq
    for f in range(frames):
        n = rng.randint(1, 4)
        for i in range(n):
            out.append(pkt(seq, 3000 * f, i == n - 1, f"{f}.{i};".encode()))
            seq += 1
    return out


def test_frame_leaves_on_its_last_packet() -> None:
    jb = MarkerJitterBuffer(capacity=64, is_video=True)
    assert jb.add(pkt(10, 0, False, b"a"))[1] is None
    assert jb.add(pkt(11, 0, False, b"b"))[1] is None
    frame = jb.add(pkt(12, 0, True, b"c"))[1]
    assert frame is not None and frame.data == b"abc" and frame.timestamp == 0
    frame = jb.add(pkt(13, 3000, True, b"d"))[1]  # a one-packet frame: out at once
    assert frame is not None and frame.data == b"d" and frame.timestamp == 3000


def test_aiortc_buffer_holds_the_same_frame_until_the_next_one() -> None:
    """What the marker buys: aiortc's buffer returns nothing until a new timestamp arrives."""
    jb = JitterBuffer(capacity=64, is_video=True)
    assert jb.add(pkt(10, 0, False, b"a"))[1] is None
    assert jb.add(pkt(11, 0, True, b"b"))[1] is None
    frame = jb.add(pkt(12, 3000, True, b"c"))[1]
    assert frame is not None and frame.data == b"ab"


def test_reordered_and_missing_packets_wait_for_the_gap() -> None:
    jb = MarkerJitterBuffer(capacity=64, is_video=True)
    assert jb.add(pkt(1, 0, False, b"a"))[1] is None
    assert jb.add(pkt(3, 0, True, b"c"))[1] is None  # 2 is missing: not complete
    frame = jb.add(pkt(2, 0, False, b"b"))[1]  # the retransmission fills the gap
    assert frame is not None and frame.data == b"abc"


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# the first bytes of a VP8 key frame (frame tag with bit 0 clear, then the start code) and of an
# inter frame (bit 0 set): what ``is_keyframe`` reads
KEY = b"\x10\x02\x00\x9d\x01\x2a"
INTER = b"\x11\x02\x00"


def test_a_hole_never_filled_is_given_up_with_the_frame_after_it() -> None:
    clock = Clock()
    jb = MarkerJitterBuffer(capacity=64, is_video=True, give_up_s=0.5, clock=clock)
    assert jb.add(pkt(0, 0, False, b"a0"))[1] is None
    assert jb.add(pkt(1, 0, True, b"a1"))[1].data == b"a0a1"  # frame A
    # frame B = 2, 3: packet 2 is lost for good; frame C = 4, 5 (a key frame); frame D = 6
    assert jb.add(pkt(3, 3000, True, b"b1")) == (False, None)
    clock.t = 0.2
    assert jb.add(pkt(4, 6000, False, KEY + b"c0")) == (False, None)
    assert jb.add(pkt(5, 6000, True, b"c1")) == (False, None)  # C is complete but waits behind the hole
    clock.t = 0.6  # 0.6 s since the hole was first seen
    pli, frame = jb.add(pkt(6, 9000, True, INTER + b"d0"))
    assert pli and frame is not None and (frame.data, frame.timestamp) == (KEY + b"c0c1", 6000)  # B dropped, C out
    assert jb.holes_skipped == 1 and jb.frames_withheld == 0
    # the stream goes on behind it, one frame per packet as aiortc's buffer releases them
    assert jb.add(pkt(7, 12000, True, INTER + b"e0"))[1].data == INTER + b"d0"
    assert jb.add(pkt(8, 15000, True, INTER + b"f0"))[1].data == INTER + b"e0"


def test_after_a_hole_is_given_up_nothing_is_released_until_a_keyframe() -> None:
    """The inter frames behind a lost frame reference it: decoded, they are garbage. They are held
    back, the keyframe is asked for again every ``REASK_S`` (1 s) while none comes, and the first
    one restarts the stream."""
    clock = Clock()
    jb = MarkerJitterBuffer(capacity=64, is_video=True, give_up_s=0.5, clock=clock)
    assert jb.add(pkt(0, 0, True, KEY + b"a"))[1] is not None
    assert jb.add(pkt(2, 6000, True, INTER + b"c")) == (False, None)  # packet 1 (frame B) lost for good
    clock.t = 0.6
    assert jb.add(pkt(3, 9000, True, INTER + b"d")) == (True, None)  # B given up, C withheld, PLI
    assert jb.holes_skipped == 1
    seq, ts = 4, 12000
    asked = []
    while clock.t < 1.55:  # inter frames keep coming: none is released, the PLI is repeated
        clock.t = round(clock.t + 0.1, 3)
        pli, frame = jb.add(pkt(seq, ts, True, INTER + bytes([seq])))
        assert frame is None
        if pli:
            asked.append(clock.t)
        seq, ts = seq + 1, ts + 3000
    assert asked == [1.6] and jb.frames_withheld >= 10  # 1 s after the PLI that came with the give-up
    clock.t = 1.7
    pli, frame = jb.add(pkt(seq, ts, True, KEY + b"k"))
    assert frame is not None and frame.data == KEY + b"k" and not pli
    assert jb.add(pkt(seq + 1, ts + 3000, True, INTER + b"after"))[1].data == INTER + b"after"


def test_a_sender_that_never_sends_a_keyframe_gets_its_frames_through_after_a_while() -> None:
    from bridge.jitter import KEYFRAME_WAIT_MAX_S

    clock = Clock()
    jb = MarkerJitterBuffer(capacity=64, is_video=True, give_up_s=0.5, clock=clock)
    jb.add(pkt(0, 0, True, INTER + b"a"))
    jb.add(pkt(2, 6000, True, INTER + b"c"))  # packet 1 lost for good
    clock.t = 0.6
    assert jb.add(pkt(3, 9000, True, INTER + b"d")) == (True, None)  # C dropped with the hole, D withheld
    clock.t = 0.6 + KEYFRAME_WAIT_MAX_S
    assert jb.add(pkt(4, 12000, True, INTER + b"e"))[1].data == INTER + b"e"
    assert jb.add(pkt(5, 15000, True, INTER + b"f"))[1].data == INTER + b"f"
    assert jb.waits_expired == 1


def test_keyframes_are_recognised_in_real_vp8_and_h264_streams() -> None:
    """``is_keyframe`` on what aiortc's own encoders send and its depayloaders give the jitter
    buffer: the first frame and a forced one are key frames, the others are not."""
    from aiortc.codecs.h264 import H264Encoder, h264_depayload
    from aiortc.codecs.vpx import Vp8Encoder, vp8_depayload

    from bridge.jitter import is_keyframe

    frames, _ = load_clip(CLIP, 6, (320, 240))
    for encoder, depayload in ((Vp8Encoder(), vp8_depayload), (H264Encoder(), h264_depayload)):
        kinds = []
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts, vf.time_base = i * 3000, fractions.Fraction(1, 90000)
            payloads, _ = encoder.encode(vf, force_keyframe=i == 4)
            kinds.append(is_keyframe(b"".join(depayload(p) for p in payloads)))
        assert kinds == [True, False, False, False, True, False], (type(encoder).__name__, kinds)


def test_a_hole_inside_a_frame_is_given_up_too() -> None:
    clock = Clock()
    jb = MarkerJitterBuffer(capacity=64, is_video=True, give_up_s=0.5, clock=clock)
    # frame A = 0, 1, 2 with 1 lost for good; B = 3; C = 4
    assert jb.add(pkt(0, 0, False, b"a0")) == (False, None)
    assert jb.add(pkt(2, 0, True, b"a2")) == (False, None)
    assert jb.add(pkt(3, 3000, True, KEY + b"b0")) == (False, None)
    clock.t = 0.7
    pli, frame = jb.add(pkt(4, 6000, True, INTER + b"c0"))
    # A is dropped; B starts right after A's present last packet, so it is whole and, a key frame, comes out
    assert pli and frame is not None and frame.data == KEY + b"b0" and jb.holes_skipped == 1
    assert jb.add(pkt(5, 9000, True, INTER + b"d0"))[1].data == INTER + b"c0"


def test_a_hole_filled_in_time_is_not_given_up() -> None:
    clock = Clock()
    jb = MarkerJitterBuffer(capacity=64, is_video=True, give_up_s=0.5, clock=clock)
    jb.add(pkt(0, 0, True, b"a"))
    assert jb.add(pkt(2, 3000, True, b"c")) == (False, None)  # 1 missing
    clock.t = 0.4
    pli, frame = jb.add(pkt(1, 3000, False, b"b"))  # the retransmission, in time
    assert not pli and frame.data == b"bc" and jb.holes_skipped == 0
    clock.t = 5.0  # long after: nothing is blocked, nothing to give up
    pli, frame = jb.add(pkt(3, 6000, True, b"d"))
    assert not pli and frame.data == b"d"


def test_unmarked_stream_behaves_like_aiortc() -> None:
    a, m = JitterBuffer(capacity=64, is_video=True), MarkerJitterBuffer(capacity=64, is_video=True)
    for p in [pkt(s, 3000 * (s // 2), False, bytes([s])) for s in range(20)]:
        fa, fm = a.add(p)[1], m.add(p)[1]
        assert (fa is None) == (fm is None)
        if fa is not None:
            assert (fa.data, fa.timestamp) == (fm.data, fm.timestamp)


@pytest.mark.parametrize("seed", range(5))
def test_same_frames_as_aiortc_under_loss_and_reordering(seed: int) -> None:
    """Same frames, same order, same bytes; each leaves the marker buffer no later than aiortc's."""
    rng = random.Random(seed)
    packets = stream(300, seed)
    arrival: list[RtpPacket] = []
    late: list[RtpPacket] = []
    for p in packets:
        r = rng.random()
        if r < 0.05:
            late.append(p)  # lost now, retransmitted a few packets later
        elif r < 0.10 and arrival:
            arrival.insert(len(arrival) - 1, p)  # swapped with its predecessor
        else:
            arrival.append(p)
        if late and rng.random() < 0.3:
            arrival.append(late.pop(0))
    arrival.extend(late)
    # holes here are always filled; a frozen clock keeps the give-up (tested below) out of it
    a, m = JitterBuffer(capacity=512, is_video=True), MarkerJitterBuffer(capacity=512, is_video=True, clock=lambda: 0.0)
    got_a: list[tuple[bytes, int, int]] = []
    got_m: list[tuple[bytes, int, int]] = []
    for i, p in enumerate(arrival):
        if (f := a.add(p)[1]) is not None:
            got_a.append((f.data, f.timestamp, i))
        if (f := m.add(p)[1]) is not None:
            got_m.append((f.data, f.timestamp, i))
    assert len(got_a) > 200
    assert [g[:2] for g in got_a] == [g[:2] for g in got_m[: len(got_a)]]
    assert all(gm[2] <= ga[2] for ga, gm in zip(got_a, got_m, strict=False))
    earlier = sum(gm[2] < ga[2] for ga, gm in zip(got_a, got_m, strict=False))
    assert earlier > 0.5 * len(got_a)  # most frames leave earlier


def test_bad_frame_release_is_a_one_line_error() -> None:
    with pytest.raises(LikenessError, match="frame_release must be one of marker, aiortc"):
        check_config(BridgeConfig(frame_release="eager"))


@pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["marker", "aiortc"])
def test_bridge_receives_with_the_chosen_buffer(mode: str) -> None:
    """A real publisher's video reaches a viewer through the bridge with either rule, and the
    bridge's receiver really uses the buffer the config names."""

    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 60)
        config = BridgeConfig(port=0, frame_release=mode)
        async with serve_bridge(config, default_processor_factory) as (base, bridge), http_client() as http:
            pub = await publish(http, f"{base}/whip/j", ClipTrack(frames, fps))
            viewer = await view(http, f"{base}/whep/j")
            await asyncio.sleep(2.5)
            session = bridge.publishers("j")[0]
            buffers = [getattr(r, RECEIVER_ATTR) for r in session.pc.getReceivers() if r.track.kind == "video"]
            assert buffers and all(isinstance(b, MarkerJitterBuffer) == (mode == "marker") for b in buffers)
            assert len(viewer.sinks[0].frames) > 30
            for p in (viewer, pub):
                assert await p.leave(http) == 200

    asyncio.run(scenario())
