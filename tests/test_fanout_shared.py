"""Shared fan-out: one encoder per publisher and codec, whatever the number of viewers.

The bitstream helpers run on real VP8/H.264 encodes; the bridge tests use real aiortc peers
on loopback (publisher, bridge, several viewers), real keyframe requests (RTCP PLI sent by a
viewer's receiver) and real receiver estimates (REMB).
"""

from __future__ import annotations

import asyncio
import fractions
import threading

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from support.lifecycle import assert_no_leaks, snapshot, wait_until

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack, read_stamp, stamp
from bridge.config import BridgeConfig, check_config
from bridge.factory import default_processor_factory
from bridge.fanout import (
    BITSTREAM_ENCODERS,
    DROP_STEP,
    QUEUE_FRAMES,
    RAISE_INTERVAL_S,
    PacketTrack,
    SharedEncoder,
    _join,
    h264_is_keyframe,
    lowest_estimate,
    next_bitrate,
    vp8_is_keyframe,
)
from bridge.rate_control import DEFAULT_BITRATES, RetransmitBudget, capped_encoder_class, rate_controlled_encoder
from enhancer.errors import LikenessError

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"  # 480x480, 30 fps, one face
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")


def _frames(n: int) -> list[av.VideoFrame]:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        f = av.VideoFrame.from_ndarray(stamp(np.roll(base, 3 * i, axis=1), i), format="bgr24")
        f.pts, f.time_base = i * 3000, fractions.Fraction(1, 90_000)
        out.append(f)
    return out


@pytest.mark.parametrize("mime", ["video/vp8", "video/h264"])
def test_bitstream_keyframes_are_where_they_were_asked_for(mime: str) -> None:
    """The shared encoder's output marks keyframes exactly: the first frame and a forced one."""
    enc = BITSTREAM_ENCODERS[mime]()
    keys, sizes = [], []
    for i, f in enumerate(_frames(12)):
        chunks, ts = enc.encode(f, i == 7)
        assert abs(ts - i * 3000) <= 1, ts  # RTP clock, rounded
        data, key = _join(mime, chunks)
        keys.append(key)
        sizes.append(len(data))
    assert keys == [i in (0, 7) for i in range(12)], keys
    assert sizes[7] > 2 * np.median(sizes[1:7]), sizes  # a keyframe really is a whole picture


@pytest.mark.parametrize("mime", ["video/vp8", "video/h264"])
def test_shared_bitstream_decodes_to_the_frames(mime: str) -> None:
    """What viewers get decodes, frame for frame, to what was encoded (stamps survive)."""
    enc = BITSTREAM_ENCODERS[mime]()
    dec = av.CodecContext.create("libvpx" if mime == "video/vp8" else "h264", "r")
    got = []
    for i, f in enumerate(_frames(10)):
        data, _ = _join(mime, enc.encode(f, i == 0)[0])
        for out in dec.decode(av.Packet(data)):
            got.append(read_stamp(out.to_ndarray(format="gray")))
    assert got == list(range(10)), got


def test_keyframe_flags_on_handmade_headers() -> None:
    assert vp8_is_keyframe(b"\x10\x02\x00") and not vp8_is_keyframe(b"\x11\x02\x00") and not vp8_is_keyframe(b"")
    assert h264_is_keyframe([b"\x67", b"\x68", b"\x65"])  # SPS, PPS, IDR slice
    assert not h264_is_keyframe([b"\x41"]) and not h264_is_keyframe([])


def _yuv_frames(n: int, size: tuple[int, int] = (120, 160)) -> list[av.VideoFrame]:
    """yuv420p frames, as a decoder (or a passed-through frame) hands them to the encoders."""
    out = []
    for f in _frames(n):
        y = f.reformat(format="yuv420p", width=size[1], height=size[0])
        y.pts, y.time_base = 1_000_000 + f.pts, f.time_base  # a receiver's clock does not start at 0
        out.append(y)
    return out


def _shared_codec(mime: str):  # type: ignore[no-untyped-def]
    """The encoder a SharedEncoder builds (fanout.py), without a source track."""
    return rate_controlled_encoder(mime, None, capped_encoder_class(BITSTREAM_ENCODERS[mime]))


@pytest.mark.parametrize("mime", ["video/vp8", "video/h264"])
def test_encoding_leaves_a_relayed_frame_as_it_was(mime: str) -> None:
    """A relayed frame is one object for every encoder of its publisher: ours must not rebase its
    pts to their codec's time base or mark it a keyframe (PyAV and aiortc do both in place)."""
    enc = _shared_codec(mime)
    frames = _yuv_frames(3)
    for i, f in enumerate(frames):
        before = (f.pts, f.time_base, f.pict_type)
        _, ts = enc.encode(f, i == 1)
        assert (f.pts, f.time_base, f.pict_type) == before
        assert abs(ts - f.pts) <= 1, (ts, f.pts)


