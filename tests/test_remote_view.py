"""The page's watch mode for a room on another bridge (``POST /api/view``): the receiving bridge pulls
the room over WHEP, restores the face on its side towards the identity the participant shares (or
shows it as received with the switch off), re-serves it in a room of its own, and lets everything go
when the page stops watching or the participant leaves.

Two real bridges in this process, real aiortc peers and VP8 on loopback, the packaged student
(torch engine), a real clip with a face, a real enrolment.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from support.lifecycle import wait_until
from support.shared_identity import enrolled_identity

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.netlab import ShapedLink, unavailable
from benchmarks.harness.tracks import ClipTrack
from bridge.client import ENHANCED_HEADER, put_identity
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from bridge.remote_view import SILENT_S
from enhancer.commands.assemble import make_view_builder

REPO = Path(__file__).resolve().parents[1]
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
            # the received stream keeps the view's latency budget, not a publisher's 1.5 frames
            assert local["track"]["deadline_ms"] == BridgeConfig().view_deadline_ms, local["track"]
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


@needs_clip
@pytest.mark.timeout(60)
def test_a_view_nobody_watches_is_let_go() -> None:
    """A page closed without stopping its view sends no DELETE: the view ends once nobody has
    watched its room for ``view_unwatched_s``, and the other bridge's session goes with it."""
    frames, fps = load_clip(CLIP, 60)

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (sender, far), \
                serve_bridge(BridgeConfig(port=0, view_unwatched_s=2.0), default_processor_factory,
                             make_view_builder("bicubic")) as (here, bridge), http_client() as http:
            pub = await publish(http, f"{sender}/whip/r", ClipTrack(frames, fps), headers=RELAYED)
            status, v = await post_view(http, here, {"whep": f"{sender}/whep/r"})
            assert status == 201, v
            watcher = await view(http, f"{here}/whep/{v['room']}")  # watched a while, then the tab is gone
            await wait_until(lambda: watcher.sinks and len(watcher.sinks[0].frames) > 10, 20, "frames")
            await asyncio.sleep(3.0)
            assert v["id"] in bridge.remote_views.views  # watched: kept past view_unwatched_s
            await watcher.pc.close()  # no DELETE, as when a tab is closed
            await wait_until(lambda: not bridge.remote_views.views, 20, "the unwatched view to end")
            await wait_until(lambda: sorted(s.role for s in far.sessions.values()) == ["publisher"], 10,
                             "the other bridge's viewer session to go")
            await pub.leave(http)

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


@needs_clip
@pytest.mark.skipif(unavailable() is not None, reason=f"another network: {unavailable()}")
@pytest.mark.timeout(180)
def test_a_bridge_on_another_network_is_watched_and_restored_here(tmp_path: Path) -> None:
    """The sender's bridge as a separate `likeness serve` process in its own network namespace, bound
    to its own address with a token, reached only over a veth link (the nearest thing to another
    machine here): both `likeness view` and the page's /api/view receive its room and restore the
    participant's face towards the identity they share. The namespace has only its loopback and the
    link, and the far bridge gathers its link address only, so the media crosses the link."""
    frames, fps = load_clip(CLIP, 150)
    identity = enrolled_identity(tmp_path / "sender-home", "alice", frames[::20])
    port, view_port = _free_port(), _free_port()
    env = {**os.environ, "LIKENESS_HOME": str(tmp_path / "far-home"), "PYTHONPATH": str(REPO)}

    async def scenario(link: ShapedLink) -> None:
        far_base = f"http://{link.peer_ip}:{port}"
        far = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", link.ns, sys.executable, "-m", "enhancer.cli", "serve", "--host", link.peer_ip,
            "--port", str(port), "--token", TOKEN, "--engine", "bicubic", cwd=tmp_path, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            assert far.stdout is not None
            first = (await asyncio.wait_for(far.stdout.readline(), 60)).decode()
            assert first.startswith("likeness bridge on"), first
            # this side: a bridge on the host's end of the link (a non-loopback bind needs its own token)
            async with serve_bridge(BridgeConfig(host=link.host_ip, port=0, token=TOKEN + "-here"),
                                    default_processor_factory, make_view_builder("torch")) as (here, bridge), \
                    http_client() as http:
                pub = await publish(http, f"{far_base}/whip/r", ClipTrack(frames, fps), token=TOKEN, headers=RELAYED)
                await put_identity(http, pub.resource, identity, TOKEN)
                status, v = await post_view(http, here, {"whep": f"{far_base}/whep/r", "token": TOKEN},
                                            token=TOKEN + "-here")
                assert status == 201, v
                assert v["how"].startswith("identity: restoring towards the shared identity 'alice'"), v
                watcher = await view(http, f"{here}/whep/{v['room']}", token=TOKEN + "-here")
                await wait_until(lambda: watcher.sinks and len(watcher.sinks[0].frames) > 20, 40, "frames via the link")
                local_stats: dict = {}
                t0 = time.monotonic()
                while local_stats.get("track", {}).get("enhanced", 0) == 0 and time.monotonic() - t0 < 30:
                    async with http.get(f"{here}/api/stats?room={v['room']}",
                                        headers={"Authorization": f"Bearer {TOKEN}-here"}) as r:
                        body = await r.json()
                    local_stats = next(s for s in body["rooms"][v["room"]] if s["role"] == "publisher")
                    await asyncio.sleep(0.2)
                assert local_stats["identity"] == "alice" and local_stats["track"]["enhanced"] > 0, local_stats
                await watcher.leave(http, TOKEN + "-here")
                async with http.delete(f"{here}/api/view/{v['id']}",
                                       headers={"Authorization": f"Bearer {TOKEN}-here"}) as r:
                    assert r.status == 204

                # the CLI, as a process of its own on this side, watched on its local page's endpoint
                cli = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "enhancer.cli", "view", "--whep", f"{far_base}/whep/r", "--token", TOKEN,
                    "--port", str(view_port), "--engine", "torch", "--duration", "12", cwd=tmp_path,
                    env={**env, "LIKENESS_HOME": str(tmp_path / "here-home")},
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                assert cli.stdout is not None
                said: list[str] = []
                while not any("showing the restored stream" in line for line in said):
                    line = (await asyncio.wait_for(cli.stdout.readline(), 60)).decode()
                    assert line, f"view ended early: {said} {(await cli.stderr.read()).decode()[-2000:]}"  # type: ignore[union-attr]
                    said.append(line)
                assert any(line.startswith("identity: restoring towards the shared identity 'alice'") for line in said)
                shown = await view(http, f"http://127.0.0.1:{view_port}/whep/view")
                await wait_until(lambda: shown.sinks and len(shown.sinks[0].frames) > 20, 40, "the CLI's frames")
                await shown.leave(http)
                rest, err = await asyncio.wait_for(cli.communicate(), 60)
                assert cli.returncode == 0, err.decode()[-2000:]
                final = json.loads(rest.decode().strip().splitlines()[-1])
                assert final["restored_with"] == "identity" and final["frames_out"] > 20, final
                await pub.leave(http, TOKEN)
        finally:
            if far.returncode is None:
                far.send_signal(signal.SIGINT)
                try:
                    await asyncio.wait_for(far.wait(), 15)
                except TimeoutError:
                    far.kill()

    with ShapedLink() as link:
        asyncio.run(scenario(link))
