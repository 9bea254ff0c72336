"""`likeness eval`: does personalisation beat generic restoration on people the model never saw?

For each identity in a raw photo folder (laid out like ``../shared/data/celeba``): align every
photo (skips counted), take K reference photos and disjoint test photos, degrade each test
crop with a preset, and restore it four ways -- (a) bicubic, (b) generic (null identity),
(c) personalised with the person's own references, (d) personalised with another person's
references (control). The dlib 128-D descriptor is the independent judge of identity.

JSON (stable keys): config, counts{identities,test_images,skipped}, methods{bicubic,generic,
personalized,wrong_identity}{psnr,ssim,id_distance,landmark_distance,hf_energy,hf_corr}, win_rate{
personalized_vs_generic, personalized_vs_wrong_identity}, wall_time_s; plus per_identity and ci95
(95 % intervals of both win rates, of the identity gap and of each method's hf_energy and hf_corr
as ``hf_energy_<method>``/``hf_corr_<method>``, bootstrapped over identities). hf_energy/hf_corr
(enhancer/metrics.py) measure detail: how much of it relative to the truth, and whether it is the
truth's; per_identity also holds each method's mean psnr, hf_energy and hf_corr (the --plot points).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .dataprep import align_one, read_labels
from .degrade import degrade
from .detail_transfer import TransferConfig, prepare_references, transfer_detail
from .detect import face_descriptor
from .errors import InputError
from .metrics import hf_corr, hf_energy, identity_separability, landmark_distance, psnr, ssim
from .stats import cluster_ratio_ci, eval_intervals
from .strength import DEFAULT_STRENGTH, blend
from .strength import strength as strength_weights
from .weighting_runtime import WeightingRuntime, load_weighting_runtime
from .weights import default_steps, load_restorer

METHODS = ("bicubic", "generic", "personalized", "wrong_identity")
DETAIL_METRICS = ("hf_energy", "hf_corr")


@dataclass(frozen=True)
class EvalConfig:
    data: str
    refs: int = 4
    preset: str = "severe"
    seed: int = 0
    steps: int | None = None  # default: the model's own (student: trained steps; teacher: 8)
    model: str = "teacher"
    weights: str | None = None
    limit_identities: int | None = None
    max_tests: int = 4  # test photos per identity
    # auto: the model's validation identities if DIR has them, else all; "trained": the ones it
    # did not hold out (on its own training data: the people it learnt from)
    identities: str = "auto"
    size: int = 128
    strength: str = "full"  # or "adaptive": the pipeline's blend (enhancer/strength.py)
    # photos per identity set aside for references (default: refs). With a fixed pool, runs with
    # different ``refs`` restore the very same test photos, so a few-shot curve compares like with like.
    ref_pool: int | None = None
    # references = the first ``ref_pool`` photos by file name, tests = the next ones (no shuffle):
    # for folders whose names encode an enrol/test split, e.g. enrol on one clip, test on another.
    ordered: bool = False
    # each reference also mirrored (2K images into the encoder): the model trained on references
    # mirrored by their own coin, so the map and tokens it learnt from were mixtures of both sides
    ref_mirror: bool = False
    # gain of the reference detail transfer after the generator (enhancer/detail_transfer.py), with
    # each method's own references (generic has none); 0: off
    detail_transfer: float = 0.0
    # (detail_full, detail_none) of the transfer's gate (TransferConfig); None: its defaults
    transfer_gate: tuple[float, float] | None = None
    # where the transferred detail goes: the packaged learned weighting, or the hand-made one
    transfer_learned: bool = False
    # share of the references' mid band the learned weighting also moves, and where it reaches 0
    # (TransferConfig.mid, mid_none; the hand-made weighting moves no mid band)
    transfer_mid: float = 0.0
    transfer_mid_none: float | None = None


def reference_set(crops: np.ndarray, mirror: bool) -> np.ndarray:
    """Aligned references (K, S, S, 3), with ``mirror`` followed by their mirror images (2K)."""
    return np.concatenate([crops, crops[:, :, ::-1]]) if mirror else crops


def _seed_of(*parts) -> int:
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def _descriptor(crop: np.ndarray) -> np.ndarray:
    return face_descriptor(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def _select_identities(rows: list[tuple[str, str]], cfg: EvalConfig, val_ids: list[str]) -> tuple[list[str], str]:
    present = sorted({i for _, i in rows}, key=lambda s: _seed_of(cfg.seed, s))
    mode = cfg.identities
    if mode == "auto":
        mode = "val" if set(val_ids) & set(present) else "all"
    if mode == "trained" and not val_ids:
        raise InputError("--identities trained: these weights record no held-out identities, so which ones "
                         "they trained on is unknown")
    held_out = set(val_ids)
    if mode == "val":
        return [i for i in present if i in held_out], mode
    if mode == "trained":  # the people the model learnt from: is a shortfall generalisation or fitting?
        return [i for i in present if i not in held_out], mode
    return present, mode


def collect_people(cfg: EvalConfig, src: Path, rows: list[tuple[str, str]],
                   chosen: list[str]) -> tuple[list[tuple[str, list[np.ndarray], list[np.ndarray]]], dict]:
    """Align each chosen identity's photos and split them into references and test photos (seeded
    shuffle, or by file name with ``ordered``); identities with too few usable photos are skipped."""
    by_id: dict[str, list[str]] = defaultdict(list)
    for rel, ident in rows:
        by_id[ident].append(rel)
    pool = max(cfg.refs, cfg.ref_pool or cfg.refs)
    need = pool + 1
    skipped = {"photos": 0, "identities_too_few_photos": 0}
    people: list[tuple[str, list[np.ndarray], list[np.ndarray]]] = []
    for ident in tqdm(chosen, desc="align", unit="id"):
        if cfg.limit_identities and len(people) >= cfg.limit_identities:
            break
        crops = []
        for rel in sorted(by_id[ident]):
            crop, reason = align_one(src / rel, cfg.size, 20.0)
            if crop is None:
                skipped["photos"] += 1
            else:
                crops.append(crop)
        if len(crops) < need:
            skipped["identities_too_few_photos"] += 1
            continue
        if not cfg.ordered:
            order = np.random.default_rng(_seed_of(cfg.seed, ident)).permutation(len(crops))
            crops = [crops[i] for i in order]
        people.append((ident, crops[: cfg.refs], crops[pool:][: cfg.max_tests]))
    if len(people) < 2:
        raise InputError(f"{src}: need >= 2 identities with >= {need} alignable photos, found {len(people)}")
    return people, skipped


@dataclass
class EvalSetup:
    """What every restoration of an eval run shares; one place builds it, so a diagnostic that
    restores "the eval's photos" another way (benchmarks/studies/identity_headroom.py) gets the very same."""

    model: torch.nn.Module
    meta: dict
    steps: int
    mode: str  # the identities mode actually used ("auto" resolved)
    people: list[tuple[str, list[np.ndarray], list[np.ndarray]]]  # (identity, references, test photos)
    skipped: dict
    noise: torch.Tensor  # (max_tests, 3, S, S): the fixed sampler noise, test photo k uses row k


def prepare(cfg: EvalConfig) -> EvalSetup:
    src = Path(cfg.data)
    rows = read_labels(src)
    model, meta = load_restorer(Path(cfg.weights) if cfg.weights else None, kind=cfg.model)
    steps = cfg.steps or default_steps(meta.get("kind", "student"), meta["extra"])
    val_ids = [str(v) for v in meta["extra"].get("val_identities", [])]
    chosen, mode = _select_identities(rows, cfg, val_ids)
    people, skipped = collect_people(cfg, src, rows, chosen)
    noise = torch.randn(cfg.max_tests, 3, cfg.size, cfg.size, generator=torch.Generator().manual_seed(cfg.seed))
    return EvalSetup(model, meta, steps, mode, people, skipped, noise)


def degraded_tests(cfg: EvalConfig, ident: str, tests: list[np.ndarray]) -> np.ndarray:
    """The person's test photos degraded with the preset, each with its own fixed seed."""
    return np.stack([degrade(c, cfg.preset, _seed_of(cfg.seed, ident, k)) for k, c in enumerate(tests)])


