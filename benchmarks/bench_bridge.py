"""Sustained fps and added latency through the WebRTC bridge (publisher -> bridge -> viewer, loopback).

Runs the same real clip (letterboxed to 640x480, one face) twice through a real bridge:
once with a passthrough processor (what the bridge costs without enhancement: two
encode/decode hops and the relay) and once with the full pipeline on BicubicEngine, which
isolates the bridge, tracker and paste-back from the generator (the student through WebRTC
is ``likeness bench``'s webrtc section). Added latency = enhanced p50 - passthrough p50. Every frame is
stamped with its index, so latency is measured per frame, glass to glass, in one process.

    python -m benchmarks.bench_bridge [--seconds 20] [--codec vp8|h264] [--out benchmarks/results/...]

The load average is recorded: on a shared 2-core machine, other processes change the result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import psutil

from benchmarks.harness.calls import http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack, latencies_ms
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory, warm_detectors
from enhancer.pipeline import FramePipeline, FrameResult

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"
SIZE = (640, 480)


class Passthrough:
    """A processor that changes nothing: the bridge's own cost."""

    def process(self, frame_bgr: np.ndarray, t: float | None = None) -> FrameResult:
        return FrameResult(frame_bgr, 0, False, {})


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


async def run(label: str, factory, frames: list[np.ndarray], fps: float, seconds: float, codec: str,
              bitrate: int | None, frame_release: str = "marker", viewer_marker: bool = False) -> dict:
    proc = psutil.Process()
    src = ClipTrack(frames, fps)
    config = BridgeConfig(port=0, codec=codec, bitrate=bitrate, frame_release=frame_release)
    async with serve_bridge(config, factory) as (base, bridge), http_client() as http:
        pub = await publish(http, f"{base}/whip/bench", src, codec=codec, bitrate=bitrate)
        viewer = await view(http, f"{base}/whep/bench", release_on_marker=viewer_marker)
        await asyncio.sleep(3.0)  # connection set-up, first keyframes, detector warm-up
        t0 = time.monotonic()
        proc.cpu_percent(None)
        await asyncio.sleep(seconds)
        t1 = time.monotonic()
        cpu = proc.cpu_percent(None)
        stats = bridge.stats()["rooms"]["bench"]
        sink = viewer.sinks[0]
        lat = latencies_ms(sink, src, since=t0)
        got = [r for r in sink.frames if t0 <= r.at <= t1]
        sent = [t for t in src.sent_at.values() if t0 <= t <= t1]
        track = next(s for s in stats if s["role"] == "publisher")["track"]
        await viewer.leave(http)
        await pub.leave(http)
    return {
        "label": label,
        "frame_release": frame_release,
        "viewer_release": "marker" if viewer_marker else "aiortc",
        "viewer_fps": round(len(got) / (t1 - t0), 2),
        "source_fps": round(len(sent) / (t1 - t0), 2),
        "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                       "mean": round(statistics.fmean(lat), 1) if lat else None, "n": len(lat)},
        "process_cpu_percent": round(cpu, 1),
        "rss_mib": round(proc.memory_info().rss / 2**20, 1),
        "bridge_track": {k: track[k] for k in ("fps_in", "fps_out", "enhanced_share_total", "reused_share_total",
                                               "faces", "stage_ms", "passthrough_late", "passthrough_busy",
                                               "dropped", "deadline_ms")},
    }


def pipeline_only(frames: list[np.ndarray]) -> dict:
    """FramePipeline.process alone on the same frames (no WebRTC), for reference."""
    p = FramePipeline(default_processor_factory(None).engine)
    ms = []
    for i, f in enumerate(frames):
        t = time.perf_counter()
        p.process(f, i / 30)
        ms.append((time.perf_counter() - t) * 1e3)
    ms = ms[10:]
    return {"mean_ms": round(statistics.fmean(ms), 2), "p50_ms": pct(ms, 50), "p90_ms": pct(ms, 90),
            "p99_ms": pct(ms, 99), "frames": len(ms)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    ap.add_argument("--bitrate", type=int, default=None, help="bit/s ceiling (default: aiortc's adaptive rate)")
    ap.add_argument("--stress-fps", type=float, default=60.0,
                    help="also run the enhancer with the clip played this fast, to find the ceiling (0: skip)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not CLIP.is_file():
        raise SystemExit(f"bench_bridge: clip {CLIP} not found (set LIKENESS_DATA or LIKENESS_VIDEOS)")
    frames, fps = load_clip(CLIP, 300, SIZE)
    warm_detectors()
    load_before = os.getloadavg()
    base = asyncio.run(run("passthrough", lambda _: Passthrough(), frames, fps, args.seconds, args.codec,
                           args.bitrate))
    enh = asyncio.run(run("enhanced_bicubic", default_processor_factory, frames, fps, args.seconds, args.codec,
                          args.bitrate))
    runs = [base, enh]
    if args.stress_fps:
        runs.append(asyncio.run(run(f"enhanced_bicubic_source_{args.stress_fps:g}fps", default_processor_factory,
                                    frames, args.stress_fps, args.seconds, args.codec, args.bitrate)))
    result = {
        "benchmark": "bridge",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"clip": CLIP.name, "size": list(SIZE), "source_fps": fps, "codec": args.codec,
                  "bitrate": args.bitrate, "seconds": args.seconds, "engine": "BicubicEngine",
                  "path": ("aiortc publisher -> bridge (marker release, EnhancingTrack, MediaRelay, shared encoder)"
                           " -> aiortc WHEP viewer, 127.0.0.1")},
        "pipeline_only": pipeline_only(frames[:200]),
        "runs": runs,
        "added_latency_ms_p50": round(enh["latency_ms"]["p50"] - base["latency_ms"]["p50"], 1),
        "sustained_fps": enh["viewer_fps"],
        "sustained_fps_stress": runs[2]["viewer_fps"] if len(runs) > 2 else None,
    }
    out = args.out or Path(__file__).parent / "results" / f"bridge-cpu{os.cpu_count()}-{args.codec}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