def test_two_codecs_encoding_the_same_frames_at_once_keep_their_clocks() -> None:
    """The bridge's VP8 and H.264 encoders of one publisher run on two executor threads over the
    same frame objects. Before private frames the H.264 thread's in-place rebase to 1/30 reached
    the VP8 encode (timestamps off by up to a frame; once libvpx refused a pts 'below the
    first' in a full test run and every VP8 viewer's stream ended)."""
    frames = _yuv_frames(150)
    stamps: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def run(mime: str) -> None:
        enc = _shared_codec(mime)
        try:
            stamps[mime] = [enc.encode(f, False)[1] for f in frames]
        except BaseException as e:  # reported below, not lost in the thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(m,)) for m in ("video/vp8", "video/h264")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for mime, got in stamps.items():
        assert all(abs(ts - f.pts) <= 1 for ts, f in zip(got, frames, strict=True)), mime  # RTP clock, rounded


def test_next_bitrate_follows_drops_at_once_and_raises_in_steps() -> None:
    assert next_bitrate(800_000, None, 10.0) == 800_000  # nobody reported: keep
    assert next_bitrate(800_000, 700_000, 0.0) == 700_000  # congestion: at once, however recent the change
    assert next_bitrate(800_000, 760_000, 10.0) == 800_000  # within 10 %: keep (no keyframe for noise)
    assert next_bitrate(800_000, 960_000, 10.0) == 800_000  # up, but less than a 25 % step
    assert next_bitrate(800_000, 1_000_000, 1.0) == 800_000  # a 25 % step, but too soon
    assert next_bitrate(800_000, 1_000_000, RAISE_INTERVAL_S) == 1_000_000


def test_lowest_estimate() -> None:
    assert lowest_estimate([]) is None and lowest_estimate([None, None]) is None
    assert lowest_estimate([900_000, None, 400_000]) == 400_000


def test_retransmit_budget_is_a_share_of_the_bitrate() -> None:
    b = RetransmitBudget(share=0.1, burst_s=0.5)  # at 400 kbit/s: 5,000 bytes/s, bucket of 2,500
    assert b.allow(1200, 0.0, 400_000) and b.allow(1200, 0.0, 400_000)  # starts full
    assert not b.allow(1200, 0.0, 400_000) and b.denied == 1  # 100 bytes left
    assert not b.allow(1200, 0.2, 400_000)  # +1,000 after 0.2 s: 1,100 < 1,200
    assert b.allow(1200, 0.3, 400_000)  # +500 more
    assert b.allow(1200, 10.0, 400_000) and b.allow(1200, 10.0, 400_000)  # refilled, but only to the bucket
    assert not b.allow(1200, 10.0, 400_000) and b.denied == 3
    assert not b.allow(1200, 20.0, 80_000)  # a low bitrate is a small bucket: 500 bytes


def test_shared_encoder_starts_low_and_may_go_under_aiortcs_floor() -> None:
    start, ceiling = DEFAULT_BITRATES["video/vp8"]
    src = ClipTrack([np.zeros((48, 64, 3), np.uint8)], 30.0)
    enc = SharedEncoder(src, "video/vp8")
    assert enc.stats.bitrate == start == 300_000 and ceiling == 1_500_000  # aiortc starts at 500 kbit/s
    enc._encoder.target_bitrate = 10 * ceiling
    assert enc._encoder.target_bitrate == ceiling
    enc._encoder.target_bitrate = 150_000  # a 200 kbit/s viewer: aiortc's own floor is 250 kbit/s
    assert enc._encoder.target_bitrate == 150_000
    capped = SharedEncoder(src, "video/vp8", cap=300_000)
    assert capped.stats.bitrate == 300_000
    enc.close(), capped.close()


def test_slow_viewer_is_restarted_at_a_keyframe() -> None:
    async def go() -> None:
        t = PacketTrack()
        t.offer(b"key0", 0, keyframe=True)  # its sender has not started: nothing queued, nothing asked
        assert not t.wants_keyframe and t._queue.empty()
        reader = asyncio.ensure_future(t.recv())  # the sender starts reading
        await asyncio.sleep(0)
        assert t.wants_keyframe
        t.offer(b"delta", 1, keyframe=False)  # cannot start on a delta frame
        assert t.wants_keyframe and not reader.done()
        t.offer(b"key", 2, keyframe=True)
        p = await reader
        assert bytes(p) == b"key" and p.pts == 2 and not t.wants_keyframe
        for i in range(QUEUE_FRAMES):
            t.offer(b"delta", 3 + i, keyframe=False)
        t.offer(b"delta", 99, keyframe=False)  # queue full: backlog dropped, waits for a keyframe
        assert t.resyncs == 1 and t.wants_keyframe and t._queue.empty()
        t.offer(b"key2", 101, keyframe=True)
        p = await t.recv()
        assert bytes(p) == b"key2" and p.pts == 101
        t.end()
        with pytest.raises(MediaStreamError):
            await t.recv()
        assert t.readyState == "ended"

    asyncio.run(go())