def evaluate(cfg: EvalConfig, grid_path: Path | None = None) -> dict:
    t0 = time.perf_counter()
    setup = prepare(cfg)
    model, meta, steps, mode, people, skipped = (setup.model, setup.meta, setup.steps, setup.mode, setup.people,
                                                 setup.skipped)

    torch.manual_seed(cfg.seed)
    with torch.inference_mode():
        idents = [model.encode(to_tensor(reference_set(np.stack(r), cfg.ref_mirror))[None]) for _, r, _ in people]
        # a second view of each person (their first test photo, alone) for the encoder's own score
        views = [model.encode(to_tensor(t[0][None])[None]) for _, _, t in people]
    encoder = identity_separability(torch.cat(idents)[:, 0].numpy(), torch.cat(views)[:, 0].numpy())
    per_method: dict[str, dict[str, list[float]]] = {m: defaultdict(list) for m in METHODS}
    wins_g, wins_w, n_test = 0, 0, 0
    per_identity = []
    grid_rows = []
    detail_sums: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    transfer = _transfer(cfg)
    for n, (ident, _, tests) in enumerate(tqdm(people, desc=f"eval {cfg.preset}", unit="id")):
        gt = np.stack(tests)
        lq = degraded_tests(cfg, ident, tests)
        b = len(tests)
        x = to_tensor(lq)
        noise = setup.noise[:b]
        own = idents[n].expand(b, -1, -1)
        other = idents[(n + 1) % len(people)].expand(b, -1, -1)
        with torch.inference_mode():
            out = model.sample(torch.cat([x, x, x]), torch.cat([model.resolve_identity(None, b), own, other]),
                               torch.cat([noise, noise, noise]), steps)
        outs = {"bicubic": lq, "generic": to_uint8(out[:b]), "personalized": to_uint8(out[b:2 * b]),
                "wrong_identity": to_uint8(out[2 * b:])}
        if cfg.strength == "adaptive":
            w = strength_weights(lq, DEFAULT_STRENGTH)
            outs.update({m: blend(lq, outs[m], w) for m in METHODS if m != "bicubic"})
        if transfer is not None:
            tcfg, weighting = transfer
            for m, donor in (("personalized", n), ("wrong_identity", (n + 1) % len(people))):
                prepared = prepare_references(np.stack(people[donor][1]), tcfg, weighting)
                outs[m] = np.stack([transfer_detail(o, d, prepared) for o, d in zip(outs[m], lq, strict=True)])
        gt_desc = [_descriptor(g) for g in gt]
        dist = {}
        for m, imgs in outs.items():
            dist[m] = [float(np.linalg.norm(_descriptor(o) - d)) for o, d in zip(imgs, gt_desc, strict=True)]
            for o, g, dd in zip(imgs, gt, dist[m], strict=True):
                per_method[m]["psnr"].append(psnr(g, o))
                per_method[m]["ssim"].append(ssim(g, o))
                per_method[m]["id_distance"].append(dd)
                per_method[m]["landmark_distance"].append(landmark_distance(g, o))
                per_method[m]["hf_energy"].append(hf_energy(o, g))
                per_method[m]["hf_corr"].append(hf_corr(o, g))
        wg = sum(p < q for p, q in zip(dist["personalized"], dist["generic"], strict=True))
        ww = sum(p < q for p, q in zip(dist["personalized"], dist["wrong_identity"], strict=True))
        wins_g += wg
        wins_w += ww
        n_test += b
        per_identity.append({"identity": ident, "tests": b, "win_vs_generic": wg, "win_vs_wrong": ww,
                             "id_distance": {m: float(np.mean(v)) for m, v in dist.items()},
                             **{k: {m: _nanmean(per_method[m][k][-b:]) for m in METHODS}
                                for k in ("psnr", *DETAIL_METRICS)}})
        for m in METHODS:  # finite sums and counts per identity, for the detail metrics' intervals
            for k in DETAIL_METRICS:
                v = np.array(per_method[m][k][-b:])
                detail_sums[(k, m)].append((float(v[np.isfinite(v)].sum()), int(np.isfinite(v).sum())))
        if grid_path is not None and len(grid_rows) < 8:
            grid_rows.append(np.hstack([gt[0]] + [outs[m][0] for m in METHODS]))
    methods = {m: {k: _nanmean(v) for k, v in d.items()} for m, d in per_method.items()}
    for m in METHODS:
        methods[m]["landmark_failures"] = int(sum(math.isnan(v) for v in per_method[m]["landmark_distance"]))
    result = {
        "config": {**asdict(cfg), "steps": steps, "identities_mode": mode, "model_id": meta["model_id"]},
        "counts": {"identities": len(people), "test_images": n_test, "skipped": skipped},
        "methods": methods,
        "encoder_separability": encoder,
        "win_rate": {"personalized_vs_generic": wins_g / n_test, "personalized_vs_wrong_identity": wins_w / n_test},
        "ci95": {**eval_intervals(per_identity), **_detail_intervals(detail_sums)},
        "wall_time_s": round(time.perf_counter() - t0, 1),
        "per_identity": per_identity,
    }
    if grid_path is not None and grid_rows:
        _write_grid(grid_path, grid_rows)
    return result


