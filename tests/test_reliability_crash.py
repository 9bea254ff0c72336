"""A publisher process killed mid-call (SIGKILL: no DELETE, no DTLS close, nothing on the wire).

Closing an RTCPeerConnection tells the bridge at once (DTLS close_notify); a crashed or
unplugged peer tells it nothing. The bridge then relies on ICE consent freshness (aioice:
6 failed checks ~5 s apart) to notice, so the session, its enhancer thread and its slot stay
for ~30 s. This test measures that window and checks that everything is released after it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from support.lifecycle import assert_no_leaks, snapshot

from benchmarks.harness.calls import http_client, serve_bridge, view
from benchmarks.harness.clips import videos_dir
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
CONSENT_BOUND_S = 6 * 5 * 1.2 + 8  # aioice CONSENT_FAILURES x CONSENT_INTERVAL (randomised up to 1.2x) + slack

PUBLISHER = textwrap.dedent("""
    import asyncio, sys
    from bridge.ice import enable_loopback_candidates
    from benchmarks.harness.calls import http_client, publish
    from benchmarks.harness.clips import load_clip
    from benchmarks.harness.tracks import ClipTrack

    async def main():
        enable_loopback_candidates(only=True)
        frames, fps = load_clip(sys.argv[2], 60)
        async with http_client() as http:
            peer = await publish(http, sys.argv[1], ClipTrack(frames, fps))
            print(peer.resource.headers["X-Likeness-Session"], flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


@pytest.mark.timeout(100)
def test_killed_publisher_is_reaped_by_consent_freshness() -> None:
    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            before = snapshot()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", PUBLISHER, f"{base}/whip/crash", str(CLIP), stdout=subprocess.PIPE)
            try:
                assert proc.stdout is not None
                sid = (await asyncio.wait_for(proc.stdout.readline(), 40)).decode().strip()
                assert sid in bridge.sessions, (sid, list(bridge.sessions))
                viewer = await view(http, f"{base}/whep/crash")
                end = time.monotonic() + 20
                while not (viewer.sinks and len(viewer.sinks[0].frames) > 15):
                    assert time.monotonic() < end, "no frames from the publisher process"
                    await asyncio.sleep(0.1)
                track = bridge.sessions[sid].track
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
                killed = time.monotonic()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            await asyncio.sleep(1.0)
            n = len(viewer.sinks[0].frames)
            await asyncio.sleep(1.0)
            assert len(viewer.sinks[0].frames) <= n + 2, "frames after the publisher died"
            while sid in bridge.sessions:
                assert time.monotonic() - killed < CONSENT_BOUND_S, "the dead publisher's session was never reaped"
                await asyncio.sleep(0.2)
            reaped = time.monotonic() - killed
            assert track is not None and track.readyState == "ended"
            assert not bridge.publishers("crash")
            assert await viewer.leave(http) == 200
            await assert_no_leaks(before)
            print(f"\nkilled publisher reaped after {reaped:.1f} s (ICE consent freshness)")

    asyncio.run(scenario())
