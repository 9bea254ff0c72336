"""Glass-to-glass latency through a real aiortc loopback call, enhancement off and on in the same run."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.bench.config import BenchConfig, EngineSpec, log
from benchmarks.bench.engines import make_engine
from benchmarks.bench.sources import Source


def _pct(v: list[float], q: float) -> float | None:
    return round(float(np.percentile(v, q)), 1) if v else None


def webrtc_section(cfg: BenchConfig, src: Source, best: EngineSpec, steps: int,
                   samples: dict[str, list[float]]) -> dict[str, Any]:
    """Passthrough vs the student through ``bench_bridge.run`` (a real aiortc loopback call).

    ``bench_bridge.run`` reports p50/p90/p99; its ``latencies_ms`` call is wrapped for the
    duration of each run so the per-frame list (for p95 and the plot) is kept as well.
    """
    from unittest import mock

    from benchmarks import bench_bridge
    from bridge.factory import warm_detectors
    from enhancer.detail import ReuseConfig
    from enhancer.pipeline import FramePipeline
    from enhancer.strength import DEFAULT_STRENGTH

    res = "480p" if "480p" in src.frames else next(iter(src.frames))
    frames = src.loop(res)
    engine = make_engine(best, "student", steps, 128)
    zeros = np.zeros((1, 3, 128, 128), np.float32)
    for _ in range(3):  # first calls allocate and pick kernels: not what a running call sees
        engine.run(zeros, engine.null_identities(1), zeros)
    warm_detectors()
    real = bench_bridge.latencies_ms
    raw: dict[str, list[float]] = {}

    def one(label: str, factory: Callable[[str | None], Any]) -> dict[str, Any]:
        def capture(sink: Any, source: Any, since: float | None = None) -> list[float]:
            raw[label] = real(sink, source, since=since)
            return raw[label]

        log(f"[webrtc] {label}: {cfg.webrtc_seconds:g} s through the loopback bridge ({cfg.codec})")
        with mock.patch.object(bench_bridge, "latencies_ms", capture):
            return asyncio.run(bench_bridge.run(label, factory, frames, src.fps, cfg.webrtc_seconds, cfg.codec, None))

    off = one("enhancement_off", lambda _identity: bench_bridge.Passthrough())
    # the bridge's own configuration: adaptive strength, and detail reuse for frames the generator is late for
    on = one("enhancement_on", lambda _identity: FramePipeline(engine, strength=DEFAULT_STRENGTH, reuse=ReuseConfig()))
    lat_off, lat_on = raw.get("enhancement_off", []), raw.get("enhancement_on", [])
    samples["webrtc enhancement_off"], samples["webrtc enhancement_on"] = lat_off, lat_on
    for r, lat in ((off, lat_off), (on, lat_on)):
        r["latency_ms"]["p95"] = _pct(lat, 95)

    def added(q: float) -> float | None:
        a, b = _pct(lat_on, q), _pct(lat_off, q)
        return round(a - b, 1) if a is not None and b is not None else None

    return {
        "resolution": res, "engine": best.label, "model": "student", "steps": steps, "crop": 128,
        "codec": cfg.codec, "seconds": cfg.webrtc_seconds, "source_fps": src.fps,
        "path": ("aiortc publisher -> bridge (marker release, EnhancingTrack, MediaRelay, shared encoder)"
                 " -> aiortc WHEP viewer, 127.0.0.1"),
        "added_latency_ms_p50": added(50), "added_latency_ms_p95": added(95),
        "fps": on["viewer_fps"], "fps_enhancement_off": off["viewer_fps"],
        "enhanced_share": on["bridge_track"].get("enhanced_share_total"),
        "reused_share": on["bridge_track"].get("reused_share_total"),
        "definition": "added = percentile(glass-to-glass, enhancement on) - same percentile with enhancement off",
        "enhancement_off": off, "enhancement_on": on,
    }
