"""Soak: a call through the bridge for N minutes, watching for slow leaks and frame-rate decay.

A real clip, looped at 30 fps, goes publisher -> bridge (enhanced) -> viewer over aiortc on
loopback, all in this process. Every ``--interval`` seconds it samples RSS, thread count,
asyncio task count, open file descriptors, gc-tracked Python objects, viewer fps and the
publisher track's stats. The JSON (benchmarks/results/soak-<date>.json by default) holds the
samples and the growth of each resource from the first to the last quarter of the run: a
leak of one small object per frame shows as steady growth, jitter as noise around zero.

    python -m benchmarks.soak [--minutes 10] [--viewers 1] [--codec vp8] [--out PATH]

The test's own bookkeeping (received-frame records, send times) is trimmed after each sample
so the soak does not measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.harness.calls import Peer, http_client, publish, serve_bridge, view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack, latencies_ms
from bridge.config import BridgeConfig
from bridge.factory import warm_detectors
from bridge.rooms import Bridge
from bridge.track import EnhancingTrack
from enhancer.commands.assemble import make_factory
from enhancer.detail import ReuseConfig

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"  # 480x480, 30 fps, one face
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Call:
    """A running call: the bridge, its publisher and viewers, the source and the enhancing track."""

    bridge: Bridge
    publisher: Peer
    viewers: list[Peer]
    source: ClipTrack
    track: EnhancingTrack

    def viewer_counts(self) -> list[int]:
        return [len(v.sinks[0].frames) if v.sinks else 0 for v in self.viewers]


@asynccontextmanager
async def running_call(fps: float, viewers: int = 1, codec: str | None = "vp8", engine: str = "bicubic",
                       frames: int = 240, late_frames: str = "reuse", generator_nice: int = 0,
                       fanout: str = "shared") -> AsyncIterator[Call]:
    """Publisher -> bridge -> ``viewers`` viewers on loopback, with the real clip looped at ``fps``;
    ``late_frames``: what the bridge sends when the generator misses a deadline (reuse | raw);
    ``fanout``: one encoder for all viewers (shared) or one each (per-viewer)."""
    clip, _ = load_clip(CLIP, frames)
    warm_detectors()
    src = ClipTrack(clip, fps)
    reuse = ReuseConfig(generator_nice=generator_nice) if late_frames == "reuse" else None
    factory = make_factory(engine, reuse=reuse)
    async with serve_bridge(BridgeConfig(port=0, codec=codec, fanout=fanout), factory) as (base, bridge), \
            http_client() as http:
        pub = await publish(http, f"{base}/whip/soak", src, codec=codec)
        peers = [await view(http, f"{base}/whep/soak") for _ in range(viewers)]
        track = bridge.publishers("soak")[0].track
        assert track is not None
        call = Call(bridge, pub, peers, src, track)
        try:
            yield call
        finally:
            for p in (*peers, pub):
                await p.leave(http)


class Sampler:
    """Differences between successive samples of one call (rates over the last interval)."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.proc = psutil.Process()
        self.t0 = time.monotonic()
        self._trim()
        self._last = self._counters()
        self.proc.cpu_percent(None)

    def _trim(self) -> None:
        """Empty the sinks' frame records and old send times: our own bookkeeping must not pose as a leak."""
        for v in self.call.viewers:
            for s in v.sinks:
                s.frames.clear()
        keep = max(self.call.source.sent_at, default=0) - 300
        for k in [k for k in self.call.source.sent_at if k < keep]:
            del self.call.source.sent_at[k]

    def _counters(self) -> dict[str, Any]:
        c = self.call.track.c
        return {"t": time.monotonic(), "sent": self.call.source.sent, "seen": self.call.viewer_counts(),
                "in": c.frames_in, "out": c.frames_out, "enh": c.enhanced, "reused": c.enhanced_reused,
                "late": c.passthrough_late,
                "busy": c.passthrough_busy, "err": c.passthrough_error, "dropped": c.dropped}

    def sample(self, objects: bool = True) -> dict[str, Any]:
        now = self._counters()
        last, self._last = self._last, now
        dt = max(now["t"] - last["t"], 1e-6)
        call = self.call
        since = time.monotonic() - dt
        lat = latencies_ms(call.viewers[0].sinks[0], call.source, since=since) if call.viewers[0].sinks else []
        fps = [n / dt for n in now["seen"]]  # the sinks were emptied at the previous sample
        self._trim()
        out = now["out"] - last["out"]
        return {
            "t_s": round(now["t"] - self.t0, 1),
            "rss_mib": round(self.proc.memory_info().rss / 2**20, 1),
            "threads": self.proc.num_threads(),
            "tasks": len(asyncio.all_tasks()),
            "fds": self.proc.num_fds(),
            "py_objects": len(gc.get_objects()) if objects else None,
            "cpu_percent": round(self.proc.cpu_percent(None), 1),
            "load1": round(os.getloadavg()[0], 2),
            "source_fps": round((now["sent"] - last["sent"]) / dt, 2),
            "viewer_fps": [round(f, 2) for f in fps],
            "track_fps_in": round((now["in"] - last["in"]) / dt, 2),
            "track_fps_out": round(out / dt, 2),
            "enhanced_share": round((now["enh"] - last["enh"]) / out, 3) if out else 0.0,
            # of the frames out, enhanced with an earlier frame's detail because the generator was late
            "reused_share": round((now["reused"] - last["reused"]) / out, 3) if out else 0.0,
            "passthrough_late": now["late"] - last["late"],
            "passthrough_busy": now["busy"] - last["busy"],
            "passthrough_error": now["err"] - last["err"],
            "dropped": now["dropped"] - last["dropped"],
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "deadline_ms": (st := call.track.stats())["deadline_ms"],  # follows the source rate the track sees
            "source_fps_estimate": st["source_fps_estimate"],
        }


