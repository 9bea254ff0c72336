"""Fit ``enhancer.strength.StrengthConfig`` for the packaged student, on training identities.

For each sampled crop and preset: degrade, restore with the student (generic mode, 1 sampler
call), find the blend weight in [0, 1] (grid 0.05) that maximises PSNR, and record the crop's
log Laplacian variance. A least-squares line through (log variance, best weight) is the fit;
it is then checked on a second, disjoint sample of training identities (the evaluation's
identities are never touched). Writes benchmarks/results/strength-<date>.json.

    python -m benchmarks.studies.fit_strength [--crops 150] [--data work_data/celeba128]
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from enhancer.degrade import PRESETS, degrade
from enhancer.evaluate import to_tensor, to_uint8
from enhancer.metrics import psnr
from enhancer.strength import StrengthConfig, blend, log_detail, strength
from enhancer.weights import load_restorer

RESULTS = Path(__file__).resolve().parents[1] / "results"
GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def measure(model, rows: list[dict], root: Path, seed: int) -> list[dict]:
    """Per (crop, preset): detail, PSNR of the input, of the full output, and the best blend."""
    out = []
    for k, r in enumerate(tqdm(rows, desc=f"crops (seed {seed})", unit="crop")):
        gt = cv2.imread(str(root / r["path"]))
        for preset in PRESETS:
            lq = degrade(gt, preset, seed * 100003 + k)
            noise = torch.randn(1, 3, *lq.shape[:2], generator=torch.Generator().manual_seed(seed * 100003 + k))
            with torch.inference_mode():
                y = to_uint8(model.sample(to_tensor(lq[None]), model.resolve_identity(None, 1), noise, 1))[0]
            curve = [psnr(gt, blend(lq[None], y[None], np.array([w]))[0]) for w in GRID]
            out.append({"preset": preset, "log_detail": float(log_detail(lq[None])[0]),
                        "psnr_input": psnr(gt, lq), "psnr_full": psnr(gt, y),
                        "best_w": float(GRID[int(np.argmax(curve))]),
                        "lq": lq, "y": y, "gt": gt})
    return out


def report(samples: list[dict], cfg: StrengthConfig) -> dict:
    """Mean PSNR per preset: input, full output, adaptive strength."""
    res = {}
    for preset in PRESETS:
        s = [d for d in samples if d["preset"] == preset]
        w = strength(np.stack([d["lq"] for d in s]), cfg)
        adaptive = [psnr(d["gt"], blend(d["lq"][None], d["y"][None], w[i:i + 1])[0]) for i, d in enumerate(s)]
        res[preset] = {"crops": len(s), "psnr_input": round(float(np.mean([d["psnr_input"] for d in s])), 3),
                       "psnr_full": round(float(np.mean([d["psnr_full"] for d in s])), 3),
                       "psnr_adaptive": round(float(np.mean(adaptive)), 3),
                       "mean_w": round(float(w.mean()), 3),
                       "mean_best_w": round(float(np.mean([d["best_w"] for d in s])), 3)}
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("work_data/celeba128"), help="`likeness data prepare` output")
    ap.add_argument("--crops", type=int, default=150, help="crops per sample (fit, then check)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model, meta = load_restorer(None, kind="student")
    held = {str(v) for v in meta["extra"].get("val_identities", [])}
    with open(a.data / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["identity"] not in held]
    ids = sorted({r["identity"] for r in rows})
    perm = np.random.default_rng(0).permutation(len(ids))
    fit_ids, check_ids = {ids[i] for i in perm[::2]}, {ids[i] for i in perm[1::2]}
    rng = np.random.default_rng(1)

    def sample(which: set[str]) -> list[dict]:
        pool = [r for r in rows if r["identity"] in which]
        return [pool[i] for i in rng.choice(len(pool), a.crops, replace=False)]

    fit = measure(model, sample(fit_ids), a.data, 1)
    x = np.array([d["log_detail"] for d in fit])
    y = np.array([d["best_w"] for d in fit])
    slope, intercept = np.polyfit(x, y, 1)
    cfg = StrengthConfig(intercept=round(float(intercept), 3), slope=round(float(slope), 3),
                         fitted_for=meta["model_id"])
    check = measure(model, sample(check_ids), a.data, 2)
    doc = {"benchmark": "fit_strength", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "model_id": meta["model_id"], "data": str(a.data), "crops_per_sample": a.crops,
           "identities": {"fit": len(fit_ids), "check": len(check_ids), "evaluation_identities_excluded": len(held)},
           "fit": {"intercept": cfg.intercept, "slope": cfg.slope, "lo": cfg.lo, "hi": cfg.hi,
                   "r": round(float(np.corrcoef(x, y)[0, 1]), 3)},
           "fit_sample": report(fit, cfg), "check_sample": report(check, cfg)}
    out = a.out or RESULTS / f"strength-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(doc, indent=1))
    print(json.dumps({k: doc[k] for k in ("fit", "check_sample")}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
