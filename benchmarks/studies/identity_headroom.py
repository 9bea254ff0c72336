"""How much identity can the generator put into a restoration, given the best possible reference?

Why: the personalisation margin is below target, and the two candidate causes need different
fixes. If the identity encoder summarises other photos of a person poorly, a better encoder or
more identities would help; if the generator cannot turn identity into detail the judge sees,
only the generator (capacity, training) can. This restores each test photo of `likeness eval`
(same people, photos, degradation seeds and noise) four ways and compares the dlib identity
distance to the truth:

- ``generic``: the null identity;
- ``personalized``: the person's K reference photos (what `likeness eval` reports);
- ``oracle_self``: the *clean test photo itself* as the only reference, the best reference there
  can be (an upper bound for what an identity representation of this size conveys);
- ``oracle_refs_and_self``: the K references plus the clean test photo;
- with ``--guidance S ...``: ``guided_S``, identity guidance ``generic + S (personalized - generic)``
  (for a 1-step sampler the same as guiding the model's v-prediction): does pushing further along
  the identity direction help, or only the mean?

    python -m benchmarks.studies.identity_headroom [--data ../shared/data/celeba] [--model student]
        [--identities val|trained] [--guidance 1.5 2] [--out benchmarks/results/eval/ablation/headroom-....json]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from enhancer.evaluate import EvalConfig, _descriptor, degraded_tests, prepare, to_tensor, to_uint8, write_json

RESULTS = Path(__file__).resolve().parents[1] / "results" / "eval" / "ablation"
METHODS = ("generic", "personalized", "oracle_self", "oracle_refs_and_self")


def headroom(cfg: EvalConfig, guidance: tuple[float, ...] = ()) -> dict:
    t0 = time.perf_counter()
    setup = prepare(cfg)  # the eval's own people, photos, steps and noise
    model, people = setup.model, setup.people
    guided = [f"guided_{g:g}" for g in guidance]
    compared = [*METHODS[1:], *guided]
    dist: dict[str, list[float]] = {m: [] for m in ("bicubic", *METHODS, *guided)}
    for ident, refs, tests in tqdm(people, desc="headroom", unit="id"):
        lq = degraded_tests(cfg, ident, tests)
        b = len(tests)
        with torch.inference_mode():
            own = model.encode(to_tensor(np.stack(refs))[None])
            idents = [model.resolve_identity(None, b), own.expand(b, -1, -1),
                      torch.cat([model.encode(to_tensor(t[None])[None]) for t in tests]),
                      torch.cat([model.encode(to_tensor(np.stack([*refs, t]))[None]) for t in tests])]
            x = to_tensor(lq)
            out = model.sample(x.repeat(len(METHODS), 1, 1, 1), torch.cat(idents),
                               setup.noise[:b].repeat(len(METHODS), 1, 1, 1), setup.steps)
        gt_desc = [_descriptor(t) for t in tests]
        outs = {"bicubic": lq, **{m: to_uint8(out[k * b:(k + 1) * b]) for k, m in enumerate(METHODS)}}
        gen_out, own_out = out[:b], out[b:2 * b]
        outs.update({m: to_uint8((gen_out + g * (own_out - gen_out)).clamp(-1, 1))
                     for m, g in zip(guided, guidance, strict=True)})
        for m, imgs in outs.items():
            dist[m] += [float(np.linalg.norm(_descriptor(o) - d)) for o, d in zip(imgs, gt_desc, strict=True)]
    gen = np.array(dist["generic"])
    return {
        "config": {"data": cfg.data, "model": cfg.model, "model_id": setup.meta["model_id"], "steps": setup.steps,
                   "refs": cfg.refs, "preset": cfg.preset, "identities_mode": setup.mode, "seed": cfg.seed,
                   "guidance": list(guidance)},
        "counts": {"identities": len(people), "test_images": len(gen)},
        "id_distance": {m: float(np.mean(v)) for m, v in dist.items()},
        "gap_vs_generic": {m: float(np.mean(np.array(dist[m]) - gen)) for m in compared},
        "win_rate_vs_generic": {m: float(np.mean(np.array(dist[m]) < gen)) for m in compared},
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "wall_time_s": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/celeba")
    ap.add_argument("--model", default="student", choices=["student", "teacher"])
    ap.add_argument("--weights")
    ap.add_argument("--steps", type=int, help="sampler steps (default: the model's own)")
    ap.add_argument("--refs", type=int, default=4)
    ap.add_argument("--preset", default="severe")
    ap.add_argument("--identities", default="val", choices=["val", "trained"])
    ap.add_argument("--limit-identities", type=int, default=50)
    ap.add_argument("--guidance", type=float, nargs="*", default=[],
                    help="also identity guidance at these scales (1: the personalised output)")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    cfg = EvalConfig(data=a.data, refs=a.refs, preset=a.preset, model=a.model, weights=a.weights, steps=a.steps,
                     limit_identities=a.limit_identities, identities=a.identities)
    r = headroom(cfg, tuple(a.guidance))
    out = a.out or RESULTS / f"headroom-{a.model}-{a.preset}-refs{a.refs}-{a.identities}.json"
    write_json(out, r)
    for m in r["id_distance"]:
        if m == "bicubic":
            continue
        g = r["gap_vs_generic"].get(m)
        print(f"{m:22s} id distance {r['id_distance'][m]:.3f}"
              + (f"  vs generic {g:+.3f}, win {r['win_rate_vs_generic'][m]:.1%}" if g is not None else ""))
    print(f"bicubic                id distance {r['id_distance']['bicubic']:.3f}; "
          f"{r['counts']['identities']} identities, {r['counts']['test_images']} photos; wrote {out}")


if __name__ == "__main__":
    main()
