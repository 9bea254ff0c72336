"""Sharing a publisher's identity with its room's viewers, by consent only (``bridge/identity_share.py``).

Real bridge in-process, real aiortc peers on loopback, real HTTP: who gets the identity (a viewer of
the same room, with the token) and who does not (another room, no token, no opt-in, after the
publisher left), and `likeness call --share-identity` uploading its own.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from support.lifecycle import wait_until
from support.shared_identity import stored_identity

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.client import ENHANCED_HEADER, IDENTITY_REL, identity_url, put_identity
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from enhancer.identity_store import parse_identity

TOKEN = "share-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "bridge-home"
    monkeypatch.setenv("LIKENESS_HOME", str(h))
    return h


def frames() -> tuple[list[np.ndarray], float]:
    return [np.full((240, 320, 3), 90, np.uint8)], 15.0


async def get(http, url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with http.get(url, headers=headers or {}) as r:
        return r.status, await r.read()


@pytest.mark.timeout(60)
def test_identity_reaches_only_viewers_of_its_room_with_the_token_while_it_is_shared(home: Path) -> None:
    stored_identity(home, "alice")
    stored_identity(home, "bob")

    async def scenario() -> None:
        img, fps = frames()
        async with serve_bridge(BridgeConfig(port=0, token=TOKEN), default_processor_factory) as (base, bridge), \
                http_client() as http:
            sharing = await publish(http, f"{base}/whip/room1?identity=alice&share_identity=1",
                                    ClipTrack(img, fps), TOKEN)
            silent = await publish(http, f"{base}/whip/room1?identity=bob", ClipTrack(img, fps), TOKEN)
            other = await publish(http, f"{base}/whip/room2?identity=bob&share_identity=1", ClipTrack(img, fps), TOKEN)
            pub_a, pub_b, pub_c = (p.resource.headers["X-Likeness-Session"] for p in (sharing, silent, other))

            v1 = await view(http, f"{base}/whep/room1", token=TOKEN)  # gets alice, who shares
            url = identity_url(v1.resource)
            assert url == f"{v1.resource.url}/identity" and IDENTITY_REL in v1.resource.headers["Link"]
            status, body = await get(http, url, AUTH)
            assert status == 200
            shared = parse_identity(body, "test")  # the store's own format, validated from memory
            assert shared.name == "alice" and shared.metadata["encoder_id"] == "enc-test"
            assert shared.detail is not None and shared.refs is None  # kept photos never leave the bridge
            # the same auth as viewing: no token, a wrong one
            assert (await get(http, url))[0] == 401
            assert (await get(http, url, {"Authorization": "Bearer wrong-token-xyz"}))[0] == 401
            # no opt-in: bob in room1 is watchable but his identity is not offered
            assert (await get(http, f"{url}?publisher={pub_b}", AUTH))[0] == 404
            # another room's participant, even one who shares, is out of reach of a room1 viewer
            assert (await get(http, f"{url}?publisher={pub_c}", AUTH))[0] == 404
            # a viewer whose first participant does not share: no Link, and 404
            v_bob = await view(http, f"{base}/whep/room1?exclude={pub_a}", token=TOKEN)
            assert identity_url(v_bob.resource) is None
            assert (await get(http, f"{v_bob.resource.url}/identity", AUTH))[0] == 404
            # a viewer of room2 cannot ask for room1's identity with its own session, nor pose as a publisher
            v2 = await view(http, f"{base}/whep/room2", token=TOKEN)
            sid2 = v2.resource.headers["X-Likeness-Session"]
            assert (await get(http, f"{base}/whep/room1/{sid2}/identity?publisher={pub_a}", AUTH))[0] == 404
            assert (await get(http, f"{base}/whep/room1/{pub_a}/identity", AUTH))[0] == 404
            status, body = await get(http, f"{v2.resource.url}/identity", AUTH)  # its own room's: shared
            assert status == 200 and parse_identity(body, "test").name == "bob"
            described = {s["id"]: s["identity_shared"] for s in bridge.stats()["rooms"]["room1"]
                         if s["role"] == "publisher"}
            assert described == {pub_a: True, pub_b: False}

            # the publisher leaves: the bridge drops its identity
            assert await sharing.leave(http, TOKEN) == 200
            assert (await get(http, url, AUTH))[0] == 404
            for p in (silent, other, v1, v_bob, v2):
                await p.leave(http, TOKEN)

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_a_publisher_that_enhances_itself_uploads_its_identity_and_can_withdraw_it(home: Path,
                                                                                   tmp_path: Path) -> None:
    own = stored_identity(tmp_path / "publisher-home", "carol")  # on the publisher's machine, not the bridge's

    async def scenario() -> None:
        img, fps = frames()
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, _), \
                http_client() as http:
            pub = await publish_enhanced(http, f"{base}/whip/room1", ClipTrack(img, fps))
            v = await view(http, f"{base}/whep/room1")
            assert identity_url(v.resource) is None  # nothing shared yet
            ident = f"{v.resource.url}/identity"
            assert (await get(http, ident))[0] == 404
            async with http.put(f"{pub.resource.url}/identity", data=b"not an identity",
                                headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 400 and "identity" in await r.text()
            async with http.put(f"{v.resource.url.replace('/whep/', '/whip/')}/identity", data=own,
                                headers={"Content-Type": "application/octet-stream"}) as r:
                assert r.status == 404  # only a publisher shares, and only its own
            await put_identity(http, pub.resource, own, None)
            status, body = await get(http, ident)
            shared = parse_identity(body, "test")
            assert status == 200 and shared.name == "carol" and shared.refs is None and shared.detail is not None
            async with http.delete(f"{pub.resource.url}/identity") as r:
                assert r.status == 204
            assert (await get(http, ident))[0] == 404
            for p in (pub, v):
                await p.leave(http)

    asyncio.run(scenario())


async def publish_enhanced(http, url: str, track: ClipTrack):  # type: ignore[no-untyped-def]
    """A WHIP publisher that says it enhanced its video itself (relayed by the bridge, as `call`)."""
    return await publish(http, url, track, headers={ENHANCED_HEADER: "1"})


@needs_clip
@pytest.mark.timeout(60)
def test_call_share_identity_offers_it_while_the_call_lasts(home: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """`likeness call --share-identity` (its identity is on the caller's machine) uploads it once
    connected; viewers of the room get it until the call ends, then 404."""
    from enhancer.cli import build_parser, main
    from enhancer.commands.call import publish as call_publish

    assert main(["call", "--whip", "http://127.0.0.1:9/whip/r", "--share-identity"]) == 2
    assert "--share-identity needs --identity" in capsys.readouterr().err
    caller = tmp_path / "caller-home"
    stored_identity(caller, "dave")

    async def scenario() -> None:
        load_clip(CLIP, 1)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            monkeypatch.setenv("LIKENESS_HOME", str(caller))
            args = build_parser().parse_args(
                ["call", "--whip", f"{base}/whip/room1", "--source", str(CLIP), "--duration", "4",
                 "--engine", "bicubic", "--stats-every", "0", "--identity", "dave", "--share-identity"])
            call = asyncio.get_running_loop().create_task(call_publish(args))
            await wait_until(lambda: any(p.shared_identity for p in bridge.publishers("room1")) or call.done(), 20,
                             "the call to share its identity")
            assert not call.done(), call.result()
            v = await view(http, f"{base}/whep/room1")
            status, body = await get(http, identity_url(v.resource) or "")
            assert status == 200 and parse_identity(body, "test").name == "dave"
            assert await call == 0
            assert (await get(http, f"{v.resource.url}/identity"))[0] == 404  # the call left: dropped
            await v.leave(http)
        assert "sharing identity 'dave'" in capsys.readouterr().out

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_the_page_shares_with_its_checkbox_only(home: Path) -> None:
    """The page's call (``/api/offer``) shares when its "Share my identity" box adds ``share_identity=1``."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from bridge.ice import rtc_configuration

    stored_identity(home, "alice")

    async def page_call(http, base: str, query: str) -> RTCPeerConnection:  # type: ignore[no-untyped-def]
        img, fps = frames()
        pc = RTCPeerConnection(rtc_configuration())
        pc.addTransceiver(ClipTrack(img, fps), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        async with http.post(f"{base}/api/offer?{query}", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
            assert r.status == 200, await r.text()
            ans = await r.json()
        await pc.setRemoteDescription(RTCSessionDescription(ans["sdp"], "answer"))
        return pc

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, _), \
                http_client() as http:
            pcs = [await page_call(http, base, "room=shared&identity=alice&share_identity=1"),
                   await page_call(http, base, "room=private&identity=alice")]
            v_shared = await view(http, f"{base}/whep/shared")
            v_private = await view(http, f"{base}/whep/private")
            status, body = await get(http, identity_url(v_shared.resource) or "")
            assert status == 200 and parse_identity(body, "test").name == "alice"
            assert identity_url(v_private.resource) is None
            assert (await get(http, f"{v_private.resource.url}/identity"))[0] == 404
            for v in (v_shared, v_private):
                await v.leave(http)
            for pc in pcs:
                await pc.close()

    asyncio.run(scenario())
