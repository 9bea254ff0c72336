"""What a dlib identity distance means on the eval's own photos: reference points for the judge.

Why: `likeness eval` reports the personalised output at ~0.59 from the truth and the generic one
at ~0.63. Whether that is "blurry but right" or "the wrong face" needs a scale measured on the
same photos: the clean test photo mirrored, Gaussian-blurred to a range of PSNRs (a face with
every feature in place, only soft), another clean photo of the same person (their references),
and a clean photo of someone else. If a blurred truth at the outputs' PSNR is far closer than
the outputs, their shortfall is in the face's shape, not its sharpness.

    python -m benchmarks.studies.judge_scale [--data ../shared/data/celeba] [--seed 0] [--out PATH]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from enhancer.evaluate import EvalConfig, _descriptor, prepare, write_json
from enhancer.metrics import psnr

RESULTS = Path(__file__).resolve().parents[1] / "results" / "eval"
SIGMAS = (1.0, 2.0, 3.0, 4.0)


def judge_scale(cfg: EvalConfig, sigmas: tuple[float, ...] = SIGMAS) -> dict:
    t0 = time.perf_counter()
    people = prepare(cfg).people  # the eval's own people, references and test photos
    dist: dict[str, list[float]] = {"mirrored": [], "same_person_other_photo": [], "other_person": [],
                                    **{f"blur_{s:g}": [] for s in sigmas}}
    blur_psnr: dict[str, list[float]] = {f"blur_{s:g}": [] for s in sigmas}
    ref_desc = [[_descriptor(r) for r in refs] for _, refs, _ in people]
    for n, (_, _, tests) in enumerate(tqdm(people, desc="judge scale", unit="id")):
        other = ref_desc[(n + 1) % len(people)]  # the eval's wrong-identity pairing
        for g in tests:
            d = _descriptor(g)
            dist["mirrored"].append(float(np.linalg.norm(_descriptor(cv2.flip(g, 1)) - d)))
            dist["same_person_other_photo"].append(float(np.mean([np.linalg.norm(r - d) for r in ref_desc[n]])))
            dist["other_person"].append(float(np.mean([np.linalg.norm(r - d) for r in other])))
            for s in sigmas:
                b = cv2.GaussianBlur(g, (0, 0), s)
                dist[f"blur_{s:g}"].append(float(np.linalg.norm(_descriptor(b) - d)))
                blur_psnr[f"blur_{s:g}"].append(psnr(g, b))
    return {
        "config": {"data": cfg.data, "refs": cfg.refs, "seed": cfg.seed, "identities_mode": cfg.identities,
                   "limit_identities": cfg.limit_identities, "sigmas": list(sigmas)},
        "counts": {"identities": len(people), "test_images": len(dist["mirrored"])},
        "id_distance": {k: float(np.mean(v)) for k, v in dist.items()},
        "blur_psnr": {k: float(np.mean(v)) for k, v in blur_psnr.items()},
        "machine": {"platform": platform.platform()},
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/celeba")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit-identities", type=int, default=50)
    ap.add_argument("--out", type=Path, default=RESULTS / "judge-scale.json")
    a = ap.parse_args()
    cfg = EvalConfig(data=a.data, refs=4, seed=a.seed, model="student", limit_identities=a.limit_identities)
    r = judge_scale(cfg)
    write_json(a.out, r)
    for k, v in r["id_distance"].items():
        extra = f"  (PSNR {r['blur_psnr'][k]:.2f} dB)" if k in r["blur_psnr"] else ""
        print(f"{k:26s} id distance {v:.3f}{extra}")
    print(f"{r['counts']['identities']} identities, {r['counts']['test_images']} photos; wrote {a.out}")


if __name__ == "__main__":
    main()
