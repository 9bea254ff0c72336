"""95 % intervals for `likeness eval` JSON files, recomputed from their per-identity records.

Why: results written before `likeness eval` reported ``ci95`` still hold every identity's wins
and distances, so their intervals can be added without re-running anything, and candidates
measured on the same photos can be read with their uncertainty beside them.

    python -m benchmarks.studies.intervals FILE.json ... [--write]   # --write adds "ci95" in place
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from enhancer.evaluate import write_json
from enhancer.stats import eval_intervals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--write", action="store_true", help="store the intervals in each file as \"ci95\"")
    a = ap.parse_args()
    for f in a.files:
        r = json.loads(f.read_text())
        if "per_identity" not in r:
            print(f"{f}: no per_identity records, skipped")
            continue
        ci = eval_intervals(r["per_identity"])
        m = r["methods"]
        gap = m["generic"]["id_distance"] - m["personalized"]["id_distance"]
        lo, hi = ci["win_personalized_vs_generic"]
        glo, ghi = ci["id_gap_generic_minus_personalized"]
        print(f"{f.name}: win vs generic {r['win_rate']['personalized_vs_generic']:.1%} ({lo:.1%}-{hi:.1%}), "
              f"identity gap {gap:.3f} ({glo:.3f}-{ghi:.3f})")
        if a.write and r.get("ci95") != ci:
            r["ci95"] = ci
            write_json(f, r)


if __name__ == "__main__":
    main()