def growth(samples: list[dict[str, Any]], key: str) -> dict[str, float | None]:
    """First-quarter median -> last-quarter median of ``key``, and the change in percent."""
    vals = [s[key] for s in samples if s.get(key) is not None]
    if len(vals) < 2:
        return {"start": None, "end": None, "growth_pct": None}
    q = max(1, len(vals) // 4)
    a, b = statistics.median(vals[:q]), statistics.median(vals[-q:])
    return {"start": a, "end": b, "growth_pct": round(100 * (b - a) / a, 2) if a else None}


def host_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu_model": platform.processor() or None, "nice": os.nice(0)}


def default_out(kind: str) -> Path:
    return RESULTS / f"{kind}-{datetime.now(UTC).strftime('%Y-%m-%d')}.json"


def write_result(kind: str, args: argparse.Namespace, started: str, result: dict[str, Any]) -> Path:
    """The JSON every call benchmark writes: what ran (options, clip, host) and its result."""
    doc = {"benchmark": kind, "started": started, "clip": CLIP.name,
           "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
           "host": host_info(), **result}
    out = args.out or default_out(kind)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    return out


async def soak(minutes: float, interval: float, fps: float, viewers: int, codec: str | None, engine: str,
               warmup: float, late_frames: str = "reuse", generator_nice: int = 0) -> dict[str, Any]:
    async with running_call(fps, viewers, codec, engine, late_frames=late_frames,
                            generator_nice=generator_nice) as call:
        await asyncio.sleep(warmup)  # ICE/DTLS, first keyframes, allocator warm-up
        sampler = Sampler(call)
        samples = []
        end = time.monotonic() + minutes * 60
        while time.monotonic() < end:
            await asyncio.sleep(min(interval, max(0.5, end - time.monotonic())))
            gc.collect()
            samples.append(sampler.sample())
            s = samples[-1]
            print(f"[{s['t_s']:6.0f} s] rss {s['rss_mib']} MiB threads {s['threads']} tasks {s['tasks']} fds "
                  f"{s['fds']} objects {s['py_objects']} viewer {s['viewer_fps']} fps enhanced "
                  f"{s['enhanced_share']:.0%} (reused {s['reused_share']:.0%}) cpu {s['cpu_percent']}%", flush=True)
        final = call.track.stats()
    vf = [f for s in samples for f in s["viewer_fps"]]
    summary = {
        "growth": {k: growth(samples, k) for k in ("rss_mib", "threads", "tasks", "fds", "py_objects")},
        "viewer_fps": {"mean": round(statistics.fmean(vf), 2), "min": round(min(vf), 2)} if vf else None,
        "source_fps_mean": round(statistics.fmean(s["source_fps"] for s in samples), 2) if samples else None,
        "enhanced_share_mean": round(statistics.fmean(s["enhanced_share"] for s in samples), 3) if samples else None,
        "reused_share_mean": round(statistics.fmean(s["reused_share"] for s in samples), 3) if samples else None,
        "latency_p50_ms_median": (round(statistics.median(x), 1)
                                  if (x := [s["latency_p50_ms"] for s in samples if s["latency_p50_ms"]]) else None),
        "rss_slope_mib_per_min": rss_slope(samples),
        "track_final": {k: final[k] for k in ("frames_in", "frames_out", "enhanced", "enhanced_reused", "dropped",
                                              "passthrough_late",
                                              "passthrough_busy", "passthrough_error", "errors", "stage_ms")},
    }
    return {"samples": samples, "summary": summary}


def rss_slope(samples: list[dict[str, Any]]) -> float | None:
    """Least-squares RSS slope over the second half of the run (after allocator warm-up)."""
    half = samples[len(samples) // 2:]
    if len(half) < 2:
        return None
    t = np.array([s["t_s"] for s in half]) / 60
    r = np.array([s["rss_mib"] for s in half])
    return round(float(np.polyfit(t, r, 1)[0]), 3)


def add_call_arguments(ap: argparse.ArgumentParser) -> None:
    """The call's own options (engine, warm-up, late frames), shared with ``benchmarks.studies.starve``
    so that a soak and a starvation run are configured alike."""
    ap.add_argument("--engine", default="auto", help="auto (the product default), bicubic, ...")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--late-frames", choices=["reuse", "raw"], default="reuse",
                    help="what the bridge sends for a frame the generator is late for (the product default: reuse)")
    ap.add_argument("--generator-nice", type=int, default=0,
                    help="with reuse: run the generator thread this much nicer than the rest (0: same priority)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--viewers", type=int, default=1)
    ap.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    add_call_arguments(ap)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/soak-<date>.json")
    a = ap.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = asyncio.run(soak(a.minutes, a.interval, a.fps, a.viewers, a.codec, a.engine, a.warmup, a.late_frames,
                              a.generator_nice))
    out = write_result("soak", a, started, result)
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
