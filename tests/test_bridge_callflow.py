"""The call flow a new user follows: `likeness serve` plus `likeness call`, and what the bridge offers.

Real aiortc peers, a real bridge, real clip frames on loopback; the `call` command runs as the
CLI parses it.
"""

from __future__ import annotations

import asyncio
import socket

import aioice.ice
import pytest
from aiortc import RTCPeerConnection
from support.lifecycle import wait_until

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.client import ENHANCED_HEADER
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from bridge.ice import disable_loopback_candidates, is_loopback_host, rtc_configuration
from bridge.server import run_server
from bridge.track import FrameProcessor

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"  # 480x480, 30 fps, one face
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")


@needs_clip
@pytest.mark.timeout(90)
def test_call_is_relayed_not_enhanced_twice() -> None:
    """`likeness call` enhances locally and says so on its WHIP POST: the bridge relays that stream
    without building a pipeline for it, while a publisher that did not enhance is still enhanced."""
    from enhancer.cli import build_parser
    from enhancer.commands.call import publish as call_publish

    built: list[str | None] = []  # identities the bridge built a pipeline for

    def factory(identity: str | None) -> FrameProcessor:
        built.append(identity)
        return default_processor_factory(identity)

    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0), factory) as (base, bridge), http_client() as http:
            async with http.post(f"{base}/whip/room1", data="v=0\r\n",
                                 headers={"Content-Type": "application/sdp", ENHANCED_HEADER: "maybe"}) as r:
                assert r.status == 400 and ENHANCED_HEADER in await r.text()
            raw = await publish(http, f"{base}/whip/room1", ClipTrack(frames, fps))
            assert built == [None]  # a plain WHIP publisher gets the bridge's pipeline
            args = build_parser().parse_args(
                ["call", "--whip", f"{base}/whip/room1", "--source", str(CLIP), "--duration", "6",
                 "--engine", "bicubic", "--stats-every", "0"])
            call = asyncio.get_running_loop().create_task(call_publish(args))
            await wait_until(lambda: len(bridge.publishers("room1")) == 2 or call.done(), 20, "the call to join")
            assert not call.done(), call.result()
            v = await view(http, f"{base}/whep/room1", videos=2)
            await wait_until(lambda: len(v.sinks) == 2 and all(len(s.frames) > 30 for s in v.sinks), 30,
                             "the viewer to receive both streams")
            pubs = {s["id"]: s for s in bridge.stats(room="room1")["rooms"]["room1"] if s["role"] == "publisher"}
            by_call = pubs[bridge.publishers("room1")[1].id]
            by_raw = pubs[bridge.publishers("room1")[0].id]
            print(f"\ncall's stream at the bridge: {by_call['track']}\nraw stream: {by_raw['track']}")
            assert built == [None], built  # no pipeline for the call's stream
            assert by_call["enhanced_by"] == "publisher" and by_call["processing"] == "relay"
            assert by_call["track"]["processing"] == "relay"
            assert by_call["track"]["relayed"] > 30 and by_call["track"]["enhanced"] == 0, by_call["track"]
            assert by_raw["enhanced_by"] == "bridge" and by_raw["track"]["processing"] == "enhance"
            assert by_raw["track"]["enhanced"] > 0, by_raw["track"]
            assert await call == 0
            for peer in (v, raw):
                assert await peer.leave(http) == 200

    asyncio.run(scenario())


def host_candidates(sdp: str) -> set[str]:
    """Addresses of the host candidates in an SDP."""
    out = set()
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if fields[fields.index("typ") + 1] == "host":
                out.add(fields[4])
    return out


TOKEN = "test-token-0123456789"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bind", ["loopback", "network"])
def test_bridge_offers_loopback_candidates_only_on_a_loopback_bind(bind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`likeness serve` as run (``run_server``, default ICE settings): bound to 127.0.0.1 it answers
    with 127.0.0.1 host candidates only, although the machine has network addresses; bound to a
    network address it answers with the machine's network addresses and no loopback."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)  # restored after
    disable_loopback_candidates()
    network = [a for a in aioice.ice.get_host_addresses(True, True) if not is_loopback_host(a)]
    if not network:
        pytest.skip("this machine has no network address: nothing a loopback bridge could leak")
    host = "127.0.0.1" if bind == "loopback" else next((a for a in network if ":" not in a), network[0])
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    token = None if bind == "loopback" else TOKEN
    auth = {"Authorization": f"Bearer {token}"} if token else {}

    async def scenario() -> tuple[str, dict]:
        stop = asyncio.Event()
        server = asyncio.get_running_loop().create_task(
            run_server(BridgeConfig(host=host, port=port, token=token), default_processor_factory, stop))
        base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        try:
            async with http_client() as http:
                for _ in range(100):
                    try:
                        async with http.get(f"{base}/api/config", headers=auth) as r:
                            config = await r.json()
                        break
                    except OSError:
                        assert not server.done(), server.exception()
                        await asyncio.sleep(0.05)
                # the answer is gathered when the offer comes, so the peer's own candidates do not matter
                pc = RTCPeerConnection(rtc_configuration())
                pc.addTransceiver("video", direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                async with http.post(f"{base}/whip/r", data=pc.localDescription.sdp,
                                     headers={"Content-Type": "application/sdp", **auth}) as r:
                    assert r.status == 201, await r.text()
                    answer = await r.text()
                await pc.close()
        finally:
            stop.set()
            await asyncio.wait_for(server, 20)
        return answer, config

    answer, config = asyncio.run(scenario())
    got = host_candidates(answer)
    print(f"\nbound to {host}; machine's addresses {network}; answer's host candidates {sorted(got)}")
    if bind == "loopback":
        assert config["loopback"] == "only"
        assert got == {"127.0.0.1"}
    else:
        assert config["loopback"] == "off"
        assert got and got <= set(network), got  # the network's addresses, no loopback
