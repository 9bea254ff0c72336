"""Bridge robustness: leaving viewers, vanishing publishers, bad requests, auth, caps, and no leaks.

Real aiortc peers on loopback and real HTTP requests against a running bridge.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
from pathlib import Path

import aiohttp
import cv2
import numpy as np
import pytest
from support.lifecycle import assert_no_leaks, snapshot, wait_until

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.client import WhipError
from bridge.config import BridgeConfig, check_config
from bridge.factory import default_processor_factory
from enhancer.cli import main as cli_main
from enhancer.errors import LikenessError
from enhancer.identity_store import CAMERA_SOURCE, IdentityStore

VIDEOS = videos_dir()
CLIP = VIDEOS / "LivePortrait__assets__examples__driving__d7.mp4"  # 480x480, 30 fps
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
TOKEN = "test-token-0123456789"


@needs_clip
@pytest.mark.timeout(90)
def test_viewer_leaves_and_publisher_vanishes_without_leaks() -> None:
    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 120)
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            before = snapshot()
            src = ClipTrack(frames, fps)
            pub = await publish(http, f"{base}/whip/r", src)
            v1 = await view(http, f"{base}/whep/r")
            v2 = await view(http, f"{base}/whep/r")
            await wait_until(lambda: all(v.sinks and len(v.sinks[0].frames) > 20 for v in (v1, v2)), 20,
                             "both viewers to receive frames")

            # a viewer leaves: the other keeps receiving, the publisher keeps publishing
            assert await v1.leave(http) == 200
            n = len(v2.sinks[0].frames)
            await asyncio.sleep(1.5)
            assert len(v2.sinks[0].frames) > n + 20
            assert sum(s.role == "viewer" for s in bridge.sessions.values()) == 1

            # the publisher vanishes mid-stream (connection closed, no DELETE)
            await pub.pc.close()
            await wait_until(lambda: not bridge.publishers("r"), 15, "the bridge to drop the publisher")
            async with http.post(f"{base}/whep/r", data="v=0\r\n", headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 404  # room has nobody to watch now
            n = len(v2.sinks[0].frames)
            await asyncio.sleep(0.5)
            assert len(v2.sinks[0].frames) <= n + 5  # the stream stopped, nothing stale keeps trickling
            assert await v2.leave(http) == 200
            assert not bridge.sessions
            await assert_no_leaks(before)

    asyncio.run(scenario())


@needs_clip
@pytest.mark.timeout(60)
def test_publisher_delete_mid_stream_ends_fanout() -> None:
    async def scenario() -> None:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0, max_sessions=2), default_processor_factory) as (
                base, bridge), http_client() as http:
            before = snapshot()
            pub = await publish(http, f"{base}/whip/r2", ClipTrack(frames, fps))
            v = await view(http, f"{base}/whep/r2")
            await wait_until(lambda: v.sinks and len(v.sinks[0].frames) > 10, 20, "frames")
            with pytest.raises(WhipError, match="HTTP 503"):  # capacity is bounded
                await view(http, f"{base}/whep/r2")
            track = next(iter(bridge.sessions.values())).track
            assert await pub.leave(http) == 200
            assert track is not None and track.readyState == "ended" and not track.worker_alive
            async with http.delete(pub.resource.url) as r:
                assert r.status == 404  # already gone
            assert await v.leave(http) == 200
            await assert_no_leaks(before)

    asyncio.run(scenario())


def _sdp_offer_like(video_codec: str = "VP8/90000") -> str:
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n"
        f"a=rtpmap:96 {video_codec}\r\na=sendonly\r\na=mid:0\r\na=rtcp-mux\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef0123456789\r\n"
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
    )


@pytest.mark.timeout(60)
def test_bad_requests_are_4xx_never_500(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path))
    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0, max_body_bytes=1 << 20), default_processor_factory) as (
                base, bridge), http_client() as http:
            before = snapshot()
            sdp_h = {"Content-Type": "application/sdp"}
            bad = {
                "empty": "",
                "garbage": "hello, I am not SDP",
                "no video": "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
                "broken m-line": "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video x UDP\r\n",
                "no ICE credentials": _sdp_offer_like().replace("a=ice-ufrag:abcd\r\n", ""),
                "no codec in common": _sdp_offer_like("FOO/90000"),
                "binary": "\x00\x01\x02",
            }
            for what, body in bad.items():
                async with http.post(f"{base}/whip/r", data=body.encode(), headers=sdp_h) as r:
                    text = await r.text()
                    assert r.status == 400, (what, r.status, text)
                    assert text.strip() and "\n" not in text.strip(), (what, text)
            async with http.post(f"{base}/whip/r", data=b"\xff\xfe", headers=sdp_h) as r:
                assert r.status == 400
            async with http.post(f"{base}/whip/r", data="v=0", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 415
            async with http.post(f"{base}/whip/r", data="v=0\r\n" + "a=x\r\n" * 20000, headers=sdp_h) as r:
                assert r.status == 413
            async with http.post(f"{base}/whip/bad%20room", data=_sdp_offer_like(), headers=sdp_h) as r:
                assert r.status == 400
            async with http.post(f"{base}/whep/nobody-here", data=_sdp_offer_like(), headers=sdp_h) as r:
                assert r.status == 404
            async with http.patch(f"{base}/whip/r/abc", data="a=end-of-candidates", headers=sdp_h) as r:
                assert r.status == 405 and r.headers.get("Allow") == "DELETE"
            async with http.delete(f"{base}/whip/r/unknown") as r:
                assert r.status == 404
            async with http.delete(f"{base}/whep/r/unknown") as r:
                assert r.status == 404
            async with http.post(f"{base}/api/offer", data="not json") as r:
                assert r.status == 400 and "error" in await r.json()
            async with http.post(f"{base}/api/offer?identity=../../etc", json={"sdp": "v=0", "type": "offer"}) as r:
                assert r.status == 400
            async with http.post(f"{base}/whip/r?identity=no-such-person", data=_sdp_offer_like(),
                                 headers=sdp_h) as r:
                assert r.status == 400 and "no-such-person" in await r.text()
            # enrolment uploads are capped by max_body_bytes (1 MiB here)
            form = aiohttp.FormData()
            form.add_field("image", b"\xff" * (2 << 20), filename="big.jpg", content_type="image/jpeg")
            async with http.post(f"{base}/api/enroll?name=alice", data=form) as r:
                assert r.status == 413
            async with http.post(f"{base}/api/enroll?name=../x", data=b"") as r:
                assert r.status == 400
            async with http.post(f"{base}/api/enroll?name=alice&source=scanner", data=b"") as r:
                assert r.status == 400 and "source" in (await r.json())["error"]
            ok, jpg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
            form = aiohttp.FormData()
            form.add_field("image", jpg.tobytes(), filename="a.jpg", content_type="image/jpeg")
            form.add_field("image", b"not a jpeg", filename="b.jpg", content_type="image/jpeg")
            async with http.post(f"{base}/api/enroll?name=bridge_test_nobody", data=form) as r:
                body = await r.json()
                # a grey square has no face: an input error (422) with per-image verdicts; nothing stored
                assert r.status == 422, body
                assert [i["file"] for i in body["images"]] == ["a.jpg", "b.jpg"]
                assert body["images"][0]["accepted"] is False and body["images"][0]["decoded"] is True
                assert body["images"][1] == {"index": 1, "file": "b.jpg", "accepted": False,
                                             "reason": "not a decodable image"}
                assert "passed the checks" in body["error"] and body["report"]["accepted"] == 0, body
            assert not (tmp_path / "identities" / "bridge_test_nobody.safetensors").exists()
            async with http.get(f"{base}/") as r:
                assert r.status == 200 and "Likeness" in await r.text()
            async with http.get(f"{base}/static/app.js") as r:
                assert r.status == 200
            assert not bridge.sessions
            await assert_no_leaks(before)

    asyncio.run(scenario())


@pytest.mark.timeout(30)
def test_token_guards_every_endpoint() -> None:
    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0, token=TOKEN), default_processor_factory) as (base, _), \
                http_client() as http:
            sdp_h = {"Content-Type": "application/sdp"}
            calls = [("POST", "/whip/r"), ("POST", "/whep/r"), ("DELETE", "/whip/r/x"), ("DELETE", "/whep/r/x"),
                     ("POST", "/api/offer"), ("POST", "/api/enroll?name=a"), ("GET", "/api/stats"),
                     ("GET", "/api/identities"), ("GET", "/api/config")]
            for auth in (None, "Bearer wrong-token-value", "Basic " + TOKEN, f"Bearer {TOKEN}x"):
                headers = dict(sdp_h, **({"Authorization": auth} if auth else {}))
                for method, path in calls:
                    async with http.request(method, base + path, data="v=0\r\n", headers=headers) as r:
                        assert r.status == 401, (auth, method, path, r.status)
                        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
            ok = dict(sdp_h, Authorization=f"Bearer {TOKEN}")
            async with http.post(f"{base}/whip/r", data="garbage", headers=ok) as r:
                assert r.status == 400  # past auth, now the SDP is judged
            async with http.get(f"{base}/api/config", headers=ok) as r:
                assert r.status == 200 and (await r.json())["auth"] is True
            async with http.get(f"{base}/") as r:
                assert r.status == 200  # the page itself is public; it asks for the token

    asyncio.run(scenario())


def test_refuses_public_bind_without_token(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LikenessError, match="without a token"):
        check_config(BridgeConfig(host="0.0.0.0"))
    check_config(BridgeConfig(host="0.0.0.0", token=TOKEN))
    check_config(BridgeConfig(host="127.0.0.1"))
    check_config(BridgeConfig(host="::1"))
    assert cli_main(["serve", "--host", "0.0.0.0", "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without a token" in err[0]
    assert cli_main(["call", "--whip", "ftp://x/whip/r"]) == 2
    assert cli_main(["serve", "--bitrate", "lots"]) == 2


@pytest.mark.timeout(30)
def test_call_reports_unreachable_endpoint(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    if not CLIP.is_file():
        pytest.skip("clip missing")
    import aioice.ice

    # `call` to a loopback URL adds 127.0.0.1 to ICE gathering process-wide; undo it afterwards
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)
    rc = cli_main(["call", "--whip", "http://127.0.0.1:9/whip/r", "--source", str(CLIP), "--duration", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot reach" in err[0], err


@pytest.mark.timeout(60)
def test_call_publishes_and_refused_token(capsys: pytest.CaptureFixture[str]) -> None:
    """`likeness call` publishes a file to a token-protected bridge, and reports a refused token."""
    if not CLIP.is_file():
        pytest.skip("clip missing")

    async def scenario() -> None:
        from enhancer.commands.call import publish as call_publish

        async with serve_bridge(BridgeConfig(port=0, token=TOKEN), default_processor_factory) as (base, bridge):
            from enhancer.cli import build_parser

            # The real parser, so the test sees exactly the attributes `likeness call` gets.
            args = build_parser().parse_args(
                ["call", "--whip", f"{base}/whip/callroom", "--token", TOKEN, "--source", str(CLIP),
                 "--duration", "3", "--engine", "bicubic", "--codec", "vp8", "--bitrate", "800k", "--stats-every", "0"]
            )
            seen: list[int] = []

            async def watch() -> None:
                while True:
                    seen.append(len(bridge.publishers("callroom")))
                    await asyncio.sleep(0.2)

            w = asyncio.get_running_loop().create_task(watch())
            assert await call_publish(args) == 0
            w.cancel()
            assert max(seen) == 1 and not bridge.sessions  # joined, then left with DELETE
            args.token = "wrong-token-value"
            with pytest.raises(LikenessError, match="HTTP 401"):
                await call_publish(args)

    asyncio.run(scenario())
    out = capsys.readouterr().out
    assert "publishing to" in out and '"enhanced"' in out


@pytest.mark.timeout(30)
def test_identities_listed_from_likeness_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path))
    if importlib.util.find_spec("enhancer.identity_store") is not None:
        from enhancer.identity_store import IDENTITY_SHAPE, IdentityStore

        store = IdentityStore(tmp_path)
        for i, name in enumerate(("alice", "bob")):
            store.save(name, np.full(IDENTITY_SHAPE, i, np.float32), encoder_id="test", model_id="test", n_refs=1)
        shape = IDENTITY_SHAPE
    else:
        from safetensors.numpy import save_file

        (tmp_path / "identities").mkdir()
        for i, name in enumerate(("alice", "bob")):
            save_file({"identity": np.full(8, i, np.float32)}, str(tmp_path / "identities" / f"{name}.safetensors"))
        shape = (8,)
    (tmp_path / "identities" / "notes.txt").write_text("ignored")

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, _), \
                http_client() as http:
            async with http.get(f"{base}/api/identities") as r:
                assert (await r.json())["identities"] == ["alice", "bob"]

    asyncio.run(scenario())
    assert default_processor_factory("alice").identity.shape == shape
    with pytest.raises(LikenessError):
        default_processor_factory("carol")


@pytest.mark.timeout(60)
def test_serve_command_starts_and_stops_cleanly(tmp_path: Path) -> None:
    """`likeness serve` as a user runs it: serves the page and API, SIGTERM stops it with exit 0."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LIKENESS_HOME=str(tmp_path), LIKENESS_TOKEN="")
    proc = subprocess.Popen(
        [sys.executable, "-m", "enhancer.cli", "serve", "--port", str(port), "--loopback-ice", "only",
         "--codec", "h264", "--bitrate", "1M"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert f"http://127.0.0.1:{port}/" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/config", timeout=10) as r:
            cfg = json.loads(r.read())
        assert cfg["codec"] == "h264" and cfg["bitrate"] == 1_000_000 and cfg["loopback"] == "only"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert b"Likeness" in r.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@needs_clip
@pytest.mark.timeout(90)
def test_two_publishers_fan_out_and_enrol_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two publishers enhance at once (two worker threads) while an enrolment runs; a viewer gets both.

    Face detection shares one dlib detector per process; running it from two threads at once
    aborts the process, so this also guards the bridge's detector lock.
    """
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path))
    clip2 = VIDEOS / "LivePortrait__assets__examples__driving__d8.mp4"

    async def scenario() -> None:
        f1, fps1 = load_clip(CLIP, 60)
        f2, fps2 = load_clip(clip2 if clip2.is_file() else CLIP, 60, size=(640, 480))  # another size: harder on dlib
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, bridge), \
                http_client() as http:
            before = snapshot()
            p1 = await publish(http, f"{base}/whip/two", ClipTrack(f1, fps1))
            p2 = await publish(http, f"{base}/whip/two", ClipTrack(f2, fps2))
            v = await view(http, f"{base}/whep/two", videos=3)
            assert v.resource.headers["X-Likeness-Publishers"].split(",") == [p.id for p in bridge.publishers("two")]
            await wait_until(lambda: len(v.sinks) == 2 and all(len(s.frames) > 15 for s in v.sinks), 30,
                             "frames from both publishers")
            form = aiohttp.FormData()
            for i in range(4):
                ok, jpg = cv2.imencode(".jpg", f1[i * 10])
                form.add_field("image", jpg.tobytes(), filename=f"{i}.jpg", content_type="image/jpeg")
            async with http.post(f"{base}/api/enroll?name=two_test&source=camera", data=form) as r:
                body = await r.json()
            # four frontal, sharp frames of one face: all accepted and stored under $LIKENESS_HOME
            assert r.status == 200, body
            # the page's webcam capture is stored as such (it sets the detail transfer's dial)
            assert IdentityStore(tmp_path).read("two_test").metadata["source"] == CAMERA_SOURCE
            assert body["report"]["accepted"] == 4 and body["report"]["n_refs"] == 4, body["report"]
            assert [(i["file"], i["accepted"]) for i in body["images"]] == [(f"{i}.jpg", True) for i in range(4)]
            assert (tmp_path / "identities" / "two_test.safetensors").is_file()
            async with http.get(f"{base}/api/identities") as r:
                assert "two_test" in (await r.json())["identities"]
            counts = [len(s.frames) for s in v.sinks]
            await asyncio.sleep(1.0)
            assert all(len(s.frames) > c for s, c in zip(v.sinks, counts, strict=True))  # still flowing
            tracks = [p.track for p in bridge.publishers("two")]
            assert all(t is not None and t.stats()["enhanced"] > 0 for t in tracks)
            for peer in (v, p1, p2):
                assert await peer.leave(http) == 200
            await assert_no_leaks(before)

    asyncio.run(scenario())
