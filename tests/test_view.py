"""`likeness view`: a participant's stream pulled over WHEP, restored here, re-served on a local bridge.

Real bridge in-process, real aiortc peers and VP8 on loopback, the packaged student (torch engine),
a real clip with a face. The end-to-end run is the CLI as a separate process with an empty home, so
what it writes (nothing) can be checked; the others run the command in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from support.cpuwatch import CpuWatch
from support.lifecycle import wait_until
from support.shared_identity import enrolled_identity, stored_identity

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.client import ENHANCED_HEADER, put_identity
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory

REPO = Path(__file__).resolve().parents[1]
CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"  # 480x480, 30 fps, one face
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
TOKEN = "view-token-0123456789"
RELAYED = {ENHANCED_HEADER: "1"}  # the publisher enhanced its video itself, as `likeness call` does: relayed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def stats_of(http, port: int) -> dict:  # type: ignore[no-untyped-def]
    """The local bridge's one publisher (the received stream) as its /api/stats describes it."""
    async with http.get(f"http://127.0.0.1:{port}/api/stats?room=view") as r:
        body = await r.json()
    return next(s for s in body["rooms"]["view"] if s["role"] == "publisher")


@needs_clip
@pytest.mark.timeout(90)
def test_view_restores_the_shared_identity_at_the_source_rate_and_writes_nothing(tmp_path: Path) -> None:
    frames, fps = load_clip(CLIP, 120)
    identity = enrolled_identity(tmp_path / "publisher-home", "alice", frames[::20])
    empty = tmp_path / "receiver-home"  # the receiver's HOME, LIKENESS_HOME and working folder
    empty.mkdir()
    port = free_port()

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, _), \
                http_client() as http:
            source = ClipTrack(frames, fps)
            pub = await publish(http, f"{base}/whip/room1", source, headers=RELAYED)
            await put_identity(http, pub.resource, identity, None)
            env = {**os.environ, "HOME": str(empty), "LIKENESS_HOME": str(empty / "likeness"),
                   "PYTHONPATH": str(REPO)}
            env.pop("XDG_DATA_HOME", None)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "enhancer.cli", "view", "--whep", f"{base}/whep/room1", "--port", str(port),
                "--engine", "torch", cwd=empty, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out: list[str] = []
            try:
                assert proc.stdout is not None
                while not any("showing the restored stream" in line for line in out):
                    line = (await asyncio.wait_for(proc.stdout.readline(), 40)).decode()
                    assert line, f"view ended early: {out} {(await proc.stderr.read()).decode()}"  # type: ignore[union-attr]
                    out.append(line)
                said = "identity: restoring towards the shared identity 'alice'"
                assert any(line.startswith(said) for line in out), out
                watcher = await view(http, f"http://127.0.0.1:{port}/whep/view")
                await wait_until(lambda: watcher.sinks and len(watcher.sinks[0].frames) > 20, 20,
                                 "restored frames from the local bridge")
                since = time.monotonic()
                cpu = CpuWatch().start()
                await asyncio.sleep(4)
                got = watcher.sinks[0].fps(since)
                local = await stats_of(http, port)
                cpu.stop()
                print(f"\nreceived {got:.1f} fps of {fps:.0f}; local stream: {local['track']}; {cpu.note()}")
                assert got >= 0.75 * fps, got  # roughly the source frame rate: frames flow, none freeze
                assert local["identity"] == "alice" and local["track"]["processing"] == "enhance"
                # restored, not only passed through (a starved machine restores fewer in the window)
                assert local["track"]["enhanced"] > (0 if cpu.busy else 30), (local["track"], cpu.note())
                await watcher.leave(http)
                proc.send_signal(signal.SIGINT)  # Ctrl-C: a clean end
                rest, err = await asyncio.wait_for(proc.communicate(), 20)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
            assert proc.returncode == 0, err.decode()
            assert "Traceback" not in err.decode()
            final = json.loads(rest.decode().strip().splitlines()[-1])
            assert final["restored_with"] == "identity" and final["enhanced"] > (0 if cpu.busy else 30), final
            await pub.leave(http)
        # nothing written but onnxruntime's own device id, which importing onnxruntime (the learned reference
        # weighting runs in it) leaves in ~/.cache; no identity, no Likeness folder, no engine cache
        ort = empty / ".cache" / "Microsoft" / "DeveloperTools" / ".onnxruntime"
        written = [p for p in empty.rglob("*") if p.is_file()]
        assert all(p.parent == ort for p in written), written
        assert not (empty / "likeness").exists()
        assert not any(b"likeness-identity" in p.read_bytes() for p in written)

    asyncio.run(scenario())


@needs_clip
@pytest.mark.timeout(60)
def test_an_identity_of_another_model_is_named_and_the_raw_stream_shown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from enhancer.cli import build_parser
    from enhancer.commands.view import watch

    frames, fps = load_clip(CLIP, 60)
    other = stored_identity(tmp_path / "publisher-home", "erin", encoder_id="enc-000000000000")
    port = free_port()

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, _), \
                http_client() as http:
            pub = await publish(http, f"{base}/whip/room1", ClipTrack(frames, fps), headers=RELAYED)
            await put_identity(http, pub.resource, other, None)
            args = build_parser().parse_args(["view", "--whep", f"{base}/whep/room1", "--port", str(port),
                                              "--engine", "torch", "--duration", "5"])
            task = asyncio.get_running_loop().create_task(watch(args))
            await wait_until(lambda: printed.append(capsys.readouterr().out) or "showing the restored stream"
                             in "".join(printed) or task.done(), 20, "the view to start")
            assert not task.done(), task.result()
            watcher = await view(http, f"http://127.0.0.1:{port}/whep/view")
            await wait_until(lambda: watcher.sinks and len(watcher.sinks[0].frames) > 20, 20, "raw frames")
            local = await stats_of(http, port)
            assert local["track"]["processing"] == "relay" and local["track"]["enhanced"] == 0, local
            await watcher.leave(http)
            assert await task == 0
            await pub.leave(http)

    capsys.readouterr()
    printed: list[str] = []
    asyncio.run(scenario())
    out = "".join(printed) + capsys.readouterr().out
    lines = [line for line in out.splitlines() if "enc-000000000000" in line]
    assert len(lines) == 1 and lines[0].startswith("raw: the shared identity 'erin' is for model model-test"), out
    assert json.loads(out.strip().splitlines()[-1])["restored_with"] == "raw"


@pytest.mark.timeout(60)
def test_bad_url_unreachable_unauthorised_or_empty_room_is_one_line_and_non_zero(tmp_path: Path) -> None:
    from enhancer.cli import main

    async def run(argv: list[str]) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "enhancer.cli", "view", *argv, "--engine", "bicubic",
            "--port", str(free_port()), cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "LIKENESS_HOME": str(tmp_path / "home")})
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    assert main(["view", "--whep", "ftp://example/whep/x"]) == 2

    async def scenario() -> None:
        async with serve_bridge(BridgeConfig(port=0, token=TOKEN), default_processor_factory) as (base, _):
            dead = f"http://127.0.0.1:{free_port()}/whep/room1"
            results = await asyncio.gather(run(["--whep", f"{base}/whep/room1"]),
                                           run(["--whep", dead]),
                                           run(["--whep", f"{base}/whep/room1", "--token", TOKEN]))
        (rc401, err401), (rc_dead, err_dead), (rc404, err404) = results
        for rc, err in results:
            assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "HTTP 401" in err401 and "connection refused" in err_dead and "HTTP 404" in err404

    asyncio.run(scenario())