def _transfer(cfg: EvalConfig) -> tuple[TransferConfig, WeightingRuntime | None] | None:
    """The reference detail transfer the run applies (its settings and, if learned, its network), or None."""
    if cfg.detail_transfer <= 0:
        return None
    gate = {} if cfg.transfer_gate is None else dict(zip(("detail_full", "detail_none"), cfg.transfer_gate,
                                                          strict=True))
    tcfg = TransferConfig(alpha=cfg.detail_transfer, learned=cfg.transfer_learned,
                          mid=cfg.transfer_mid if cfg.transfer_learned else 0.0,
                          mid_none=cfg.transfer_mid_none if cfg.transfer_learned else None, **gate)
    return tcfg, load_weighting_runtime() if cfg.transfer_learned else None


def _detail_intervals(sums: dict[tuple[str, str], list[tuple[float, int]]]) -> dict[str, list[float]]:
    """95 % intervals of each method's mean hf_energy and hf_corr, resampling identities (as the win rates)."""
    out = {}
    for (k, m), rows in sums.items():
        s, n = np.array(rows, dtype=np.float64).T
        lo, hi = cluster_ratio_ci(s, n) if n.sum() > 0 else (math.nan, math.nan)
        out[f"{k}_{m}"] = [round(lo, 4), round(hi, 4)]
    return out


