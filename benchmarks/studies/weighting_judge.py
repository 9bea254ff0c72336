"""Run 6 of docs/visible-restoration.md: the product's reference detail transfer (hand-made
weighting, alpha 2) against the learned weighting at given dials, on the very same restored faces.

Per photo of 50 validation people (4 references, adaptive strength, the product's gate): PSNR,
``hf_energy``, ``hf_corr``, dlib identity distance, win vs generic and vs the wrong person's
identity and references (their generator output and their transfer), for no transfer, the
product and each dial. The judged run (seeds 10-12) computed the learned weighting's features
with the torch code it was trained with; this file uses the shipped NumPy path, whose outputs
differ from it by at most one grey level on 0.05 % of pixels.

    python -m benchmarks.studies.weighting_judge --seed 10 --preset severe [--dials 4 5] [--mids 0.5]

``--weights``: another student (a run 11 candidate) in place of the packaged one, for every method.

``--mids``: for each dial, also the learned transfer that moves that share of the references' mid
band (run 8, ``TransferConfig.mid``); ``bicubic`` (the degraded crop itself) is reported for the
PSNR floor.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.studies.fit_strength import candidate_strength
from enhancer.detail_transfer import TransferConfig, prepare_references, transfer_detail
from enhancer.evaluate import EvalConfig, _descriptor, degraded_tests, prepare, to_tensor, to_uint8
from enhancer.metrics import hf_corr, hf_energy, psnr
from enhancer.strength import blend
from enhancer.strength import strength as strength_weights
from enhancer.weighting_runtime import load_weighting_runtime

RESULTS = Path("benchmarks/results/eval/fusion")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/celeba")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--preset", default="severe")
    ap.add_argument("--dials", type=float, nargs="+", default=[4.0, 5.0])
    ap.add_argument("--mids", type=float, nargs="*", default=[])
    ap.add_argument("--mid-none", type=float, default=None, help="TransferConfig.mid_none for the --mids methods")
    ap.add_argument("--weights", default=None, help="a student to judge instead of the packaged one (run 11)")
    ap.add_argument("--strength-line", default=None, metavar="INTERCEPT,SLOPE",
                    help="the adaptive strength with this line (a candidate's own, from fit_strength --weights)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    cfg = EvalConfig(data=args.data, refs=4, preset=args.preset, seed=args.seed, model="student",
                     weights=args.weights, limit_identities=50, strength="adaptive")
    strength = candidate_strength(args.strength_line, None, args.weights)
    setup = prepare(cfg)
    m, people = setup.model, setup.people
    runtime = load_weighting_runtime()
    configs = {"product": (TransferConfig(alpha=2.0), None)}
    configs |= {f"learn{d:g}": (TransferConfig(alpha=d, learned=True), runtime) for d in args.dials}
    configs |= {f"learn{d:g}-mid{b:g}": (TransferConfig(alpha=d, learned=True, mid=b, mid_none=args.mid_none), runtime)
                for d in args.dials for b in args.mids}
    keys = ["none", *configs]
    stats = {k: {f: [] for f in ("psnr", "hfE", "hfC", "win", "dist", "win_wrong")} for k in keys}
    gdist: list[float] = []
    bicubic_psnr: list[float] = []
    with torch.inference_mode():
        idents = [m.encode(to_tensor(np.stack(r))[None]) for _, r, _ in people]
    for n, (ident, refs, tests) in enumerate(people):
        lq = degraded_tests(cfg, ident, tests)
        b, x, wn = len(tests), to_tensor(lq), (n + 1) % len(people)
        with torch.inference_mode():
            out = m.sample(torch.cat([x, x, x]), torch.cat([m.resolve_identity(None, b), idents[n].expand(b, -1, -1),
                                                            idents[wn].expand(b, -1, -1)]),
                           torch.cat([setup.noise[:b]] * 3), setup.steps)
        w = strength_weights(lq, strength)
        gen, per, wrong = (blend(lq, to_uint8(out[i * b:(i + 1) * b]), w) for i in range(3))
        prepared = {who: {k: prepare_references(np.stack(rs), c, r) for k, (c, r) in configs.items()}
                    for who, rs in (("own", refs), ("wrong", people[wn][1]))}
        for k, g in enumerate(tests):
            dg = _descriptor(g)
            gd = float(np.linalg.norm(_descriptor(gen[k]) - dg))
            gdist.append(gd)
            bicubic_psnr.append(psnr(g, lq[k]))
            for key in keys:
                y = per[k] if key == "none" else transfer_detail(per[k], lq[k], prepared["own"][key])
                yw = wrong[k] if key == "none" else transfer_detail(wrong[k], lq[k], prepared["wrong"][key])
                dd, dw = (float(np.linalg.norm(_descriptor(v) - dg)) for v in (y, yw))
                s = stats[key]
                s["psnr"].append(psnr(g, y))
                s["hfE"].append(hf_energy(y, g))
                s["hfC"].append(hf_corr(y, g))
                s["win"].append(dd < gd)
                s["dist"].append(dd)
                s["win_wrong"].append(dd < dw)
    res: dict = {"seed": args.seed, "preset": args.preset, "n_photos": len(gdist),
                 "generic_dist": float(np.mean(gdist)), "bicubic_psnr": round(float(np.mean(bicubic_psnr)), 4),
                 "weighting": runtime.model_id, "strength": vars(strength),
                 "student": setup.meta.get("model_id", args.weights or "packaged")}
    for key, s in stats.items():
        r = {f: round(float(np.nanmean(v)), 4) for f, v in s.items()}
        r["gap"] = round(float(np.mean(gdist) - np.mean(s["dist"])), 4)
        res[key] = r
        print(key, json.dumps(r), flush=True)
    path = args.out or RESULTS / f"run6-product-code-{args.preset}-s{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
