"""Repeated timing that shares background load fairly between configs, and its summary figures."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from benchmarks.bench.config import BenchConfig


def sig(x: float, digits: int = 5) -> float:
    """Round to significant digits: a passthrough's 0.0008 ms must not print as 0."""
    return float(f"{float(x):.{digits}g}")


def summarize(ms: list[float] | np.ndarray) -> dict[str, float | int]:
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "median": sig(np.median(a)), "p95": sig(np.percentile(a, 95)),
            "p99": sig(np.percentile(a, 99)), "mean": sig(a.mean()), "min": sig(a.min()), "max": sig(a.max())}


def time_interleaved(fns: dict[str, Callable[[], object]], cfg: BenchConfig, block: int = 10) -> dict[str, list[float]]:
    """Warm up each fn, then time them in round-robin blocks (background load hits all alike) until
    each has ``cfg.runs`` samples or the budget (``cfg.max_s`` per fn) is spent, never below ``min_runs``."""
    for fn in fns.values():
        t0 = time.perf_counter()
        for i in range(max(cfg.warmup, 1)):
            fn()
            if i >= 1 and time.perf_counter() - t0 > cfg.max_s / 2:  # slow config: two calls warm it
                break
    out: dict[str, list[float]] = {k: [] for k in fns}
    budget = cfg.max_s * len(fns)
    start = time.perf_counter()

    def wanted(k: str) -> bool:
        n = len(out[k])
        return n < cfg.min_runs or (n < cfg.runs and time.perf_counter() - start < budget)

    while any(wanted(k) for k in fns):
        for k, fn in fns.items():
            for _ in range(block):
                if not wanted(k):
                    break
                t0 = time.perf_counter()
                fn()
                out[k].append((time.perf_counter() - t0) * 1e3)
    return out


def time_one(fn: Callable[[], object], cfg: BenchConfig) -> list[float]:
    return time_interleaved({"x": fn}, cfg)["x"]