def _nanmean(v: list[float]) -> float:
    a = np.array(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else float("nan")


def _write_grid(path: Path, rows: list[np.ndarray]) -> None:
    grid = np.vstack(rows)
    head = np.full((22, grid.shape[1], 3), 255, np.uint8)
    w = grid.shape[1] // 5
    for i, name in enumerate(("ground truth",) + METHODS):
        cv2.putText(head, name, (i * w + 3, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([head, grid]))


def summary_table(r: dict) -> str:
    lines = [f"{'method':16s} {'PSNR':>7s} {'SSIM':>6s} {'ID dist':>8s} {'LM dist':>8s} {'HF en':>6s} {'HF corr':>7s}"]
    for m in METHODS:
        d = r["methods"][m]
        detail = f" {d['hf_energy']:6.3f} {d['hf_corr']:7.3f}" if "hf_corr" in d else ""  # older JSONs lack them
        lines.append(f"{m:16s} {d['psnr']:7.2f} {d['ssim']:6.3f} {d['id_distance']:8.3f} "
                     f"{d['landmark_distance']:8.3f}{detail}")
    w = r["win_rate"]
    lines.append(f"win rate personalised vs generic {w['personalized_vs_generic']:.1%}, "
                 f"vs wrong identity {w['personalized_vs_wrong_identity']:.1%}; "
                 f"{r['counts']['identities']} identities, {r['counts']['test_images']} test photos, "
                 f"{r['wall_time_s']} s")
    if "ci95" in r:
        c = r["ci95"]
        lines.append("95 % interval (bootstrap over identities): win vs generic "
                     f"{c['win_personalized_vs_generic'][0]:.1%}-{c['win_personalized_vs_generic'][1]:.1%}, "
                     f"identity gap {c['id_gap_generic_minus_personalized'][0]:.3f}-"
                     f"{c['id_gap_generic_minus_personalized'][1]:.3f}")
    if "encoder_separability" in r:
        e = r["encoder_separability"]
        lines.append(f"encoder alone (refs vs one test photo): top-1 {e['top1']:.1%} (chance {e['chance_top1']:.1%}), "
                     f"AUC {e['auc']:.3f}, spread {e['spread']:.4f}")
    return "\n".join(lines)


def write_json(path: Path, r: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(r, indent=2))
