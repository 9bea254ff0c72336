"""Fit ``enhancer.strength.StrengthConfig`` for the packaged student, on training identities.

For each sampled crop and preset: degrade, restore with the student (generic mode, 1 sampler
call), find the blend weight in [0, 1] (grid 0.05) that maximises PSNR, and record the crop's
log Laplacian variance. A least-squares line through (log variance, best weight) is the fit;
it is then checked on a second, disjoint sample of training identities (the evaluation's
identities are never touched). Writes benchmarks/results/strength-<date>.json.

``--fade`` (a candidate measured on 2026-12-07, not shipped; docs/visible-restoration.md): keep the
packaged line and fit where it would fade out, ``w = line * clip((fade_to - ld) / (fade_to -
fade_from), 0, 1)``: the crops also go through two lighter degradations (``LIGHTER``) and none at all,
and the grid point (0.25 steps) with the best mean PSNR over every crop of the fit sample wins;
the check sample reports each condition with and without the fade.

    python -m benchmarks.studies.fit_strength [--crops 150] [--data work_data/celeba128] [--fade] [--weights W]
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from enhancer.degrade import PRESETS, Degradation, degrade
from enhancer.evaluate import to_tensor, to_uint8
from enhancer.metrics import psnr
from enhancer.strength import DEFAULT_STRENGTH, StrengthConfig, blend, log_detail, strength_at
from enhancer.weights import load_restorer

RESULTS = Path(__file__).resolve().parents[1] / "results"
GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)
CAP = 50.0  # dB: PSNR beyond this is invisible; the cap keeps undegraded crops (inf at w = 0) from outweighing the rest
# faces that arrive cleaner than the presets: what a good webcam or a few hundred kbit/s of VP8 gives
LIGHTER: dict[str, Degradation | None] = {
    "light": Degradation(blur_sigma=0.3, scale=0.7, noise_sigma=1.0, h264_qp=26, vp8_q=28),
    "codec": Degradation(blur_sigma=0.0, scale=1.0, noise_sigma=0.0, h264_qp=30, vp8_q=40),
    "clean": None,
}


def candidate_strength(line: str | None, fade: str | None, weights: str | None) -> StrengthConfig:
    """The shipped strength, or a candidate's: its own fitted line ("INTERCEPT,SLOPE") and/or fade
    ("FROM,TO"), marked as fitted for the candidate's weights."""
    strength = DEFAULT_STRENGTH
    if fade:
        strength = replace(strength, fade=tuple(float(v) for v in fade.split(",")))
    if line:
        a, b = (float(v) for v in line.split(","))
        strength = replace(strength, intercept=a, slope=b, fitted_for=weights or "a candidate")
    return strength


def measure(model, rows: list[dict], root: Path, seed: int,
            conditions: dict[str, Degradation | None] | None = None) -> list[dict]:
    """Per (crop, condition): detail, PSNR of the input, of the full output, the best blend and the
    PSNR at every blend weight of ``GRID``. Conditions: the presets by default."""
    conditions = conditions if conditions is not None else dict(PRESETS)
    out = []
    for k, r in enumerate(tqdm(rows, desc=f"crops (seed {seed})", unit="crop")):
        gt = cv2.imread(str(root / r["path"]))
        for preset, spec in conditions.items():
            lq = gt.copy() if spec is None else degrade(gt, spec, seed * 100003 + k)
            noise = torch.randn(1, 3, *lq.shape[:2], generator=torch.Generator().manual_seed(seed * 100003 + k))
            with torch.inference_mode():
                y = to_uint8(model.sample(to_tensor(lq[None]), model.resolve_identity(None, 1), noise, 1))[0]
            curve = [psnr(gt, blend(lq[None], y[None], np.array([w]))[0]) for w in GRID]
            out.append({"preset": preset, "log_detail": float(log_detail(lq[None])[0]),
                        "psnr_input": min(psnr(gt, lq), CAP), "psnr_full": psnr(gt, y),
                        "best_w": float(GRID[int(np.argmax(curve))]), "curve": np.minimum(curve, CAP),
                        "lq": lq, "y": y, "gt": gt})
    return out


def report(samples: list[dict], cfg: StrengthConfig) -> dict:
    """Mean PSNR per condition: input, full output, adaptive strength ``cfg`` with its fade, if any
    (PSNR capped at ``CAP``)."""
    res = {}
    for preset in dict.fromkeys(d["preset"] for d in samples):
        s = [d for d in samples if d["preset"] == preset]
        ld = log_detail(np.stack([d["lq"] for d in s]))
        w = strength_at(ld, cfg)
        adaptive = [min(psnr(d["gt"], blend(d["lq"][None], d["y"][None], w[i:i + 1])[0]), CAP)
                    for i, d in enumerate(s)]
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
    ap.add_argument("--fade", action="store_true", help="fit only where the packaged line fades out")
    ap.add_argument("--weights", type=Path, default=None, help="a student to fit for (default: the packaged one)")
    ap.add_argument("--fade-bounds", default=None, metavar="FROM,TO",
                    help="with --fade: measure these bounds on the check sample instead of fitting them")
    a = ap.parse_args(argv)
    torch.manual_seed(0)
    model, meta = load_restorer(a.weights, kind="student")
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

    if a.fade:
        fade_fit(a, model, meta, sample(fit_ids), sample(check_ids))
        return
    fit = measure(model, sample(fit_ids), a.data, 1)
    x = np.array([d["log_detail"] for d in fit])
    y = np.array([d["best_w"] for d in fit])
    slope, intercept = np.polyfit(x, y, 1)
    cfg = StrengthConfig(intercept=round(float(intercept), 3), slope=round(float(slope), 3),
                         fitted_for=meta["model_id"], fade=DEFAULT_STRENGTH.fade)  # the fade's bounds are the video's
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