class PacedFrames(MediaStreamTrack):
    """Synthetic stamped frames at ``fps`` (real time), for the encoder alone."""

    kind = "video"

    def __init__(self, fps: float = 30.0) -> None:
        super().__init__()
        self.frames, self.i, self.fps = _frames(30), 0, fps

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / self.fps)
        f = self.frames[self.i % len(self.frames)]
        f.pts = self.i * 3000
        self.i += 1
        return f


def test_viewer_not_yet_reading_costs_no_keyframes_and_requests_are_rate_limited() -> None:
    async def go() -> None:
        enc = SharedEncoder(PacedFrames(), "video/vp8")
        reading, idle = PacketTrack(), PacketTrack()
        enc.subscribe(reading, None)
        enc.subscribe(idle, None)  # a viewer still connecting (its sender never reads)
        got: list[av.Packet] = []

        async def read(track: PacketTrack) -> None:
            while True:
                got.append(await track.recv())

        task = asyncio.ensure_future(read(reading))
        await asyncio.sleep(1.5)
        assert enc.stats.frames_encoded > 30
        assert enc.stats.keyframes == 1, enc.stats  # the first frame only: the idle viewer asked for none
        assert vp8_is_keyframe(bytes(got[0]))
        for _ in range(20):  # a burst of PLIs
            enc.request_keyframe()
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.9)
        assert 2 <= enc.stats.keyframes <= 3, enc.stats  # served, but at most one per 0.5 s
        task.cancel()
        idle.stop()
        reading.stop()
        assert enc.closed
        await enc.wait_closed()

    asyncio.run(go())


def test_bad_fanout_setting_is_a_one_line_error() -> None:
    with pytest.raises(LikenessError, match="fanout must be one of shared, per-viewer"):
        check_config(BridgeConfig(fanout="mesh"))


@needs_clip
@pytest.mark.timeout(90)
def test_three_viewers_one_encoder_late_joiner_pli_and_leaving() -> None:
    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 150)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            pub = await publish(http, f"{base}/whip/r", ClipTrack(frames, fps))
            viewers = [await view(http, f"{base}/whep/r") for _ in range(3)]
            await asyncio.sleep(3.0)
            assert len(bridge.encoders) == 1, bridge.stats()
            enc = next(iter(bridge.encoders.values()))
            assert len(enc.subscribers) == 3
            track = bridge.publishers("r")[0].track
            e0, k0, n0 = enc.stats.frames_encoded, track.c.frames_out, [len(v.sinks[0].frames) for v in viewers]
            await asyncio.sleep(4.0)
            encoded, produced = enc.stats.frames_encoded - e0, track.c.frames_out - k0
            got = [len(v.sinks[0].frames) - n for v, n in zip(viewers, n0, strict=True)]
            # one encode per enhanced frame, not one per viewer per frame
            assert produced > 40 and encoded <= produced + 2, (encoded, produced)
            assert min(got) >= 0.8 * encoded, (got, encoded)
            for v in viewers:  # every viewer gets the frames in order, none twice
                idx = [r.index for r in v.sinks[0].frames if r.index >= 0]
                assert idx == sorted(set(idx)), idx[:40]
            # every viewer's receiver estimate reached the shared encoder (REMB over real RTCP)
            assert all(s.estimate is not None for s in enc.subscribers), [s.estimate for s in enc.subscribers]
            lowest = max(100_000, min(1_500_000, lowest_estimate(s.estimate for s in enc.subscribers)))
            # never more than 10 % above the slowest viewer's target (within one frame's lag)
            assert enc.stats.bitrate <= lowest / DROP_STEP * 1.02, (enc.stats, [s.estimate for s in enc.subscribers])

            # a late joiner is started with a keyframe and gets video within a couple of seconds
            keys = enc.stats.keyframes
            late = await view(http, f"{base}/whep/r")
            await wait_until(lambda: late.sinks and late.sinks[0].frames, 5.0, "a frame at the late viewer")
            assert enc.stats.keyframes > keys and len(enc.subscribers) == 4

            # a real PLI from one viewer's receiver makes the shared encoder send a keyframe
            await asyncio.sleep(1.0)
            keys = enc.stats.keyframes
            first = next(s for s in bridge.sessions.values() if s.role == "viewer")
            ssrc = first.pc.getSenders()[0]._ssrc  # the media SSRC that viewer receives
            receiver = next(v for v in viewers if v.resource.url.endswith(first.id)).pc.getReceivers()[0]
            await receiver._send_rtcp_pli(ssrc)
            await asyncio.sleep(0.5)
            assert enc.stats.keyframes > keys, enc.stats

            # viewers leaving: the others keep receiving; the last one out stops the encoder
            assert await viewers[0].leave(http) == 200
            before = [len(v.sinks[0].frames) for v in viewers[1:]]
            await asyncio.sleep(1.5)
            assert all(len(v.sinks[0].frames) > b + 20 for v, b in zip(viewers[1:], before, strict=True))
            for v in (*viewers[1:], late):
                assert await v.leave(http) == 200
            await asyncio.sleep(0.3)
            assert bridge.encoders == {} and enc.closed
            assert await pub.leave(http) == 200

    asyncio.run(scenario())


