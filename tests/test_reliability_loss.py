"""Lossy links, made in-process: a share of RTP packets vanishes on arrival (seeded), so aiortc's
NACKs, retransmissions and PLIs run for real between real peers on loopback.

* A lossy viewer beside a clean one, both fed by one shared encoder: the clean viewer keeps
  the source rate; the lossy one keeps receiving (NACK recovery, keyframes on PLI); the
  keyframes its losses force on everybody stay within the encoder's limit (one per 0.5 s).
* A lossy publisher: the bridge's receiver (marker release) recovers with NACKs and the viewer
  keeps getting video.
Rates are printed; thresholds are loose enough for a busy 2-core machine.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from support.cpuwatch import CpuWatch
from support.rtp_loss import drop_incoming_rtp

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from bridge.fanout import KEYFRAME_MIN_INTERVAL_S

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"  # 480x480, 30 fps, one face
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
LOSS = 0.05
WINDOW_S = 8.0


@pytest.mark.timeout(90)
def test_lossy_viewer_does_not_hurt_the_clean_one() -> None:
    async def scenario() -> dict:
        frames, src_fps = load_clip(CLIP, 150)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            pub = await publish(http, f"{base}/whip/loss", ClipTrack(frames, src_fps))
            clean = await view(http, f"{base}/whep/loss")
            lossy = await view(http, f"{base}/whep/loss")
            loss = drop_incoming_rtp(lossy.pc, LOSS, seed=1)
            await asyncio.sleep(2.5)
            enc = next(iter(bridge.encoders.values()))
            k0, r0, t0 = enc.stats.keyframes, enc.stats.keyframe_requests, time.monotonic()
            watch = CpuWatch().start()
            await asyncio.sleep(WINDOW_S)
            watch.stop()
            out = {"clean_fps": clean.sinks[0].fps(since=t0), "lossy_fps": lossy.sinks[0].fps(since=t0),
                   "keyframes": enc.stats.keyframes - k0, "requests": enc.stats.keyframe_requests - r0,
                   "dropped": loss.dropped, "passed": loss.passed, "busy": watch.busy, "note": watch.note()}
            for p in (clean, lossy, pub):
                assert await p.leave(http) == 200
        return out

    r = asyncio.run(scenario())
    print(f"\nlossy viewer ({LOSS:.0%} RTP dropped: {r['dropped']} of {r['dropped'] + r['passed']}): clean "
          f"{r['clean_fps']:.1f} fps, lossy {r['lossy_fps']:.1f} fps; keyframes {r['keyframes']} "
          f"for {r['requests']} requests in {WINDOW_S:.0f} s; {r['note']}")
    assert r["dropped"] > 20  # the loss really happened
    assert r["clean_fps"] >= (0.6 if r["busy"] else 0.85) * 30, r
    assert r["lossy_fps"] >= (0.3 if r["busy"] else 0.5) * 30, r  # recovered, not frozen
    assert r["keyframes"] <= WINDOW_S / KEYFRAME_MIN_INTERVAL_S + 2, r


@pytest.mark.timeout(90)
def test_lossy_publisher_still_reaches_the_viewer() -> None:
    async def scenario() -> dict:
        frames, src_fps = load_clip(CLIP, 150)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            pub = await publish(http, f"{base}/whip/lossin", ClipTrack(frames, src_fps))
            viewer = await view(http, f"{base}/whep/lossin")
            session = bridge.publishers("lossin")[0]
            loss = drop_incoming_rtp(session.pc, LOSS, seed=2)  # the bridge's side of the publisher link
            await asyncio.sleep(2.5)
            t0 = time.monotonic()
            watch = CpuWatch().start()
            await asyncio.sleep(WINDOW_S)
            watch.stop()
            track = session.track.stats()
            out = {"viewer_fps": viewer.sinks[0].fps(since=t0), "dropped": loss.dropped, "passed": loss.passed,
                   "faces": track["faces"], "busy": watch.busy, "note": watch.note()}
            for p in (viewer, pub):
                assert await p.leave(http) == 200
        return out

    r = asyncio.run(scenario())
    print(f"\nlossy publisher ({LOSS:.0%} RTP dropped: {r['dropped']} of {r['dropped'] + r['passed']}): viewer "
          f"{r['viewer_fps']:.1f} fps; {r['note']}")
    assert r["dropped"] > 20
    assert r["viewer_fps"] >= (0.3 if r["busy"] else 0.5) * 30, r
    assert r["faces"] == 1
