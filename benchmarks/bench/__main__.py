"""``python -m benchmarks.bench``: the same run as `likeness bench`, with a few of its options."""

from __future__ import annotations

import argparse
from pathlib import Path

import benchmarks.bench
from benchmarks.bench.config import BenchConfig
from benchmarks.bench.run import bench


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench",
                                 description=(benchmarks.bench.__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--engines", default="")
    ap.add_argument("--skip-webrtc", action="store_true")
    ap.add_argument("--runs", type=int)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    cfg = BenchConfig.make(a.quick, a.runs, engines=tuple(filter(None, a.engines.split(","))) or None,
                           skip_webrtc=a.skip_webrtc or None)
    bench(cfg, a.json, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