@needs_clip
@pytest.mark.timeout(60)
def test_publisher_leaving_ends_shared_streams() -> None:
    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            before = snapshot()
            pub = await publish(http, f"{base}/whip/r", ClipTrack(frames, fps))
            viewers = [await view(http, f"{base}/whep/r") for _ in range(2)]
            await asyncio.sleep(2.5)
            enc = next(iter(bridge.encoders.values()))
            assert all(v.sinks and v.sinks[0].frames for v in viewers)
            assert await pub.leave(http) == 200
            await wait_until(lambda: enc.closed, 5.0, "the shared encoder to close after its publisher")
            assert bridge.encoders == {}
            tracks = [t for s in bridge.sessions.values() if s.role == "viewer" for t in s.subscriptions]
            assert len(tracks) == 2 and all(t.readyState == "ended" for t in tracks)  # the viewers' senders stop
            counts = [len(v.sinks[0].frames) for v in viewers]
            await asyncio.sleep(1.0)
            assert [len(v.sinks[0].frames) for v in viewers] == counts
            for v in viewers:
                assert await v.leave(http) == 200
            await assert_no_leaks(before)

    asyncio.run(scenario())


@needs_clip
@pytest.mark.timeout(60)
def test_page_echo_and_a_viewer_share_one_encoder() -> None:
    """The page's publisher gets its enhanced video back on the same connection (/api/offer);
    that echo and the room's viewer are fed by one encoder."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from benchmarks.harness.tracks import FrameSink
    from bridge.ice import rtc_configuration

    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            before = snapshot()
            pc = RTCPeerConnection(rtc_configuration())
            pc.addTransceiver(ClipTrack(frames, fps), direction="sendrecv")
            echo: list[FrameSink] = []
            pc.on("track", lambda track: echo.append(FrameSink(track).start()))
            await pc.setLocalDescription(await pc.createOffer())
            async with http.post(f"{base}/api/offer?room=page", json={"sdp": pc.localDescription.sdp,
                                                                     "type": "offer"}) as r:
                assert r.status == 200, await r.text()
                answer = await r.json()
            await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            viewer = await view(http, f"{base}/whep/page")
            await asyncio.sleep(3.0)
            assert len(bridge.encoders) == 1, bridge.stats()["shared_encoders"]
            enc = next(iter(bridge.encoders.values()))
            assert len(enc.subscribers) == 2
            n_echo, n_view, e0 = len(echo[0].frames), len(viewer.sinks[0].frames), enc.stats.frames_encoded
            await asyncio.sleep(2.0)
            assert len(echo[0].frames) - n_echo > 30 and len(viewer.sinks[0].frames) - n_view > 30
            assert enc.stats.frames_encoded - e0 <= 2.0 * 30 + 5  # one encode per frame for both
            assert await viewer.leave(http) == 200
            async with http.delete(f"{base}{answer['location']}") as r:
                assert r.status == 200
            await echo[0].stop()
            await pc.close()
            assert bridge.encoders == {}
            await assert_no_leaks(before)

    asyncio.run(scenario())


@needs_clip
@pytest.mark.timeout(60)
def test_viewers_with_different_codecs_get_one_encoder_each() -> None:
    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            before = snapshot()
            pub = await publish(http, f"{base}/whip/mix", ClipTrack(frames, fps))
            viewers = [await view(http, f"{base}/whep/mix", codec=c) for c in ("vp8", "h264", "vp8")]
            await asyncio.sleep(3.0)
            codecs = sorted((mime, len(e.subscribers)) for (_, mime), e in bridge.encoders.items())
            assert codecs == [("video/h264", 1), ("video/vp8", 2)], codecs
            n0 = [len(v.sinks[0].frames) for v in viewers]
            await asyncio.sleep(2.0)
            assert all(len(v.sinks[0].frames) - n > 30 for v, n in zip(viewers, n0, strict=True))
            for p in (*viewers, pub):
                assert await p.leave(http) == 200
            assert bridge.encoders == {}
            await assert_no_leaks(before)

    asyncio.run(scenario())
