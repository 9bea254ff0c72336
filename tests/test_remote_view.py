"""The page's watch mode for a room on another bridge (``POST /api/view``): the receiving bridge pulls
the room over WHEP, restores the face on its side towards the identity the participant shares (or
shows it as received with the switch off), re-serves it in a room of its own, and lets everything go
when the page stops watching or the participant leaves.

Two real bridges in this process, real aiortc peers and VP8 on loopback, the packaged student
(torch engine), a real clip with a face, a real enrolment.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from support.lifecycle import wait_until
from support.shared_identity import enrolled_identity

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.client import ENHANCED_HEADER, put_identity
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from bridge.remote_view import SILENT_S
from enhancer.commands.assemble import make_view_builder

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"  # 480x480, 30 fps, one face
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
RELAYED = {ENHANCED_HEADER: "1"}  # the sender enhanced its video itself, as `likeness call` does
TOKEN = "remote-view-token-0123456789"


async def post_view(http, base: str, body: object, token: str | None = None) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.post(f"{base}/api/view", json=body, headers=headers) as r:
        return r.status, (await r.json() if r.content_type == "application/json" else {"text": await r.text()})


async def room_publisher(http, base: str, room: str) -> dict | None:  # type: ignore[no-untyped-def]
    async with http.get(f"{base}/api/stats?room={room}") as r:
        body = await r.json()
    return next((s for s in body["rooms"].get(room, []) if s["role"] == "publisher"), None)


@needs_clip
@pytest.mark.timeout(120)
def test_a_room_of_another_bridge_is_restored_here_and_let_go(tmp_path: Path) -> None:
    frames, fps = load_clip(CLIP, 150)
    identity = enrolled_identity(tmp_path / "sender-home", "alice", frames[::20])

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (sender, sender_bridge), \
                serve_bridge(BridgeConfig(port=0), default_processor_factory,
                             make_view_builder("torch")) as (here, bridge), http_client() as http:
            pub = await publish(http, f"{sender}/whip/room1", ClipTrack(frames, fps), headers=RELAYED)
            await put_identity(http, pub.resource, identity, None)
            status, restored = await post_view(http, here, {"whep": f"{sender}/whep/room1"})
            assert status == 201, restored
            assert restored["how"].startswith("identity: restoring towards the shared identity 'alice'"), restored
            assert restored["room"].startswith("view-") and restored["note"] is None
            status, raw = await post_view(http, here, {"whep": f"{sender}/whep/room1", "restore": False})
            assert status == 201 and raw["how"].startswith("raw: restoration off"), raw

            # what the page then watches: this bridge's own rooms
            watcher = await view(http, f"{here}/whep/{restored['room']}")
            await wait_until(lambda: watcher.sinks and len(watcher.sinks[0].frames) > 20, 30, "restored frames")
            local: dict = {}

            async def restoring() -> bool:
                local.update(await room_publisher(http, here, restored["room"]) or {})
                return local.get("track", {}).get("enhanced", 0) > 0

            t0 = time.monotonic()
            while not await restoring() and time.monotonic() - t0 < 30:
                await asyncio.sleep(0.2)
            assert local["identity"] == "alice" and local["track"]["processing"] == "enhance", local
            assert local["track"]["enhanced"] > 0, local["track"]  # faces restored here, not only passed on
            as_received = await room_publisher(http, here, raw["room"])
            assert as_received and as_received["track"]["processing"] == "relay", as_received
            await watcher.leave(http)

            # the page stops watching: the local room empties and the other bridge's viewer session goes
            async with http.delete(f"{here}/api/view/{restored['id']}") as r:
                assert r.status == 204
            async with http.delete(f"{here}/api/view/{restored['id']}") as r:
                assert r.status == 404
            assert await room_publisher(http, here, restored["room"]) is None
            await wait_until(lambda: sum(s.role == "viewer" for s in sender_bridge.sessions.values()) == 1, 10,
                             "the sender's bridge to drop the closed view's session")

            # the participant leaves: the remaining view ends by itself once the video stops
            await pub.leave(http)
            await wait_until(lambda: not bridge.remote_views.views and not bridge.sessions, SILENT_S + 10,
                             "the view of a participant who left to close")

    asyncio.run(scenario())


@pytest.mark.timeout(60)
def test_bad_view_requests_are_one_line_answers() -> None:
    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0, token=TOKEN), default_processor_factory) as (sender, _), \
                serve_bridge(BridgeConfig(port=0), default_processor_factory,
                             make_view_builder("bicubic")) as (here, bridge), \
                serve_bridge(BridgeConfig(port=0), default_processor_factory) as (plain, _), \
                http_client() as http:
            cases = {
                "not JSON": (here, "whep"),
                "no whep": (here, {"url": "x"}),
                "ftp": (here, {"whep": "ftp://example/whep/x"}),
                "restore not bool": (here, {"whep": f"{sender}/whep/a", "restore": "yes"}),
                "another machine, loopback ICE only": (here, {"whep": "http://192.0.2.7:8765/whep/main"}),
                "unreachable": (here, {"whep": f"http://127.0.0.1:{_free_port()}/whep/a"}),
                "no token for the other bridge": (here, {"whep": f"{sender}/whep/a"}),
                "empty room": (here, {"whep": f"{sender}/whep/a", "token": TOKEN}),
                "a bridge that restores no remote streams": (plain, {"whep": f"{sender}/whep/a"}),
            }
            got = {name: await post_view(http, base, body) for name, (base, body) in cases.items()}
            async with http.delete(f"{here}/api/view/nope") as r:
                got["unknown view"] = (r.status, await r.json())
            print(got)
            want = {"not JSON": 400, "no whep": 400, "ftp": 400, "restore not bool": 400,
                    "another machine, loopback ICE only": 400, "unreachable": 502,
                    "no token for the other bridge": 502, "empty room": 502,
                    "a bridge that restores no remote streams": 501, "unknown view": 404}
            assert {k: s for k, (s, _) in got.items()} == want
            for _, body in got.values():
                assert len(body["error"].splitlines()) == 1 and "Traceback" not in body["error"], body
            assert "--loopback-ice add" in got["another machine, loopback ICE only"][1]["error"]
            assert "connection refused" in got["unreachable"][1]["error"]
            assert "HTTP 401" in got["no token for the other bridge"][1]["error"]
            assert "HTTP 404" in got["empty room"][1]["error"]
            assert not bridge.remote_views.views and not bridge.sessions  # nothing left half-open

    asyncio.run(scenario())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
