"""Fan-out: what each extra viewer in one room costs the bridge.

One publisher, N viewers (WHEP) in one room, on loopback, all in this process, for each N in
``--viewers``. With ``--fanout per-viewer`` aiortc encodes once per outgoing sender, so every
viewer adds a video encode; with ``shared`` (the bridge's default) one encoder feeds them all.
Measured: process CPU (and the part spent in aiortc's decoder threads, which are the test's own
viewers, not the bridge), delivered fps per viewer and the enhanced share, so a host knows how
many viewers a 2-core machine serves at the source frame rate.

    python -m benchmarks.fanout [--viewers 1,2,4,8] [--seconds 20] [--engine auto] [--fanout shared] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from benchmarks.soak import Sampler, running_call, write_result


def decoder_cpu_s() -> float:
    """CPU seconds so far of aiortc's decoder threads (named ``...-decoder``): the viewers' side."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    return sum(t.user_time + t.system_time for t in psutil.Process().threads()
               if names.get(t.id, "").endswith("-decoder"))


async def one_room(viewers: int, seconds: float, interval: float, fps: float, engine: str,
                   warmup: float, late_frames: str = "reuse", fanout: str = "shared") -> dict[str, Any]:
    """Samples of one call with ``viewers`` viewers, summarised."""
    async with running_call(fps, viewers, "vp8", engine, late_frames=late_frames, fanout=fanout) as call:
        await asyncio.sleep(warmup)
        sampler = Sampler(call)
        samples = []
        d0, t0 = decoder_cpu_s(), time.monotonic()
        for _ in range(max(1, round(seconds / interval))):
            await asyncio.sleep(interval)
            samples.append(sampler.sample(objects=False))
        decoders = 100.0 * (decoder_cpu_s() - d0) / (time.monotonic() - t0)
        encoded = sum(e["frames_encoded"] for e in call.bridge.stats()["shared_encoders"])
    per_viewer = [f for s in samples for f in s["viewer_fps"]]
    lat = [s["latency_p50_ms"] for s in samples if s["latency_p50_ms"] is not None]
    row = {
        "viewers": viewers,
        "cpu_percent": round(statistics.fmean(s["cpu_percent"] for s in samples), 1),
        "cpu_percent_viewer_decoders": round(decoders, 1),
        "shared_frames_encoded": encoded,
        "viewer_fps_mean": round(statistics.fmean(per_viewer), 2),
        "viewer_fps_min": round(min(per_viewer), 2),
        "source_fps": round(statistics.fmean(s["source_fps"] for s in samples), 2),
        "enhanced_share": round(statistics.fmean(s["enhanced_share"] for s in samples), 3),
        "reused_share": round(statistics.fmean(s["reused_share"] for s in samples), 3),
        "latency_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "rss_mib": samples[-1]["rss_mib"],
        "samples": samples,
    }
    print(f"{viewers:3d} viewer(s): cpu {row['cpu_percent']:6.1f} % (decoders {decoders:5.1f})  "
          f"viewer fps mean {row['viewer_fps_mean']:5.1f} min {row['viewer_fps_min']:5.1f}  "
          f"enhanced {row['enhanced_share']:.0%} (reused {row['reused_share']:.0%})  "
          f"latency p50 {row['latency_p50_ms']} ms", flush=True)
    return row


def per_viewer_cost(rows: list[dict[str, Any]]) -> float | None:
    """Least-squares CPU % per extra viewer, over the rooms that kept the source rate.

    Past saturation CPU stops growing (frames drop instead), which would hide the cost."""
    kept = [r for r in rows if r["viewer_fps_mean"] >= 0.9 * r["source_fps"]]
    if len(kept) < 2:
        return None
    x = np.array([r["viewers"] for r in kept], dtype=float)
    y = np.array([r["cpu_percent"] for r in kept])
    return round(float(np.polyfit(x, y, 1)[0]), 1)


async def fanout(counts: list[int], seconds: float, interval: float, fps: float, engine: str,
                 warmup: float, late_frames: str = "reuse", mode: str = "shared") -> dict[str, Any]:
    rows = []
    for n in counts:
        rows.append(await one_room(n, seconds, interval, fps, engine, warmup, late_frames, mode))
        gc.collect()
    full_rate = [r["viewers"] for r in rows if r["viewer_fps_min"] >= 0.9 * fps]
    summary = {"cpu_percent_per_extra_viewer": per_viewer_cost(rows),
               "max_viewers_at_source_rate": max(full_rate) if full_rate else 0,
               "table": [{k: v for k, v in r.items() if k != "samples"} for r in rows]}
    return {"rooms": rows, "summary": summary}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--viewers", default="1,2,4,8", help="viewer counts, comma-separated")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds measured per viewer count")
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--engine", default="auto", help="the product's default engine (auto), bicubic, ...")
    ap.add_argument("--warmup", type=float, default=6.0)
    ap.add_argument("--late-frames", choices=["reuse", "raw"], default="reuse",
                    help="what the bridge sends for a frame the generator is late for (the product default: reuse)")
    ap.add_argument("--fanout", choices=["shared", "per-viewer"], default="shared",
                    help="one encoder for all viewers (the bridge's default) or one per viewer (aiortc's)")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/fanout-<date>.json")
    a = ap.parse_args(argv)
    counts = sorted({int(v) for v in a.viewers.split(",") if v.strip()})
    if not counts or counts[0] < 1:
        ap.error("--viewers needs positive counts")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = asyncio.run(fanout(counts, a.seconds, a.interval, a.fps, a.engine, a.warmup, a.late_frames, a.fanout))
    out = write_result("fanout", a, started, result)
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
