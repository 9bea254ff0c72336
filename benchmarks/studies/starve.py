"""Starve: the call keeps its frame rate while other processes take the CPU, and recovers after.

The same call as ``benchmarks.soak`` (real clip looped at 30 fps, publisher -> bridge ->
viewer on loopback). The run has three phases: before (25%), starved (50%) and after (25%).
During the starved phase ``--busy-procs`` real busy processes (single-threaded numpy matmul
loops, default: all cores but one, i.e. "the other core" on a 2-core machine) compete for the
CPU. Expected: viewer fps stays at the source rate (late frames go out un-enhanced: the
enhanced share drops, passthrough fills in) and the enhanced share comes back afterwards.

    python -m benchmarks.studies.starve [--minutes 2] [--busy-procs N] [--out PATH]

Writes benchmarks/results/starve-<date>.json: per-sample figures and per-phase summaries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from benchmarks.soak import Sampler, add_call_arguments, running_call, write_result

BUSY = """
import numpy as np
a = np.random.default_rng(0).random((384, 384))
while True:
    a = a @ a
    a /= abs(a).max() + 1e-9
"""


def start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` single-threaded matmul loops (BLAS threads pinned to 1 so each takes exactly one core)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", BUSY], env=env) for _ in range(n)]


def stop_busy(procs: list[subprocess.Popen]) -> float:
    """Stop them; returns the CPU seconds they used."""
    used = 0.0
    for p in procs:
        try:
            t = psutil.Process(p.pid).cpu_times()
            used += t.user + t.system
        except psutil.Error:
            pass
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return used


def phase_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    if not samples:
        return {}

    def mean(key: str) -> float:
        return round(statistics.fmean(s[key] for s in samples), 3)

    vf = [f for s in samples for f in s["viewer_fps"]]
    return {
        "samples": len(samples),
        "source_fps": mean("source_fps"),
        "viewer_fps": round(statistics.fmean(vf), 2) if vf else 0.0,
        "viewer_fps_min": round(min(vf), 2) if vf else 0.0,
        "track_fps_out": mean("track_fps_out"),
        "enhanced_share": mean("enhanced_share"),
        "reused_share": mean("reused_share"),
        "passthrough_late": sum(s["passthrough_late"] for s in samples),
        "passthrough_busy": sum(s["passthrough_busy"] for s in samples),
        "dropped": sum(s["dropped"] for s in samples),
        "cpu_percent": mean("cpu_percent"),
        "latency_p50_ms": (round(statistics.median(x), 1)
                           if (x := [s["latency_p50_ms"] for s in samples if s["latency_p50_ms"]]) else None),
    }


async def starve(minutes: float, interval: float, busy_procs: int, fps: float, engine: str,
                 warmup: float, late_frames: str = "reuse", generator_nice: int = 0) -> dict[str, Any]:
    total = minutes * 60
    bounds = {"before": total * 0.25, "starved": total * 0.75, "after": total}
    samples: list[dict[str, Any]] = []
    busy: list[subprocess.Popen] = []
    busy_cpu = 0.0
    async with running_call(fps, 1, "vp8", engine, late_frames=late_frames, generator_nice=generator_nice) as call:
        await asyncio.sleep(warmup)
        sampler = Sampler(call)
        t0 = time.monotonic()
        try:
            for phase in ("before", "starved", "after"):
                if phase == "starved":
                    busy = start_busy(busy_procs)
                    sampler.sample(objects=False)  # start the phase on a fresh interval
                elif phase == "after" and busy:
                    busy_cpu = stop_busy(busy)
                    busy = []
                    sampler.sample(objects=False)
                while (left := bounds[phase] - (time.monotonic() - t0)) > 0.25:
                    await asyncio.sleep(min(interval, left))
                    s = sampler.sample(objects=False)
                    s["phase"] = phase
                    samples.append(s)
                    print(f"[{phase:7s} {s['t_s']:5.0f} s] source {s['source_fps']} viewer {s['viewer_fps']} fps, "
                          f"enhanced {s['enhanced_share']:.0%}, late {s['passthrough_late']} busy "
                          f"{s['passthrough_busy']} dropped {s['dropped']}, cpu {s['cpu_percent']}%", flush=True)
        finally:
            if busy:
                busy_cpu = stop_busy(busy)
        final = call.track.stats()
    phases = {p: phase_summary([s for s in samples if s["phase"] == p]) for p in ("before", "starved", "after")}
    b, st, af = phases["before"], phases["starved"], phases["after"]
    verdict = {}
    if b and st and af:
        verdict = {
            "kept_source_rate_while_starved": st["viewer_fps"] >= 0.9 * st["source_fps"],
            "enhanced_share_drop": round(b["enhanced_share"] - st["enhanced_share"], 3),
            "recovered": af["enhanced_share"] >= 0.9 * b["enhanced_share"] and af["viewer_fps"] >= 0.9 * af[
                "source_fps"],
        }
    return {"samples": samples, "phases": phases, "verdict": verdict,
            "busy_procs": busy_procs, "busy_cpu_s": round(busy_cpu, 1),
            "track_final": {k: final[k] for k in ("frames_in", "frames_out", "enhanced", "dropped", "passthrough_late",
                                                  "passthrough_busy", "errors", "deadline_ms", "stage_ms")}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    ap.add_argument("--busy-procs", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    ap.add_argument("--fps", type=float, default=30.0)
    add_call_arguments(ap)
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/starve-<date>.json")
    a = ap.parse_args(argv)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    result = asyncio.run(starve(a.minutes, a.interval, a.busy_procs, a.fps, a.engine, a.warmup, a.late_frames,
                                a.generator_nice))
    out = write_result("starve", a, started, result)
    print(json.dumps({"phases": result["phases"], "verdict": result["verdict"]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
