"""Latency and frame rate `likeness view` adds at the receiver (restoring towards a shared identity).

How it is measured: a real bridge in this process (loopback), a real clip (640x480, every frame
stamped with its index: ``harness.tracks``) published as `likeness call` publishes (relayed by the
bridge, its identity shared: enrolled from the clip's own frames). The same participant is then
received twice from the bridge's one shared encoder: by a plain WHEP receiver (what a receiver
without restoration shows after its decode) and by `likeness view`, run as a person runs it (its
own process), whose local re-serve a second plain receiver watches. Added latency per frame =
its arrival through `likeness view` - the same frame's arrival at the plain receiver: the view's
decode, restoration, encode and local hop, and the extra decode. Everything shares this machine's
cores (the publisher's encode, the bridge's relay encode, both receivers), as on a laptop in a call.

    python -m benchmarks.view_latency [--seconds 20] [--engine auto] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.extension_latency import added_latency
from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.extension import free_port
from benchmarks.harness.tracks import ClipTrack, FrameSink
from bridge.client import ENHANCED_HEADER, put_identity
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d7.mp4"
OUT = Path(__file__).parent / "results" / "2026-12-06" / "view-latency.json"
REPO = Path(__file__).resolve().parents[1]


def arrivals(sink: FrameSink, since: float) -> list[list[float]]:
    """[stamp, arrival ms] of the frames a sink got from ``since`` on."""
    return [[r.index, r.at * 1e3] for r in sink.frames if r.at >= since]


def summary(view_frames: list[list[float]], plain: list[list[float]], seconds: float) -> dict[str, Any]:
    lat = added_latency(view_frames, plain)
    times = [t for _, t in view_frames]
    gaps = np.diff(times) if len(times) > 1 else np.array([0.0])
    pct = {q: round(float(np.percentile(lat, p)), 1) for q, p in (("p50", 50), ("p95", 95))} if lat else None
    return {"frames": len(view_frames), "matched": len(lat), "fps": round(len(view_frames) / seconds, 1),
            "plain_fps": round(len(plain) / seconds, 1), "added_ms": pct,
            "added_ms_mean": round(float(np.mean(lat)), 1) if lat else None, "max_gap_ms": round(float(gaps.max()), 1)}


def view_cpu_s(pid: int) -> float:
    """User + system CPU seconds the view's process has used so far (all its threads)."""
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from enhancer.enroll import enroll_from_images

    frames, fps = load_clip(CLIP, 150, (640, 480))
    report = enroll_from_images("sender", frames[::25], home=tmp / "sender-home")
    identity = Path(report["path"]).read_bytes()
    port = free_port()
    async with serve_bridge(BridgeConfig(port=0), default_processor_factory) as (base, _), http_client() as http:
        pub = await publish(http, f"{base}/whip/room", ClipTrack(frames, fps), headers={ENHANCED_HEADER: "1"})
        await put_identity(http, pub.resource, identity, None)
        plain = await view(http, f"{base}/whep/room", release_on_marker=True)  # as browsers decode
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "enhancer.cli", "view", "--whep", f"{base}/whep/room", "--port", str(port),
            "--engine", args.engine, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            while not any("showing the restored stream" in line for line in lines):
                line = (await asyncio.wait_for(proc.stdout.readline(), 300)).decode()
                if not line:
                    raise RuntimeError(f"likeness view ended: {(await proc.communicate())[1].decode()[-2000:]}")
                lines.append(line.strip())
            via = await view(http, f"http://127.0.0.1:{port}/whep/view", release_on_marker=True)
            await asyncio.sleep(args.warmup)
            since = time.monotonic()
            cpu0 = view_cpu_s(proc.pid)
            await asyncio.sleep(args.seconds)
            result = summary(arrivals(via.sinks[0], since), arrivals(plain.sinks[0], since), args.seconds)
            # what the view costs its machine: its process's CPU time per second of the window
            result["view_cpu_cores"] = round((view_cpu_s(proc.pid) - cpu0) / args.seconds, 2)
            async with http.get(f"http://127.0.0.1:{port}/api/stats?room=view") as r:
                track = next(s for s in (await r.json())["rooms"]["view"] if s["role"] == "publisher")["track"]
            result["view"] = {k: track[k] for k in ("fps_in", "fps_out", "enhanced_share", "enhanced_share_total",
                                                    "reused_share_total", "passthrough_late", "passthrough_busy",
                                                    "dropped", "faces", "stage_ms", "deadline_ms")}
            result["view_said"] = lines
            await via.leave(http)
            proc.send_signal(signal.SIGINT)
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            result["view_exit"] = {"rc": proc.returncode, "final": out.decode().strip().splitlines()[-1:]}
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await plain.leave(http)
        await pub.leave(http)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not CLIP.is_file():
        print(f"view_latency: clip {CLIP} not found", file=sys.stderr)
        return 2
    from benchmarks.bench.machine import machine_info

    machine = machine_info()  # before the run: its load average is the machine's, not this benchmark's
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    doc = {"benchmark": "view_latency", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "clip": CLIP.name, "frame": "640x480 letterbox", "engine": args.engine, "seconds": args.seconds,
           "target": "added p95 <= 40 ms with the restored face at the source frame rate",
           "machine": machine, "result": result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    r = result
    print(f"added latency p50/p95 {r['added_ms']} ms, view fps {r['fps']} (plain {r['plain_fps']}), "
          f"enhanced {r['view']['enhanced_share_total']:.0%}, view process {r['view_cpu_cores']} cores -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