def faded(ld: np.ndarray, cfg: StrengthConfig, bounds: tuple[float, float] | None) -> np.ndarray:
    """The line's weight at ``ld``, times the fade between ``bounds`` (none: no fade)."""
    return strength_at(ld, replace(cfg, fade=bounds)).astype(np.float64)


def mean_psnr(samples: list[dict], cfg: StrengthConfig, bounds: tuple[float, float] | None = None) -> float:
    """Mean PSNR over ``samples`` with the strength ``cfg`` faded between ``bounds`` (read off each
    crop's curve, linearly between grid points)."""
    w = faded(np.array([d["log_detail"] for d in samples]), cfg, bounds)
    return float(np.mean([np.interp(wi, GRID, d["curve"]) for wi, d in zip(w, samples, strict=True)]))


def fade_fit(a: argparse.Namespace, model, meta: dict, fit_rows: list[dict], check_rows: list[dict]) -> None:
    """Grid-fit ``fade_from`` / ``fade_to`` over the presets, ``LIGHTER`` and clean crops of the fit
    sample with the packaged line kept (or, with ``--fade-bounds``, take given bounds and measure only
    the check sample); report each sample per condition with and without the fade."""
    if DEFAULT_STRENGTH.fitted_for != meta["model_id"]:
        raise SystemExit(f"the packaged strength was fitted for {DEFAULT_STRENGTH.fitted_for}, not {meta['model_id']}")
    conditions = {**PRESETS, **LIGHTER}
    line = replace(DEFAULT_STRENGTH, fade=None)
    doc = {"benchmark": "fit_strength --fade", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "model_id": meta["model_id"], "data": str(a.data), "crops_per_sample": a.crops,
           "conditions": {k: (None if v is None else vars(v)) for k, v in conditions.items()},
           "line": {"intercept": line.intercept, "slope": line.slope}}
    if a.fade_bounds:  # bounds chosen elsewhere (run 15: read off video frames)
        bounds = tuple(float(v) for v in a.fade_bounds.split(","))
        doc["benchmark"] += " --fade-bounds"
        doc["fade"] = {"fade_from": bounds[0], "fade_to": bounds[1]}
        described = check = measure(model, check_rows, a.data, 2, conditions)
        name = "strength-fade-fixed"
    else:
        fit = measure(model, fit_rows, a.data, 1, conditions)
        lds = np.array([d["log_detail"] for d in fit])
        grid = np.arange(np.floor(np.percentile(lds, 5) * 4) / 4, np.ceil(lds.max() * 4) / 4 + 0.01, 0.25)
        best = None
        for f0 in grid:
            for f1 in grid[grid > f0]:
                score = mean_psnr(fit, line, (float(f0), float(f1)))
                if best is None or score > best[0]:
                    best = (score, (float(f0), float(f1)))
        assert best is not None
        bounds = best[1]
        doc["fade"] = {"fade_from": bounds[0], "fade_to": bounds[1], "fit_mean_psnr": round(best[0], 4),
                       "fit_mean_psnr_without": round(mean_psnr(fit, line), 4)}
        doc["fit_sample"] = with_and_without(fit, line, bounds)
        described, check = fit, measure(model, check_rows, a.data, 2, conditions)
        name = "strength-fade"
    doc["log_detail_median"] = {k: round(float(np.median([d["log_detail"] for d in described if d["preset"] == k])), 3)
                                for k in conditions}
    doc["check_sample"] = with_and_without(check, line, bounds)
    out = a.out or RESULTS / f"{name}-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(json.dumps(doc, indent=1))
    for k in conditions:
        w, wo = doc["check_sample"]["with_fade"][k], doc["check_sample"]["without"][k]
        print(f"{k:9s} ld {doc['log_detail_median'][k]:.2f}  check psnr adaptive {wo['psnr_adaptive']:.3f} -> "
              f"{w['psnr_adaptive']:.3f}  (w {wo['mean_w']:.2f} -> {w['mean_w']:.2f}, best {w['mean_best_w']:.2f})")
    print(json.dumps(doc["fade"]))
    print(f"wrote {out}")


def with_and_without(samples: list[dict], line: StrengthConfig, bounds: tuple[float, float]) -> dict:
    """``report`` of ``samples`` with the line faded between ``bounds`` and with the line alone."""
    return {"with_fade": report(samples, replace(line, fade=bounds)),
            "without": report(samples, replace(line, fade=None))}


if __name__ == "__main__":
    main()
