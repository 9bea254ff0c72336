"""What the learned weighting adds to the reference detail transfer's cost per face: the
hand-made and the learned transfer alternated on the same real face (4 references, full gain),
so both see the same machine state.

    python -m benchmarks.studies.transfer_cost [--rounds 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from benchmarks.bench.machine import machine_info
from enhancer.detail_transfer import TransferConfig, prepare_references, transfer_detail
from enhancer.evaluate import EvalConfig, degraded_tests, prepare
from enhancer.weighting_runtime import load_weighting_runtime


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/celeba")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/DATE/transfer-cost.json")
    args = ap.parse_args(argv)
    cfg = EvalConfig(data=args.data, refs=4, preset="severe", seed=0, model="student", limit_identities=3)
    ident, refs, tests = prepare(cfg).people[0]
    degraded = degraded_tests(cfg, ident, tests)[0]
    face = cv2.GaussianBlur(tests[0], (0, 0), 1.5)
    methods = {"hand": prepare_references(np.stack(refs), TransferConfig(alpha=2.0)),
               "learned": prepare_references(np.stack(refs), TransferConfig(alpha=5.0, learned=True),
                                             load_weighting_runtime())}
    times: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.rounds):
        for name, prepared in methods.items():
            for _ in range(args.per_round):
                t0 = time.perf_counter()
                transfer_detail(face, degraded, prepared)
                times[name].append((time.perf_counter() - t0) * 1000)
    summary = {k: {"median_ms": round(float(np.median(v)), 3), "p95_ms": round(float(np.percentile(v, 95)), 3)}
               for k, v in times.items()}
    summary["learned_minus_hand_ms"] = round(summary["learned"]["median_ms"] - summary["hand"]["median_ms"], 3)
    result = {"study": "transfer-cost", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": machine_info(),
              "config": {"rounds": args.rounds, "per_round": args.per_round, "references": len(refs), "crop": 128},
              "result": summary}
    out = args.out or Path(f"benchmarks/results/{datetime.now(UTC).date()}/transfer-cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
