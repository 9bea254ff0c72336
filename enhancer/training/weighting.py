"""Training the learned reference weighting (``enhancer.models.reference_weighting``).

Why this objective: the weighting only decides how much of each reference's detail goes where,
so it is trained on what it changes, the high-pass band of the restored face, against the truth's,
with the squared error. That gives the minimum-error (conservative) amount of detail; the
transfer's gain (``TransferConfig.alpha``) is the dial that scales it up to a visible amount,
chosen on held-out people by a rule (docs/visible-restoration.md, run 6).

The samples are the shipped student's own outputs (adaptive strength, as a call runs it) on
people it trained on, never the validation people; they are built once into the run folder, so a
resumed run trains on the very same samples.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..detail_transfer import PreparedReferences, TransferConfig, prepare_references, weighting_features
from ..evaluate import EvalConfig, degraded_tests, prepare, to_tensor, to_uint8
from ..models.reference_weighting import ReferenceWeighting, WeightingConfig
from ..strength import DEFAULT_STRENGTH, blend, log_detail
from ..strength import strength as strength_weights
from ..weights import export_weighting
from .checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger("likeness.train.weighting")


@dataclass(frozen=True)
class WeightingTrainConfig:
    data: str  # a CelebA-style folder (photos + identity labels), as `likeness eval` reads
    run_dir: str
    out: str  # the exported weights
    student: str | None = None  # default: the packaged student
    identities: int = 400  # trained-on people the samples come from
    variants: tuple[tuple[str, int], ...] = (("severe", 100), ("moderate", 101), ("severe", 102))
    steps: int = 3000
    batch: int = 8
    lr: float = 1e-3
    hp_sigma: float = 2.0  # the band the loss compares: image minus Gaussian(hp_sigma)
    seed: int = 0
    ckpt_every: int = 500
    model: WeightingConfig = WeightingConfig()


def build_samples(cfg: WeightingTrainConfig, path: Path) -> dict[str, np.ndarray]:
    """The student's adaptive outputs on ``cfg.identities`` trained-on people, with the truth, the
    degradation level and each person's 4 references; cached in ``path``."""
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    base = EvalConfig(data=cfg.data, refs=4, preset=cfg.variants[0][0], seed=cfg.variants[0][1], model="student",
                      weights=cfg.student, limit_identities=cfg.identities, strength="adaptive", identities="trained")
    setup = prepare(base)
    model = setup.model
    out: dict[str, list] = {"o": [], "g": [], "ld": [], "ri": [], "refs": []}
    for p, (ident, refs, tests) in enumerate(tqdm(setup.people, desc="samples", unit="id")):
        out["refs"].append(np.stack(refs))
        with torch.inference_mode():
            identity = model.encode(to_tensor(np.stack(refs))[None])
        for preset, seed in cfg.variants:
            lq = degraded_tests(replace(base, preset=preset, seed=seed), ident, tests)
            b = len(tests)
            with torch.inference_mode():
                o = model.sample(to_tensor(lq), identity.expand(b, -1, -1), setup.noise[:b], setup.steps)
            out["o"].append(blend(lq, to_uint8(o), strength_weights(lq, DEFAULT_STRENGTH)))
            out["g"].append(np.stack(tests))
            out["ld"].append(log_detail(lq).astype(np.float32))
            out["ri"] += [p] * b
    arrays = {k: (np.stack(v) if k == "refs" else np.array(v) if k == "ri" else np.concatenate(v))
              for k, v in out.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def high_pass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x minus its Gaussian blur (radius ceil(3 sigma), mirrored border), per channel."""
    r = math.ceil(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma * sigma))
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x - y


def _batch(samples: dict[str, np.ndarray], rows: np.ndarray, flips: np.ndarray,
           prepared: dict[tuple[int, bool], PreparedReferences]) -> tuple[torch.Tensor, ...]:
    """Features, references' detail, restored faces and truths of one batch (mirrored per flag)."""
    feats: list[list[np.ndarray]] = [[], [], [], [], [], []]
    for i, flip in zip(rows, flips, strict=True):
        o, g = samples["o"][i], samples["g"][i]
        if flip:
            o, g = o[:, ::-1], g[:, ::-1]
        refs = prepared[(int(samples["ri"][i]), bool(flip))]
        d, per_ref, glob = weighting_features(np.ascontiguousarray(o, dtype=np.float32), float(samples["ld"][i]), refs)
        for lst, a in zip(feats, (d, refs.detail.transpose(0, 3, 1, 2), per_ref, glob, o.transpose(2, 0, 1),
                                  g.transpose(2, 0, 1)), strict=True):
            lst.append(np.ascontiguousarray(a, dtype=np.float32))
    return tuple(torch.from_numpy(np.stack(f)) for f in feats)


def train_weighting(cfg: WeightingTrainConfig) -> dict:
    run = Path(cfg.run_dir)
    run.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _train(cfg, run)
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(cfg: WeightingTrainConfig, run: Path) -> dict:
    samples = build_samples(cfg, run / "samples.npz")
    rows = np.flatnonzero(samples["ld"] < TransferConfig().detail_none)  # the gate gives the rest no gain
    torch.manual_seed(cfg.seed)
    model = ReferenceWeighting(cfg.model)
    opt = torch.optim.Adam(model.parameters(), cfg.lr)
    ckpt, step, wall = run / "ckpt.safetensors", 0, 0.0
    if ckpt.is_file():
        meta = load_checkpoint(ckpt, model, None, opt, torch.device("cpu"))
        step, wall = meta["step"], meta["wall_s"]
        log.info("resumed at step %d", step)
    tcfg = TransferConfig(learned=True)
    shape = model.runtime()  # what the features need of the network: its config (not its weights)
    prepared: dict[tuple[int, bool], PreparedReferences] = {}
    for p in np.unique(samples["ri"][rows]):
        refs = samples["refs"][p]
        prepared[(int(p), False)] = prepare_references(refs, tcfg, shape)
        prepared[(int(p), True)] = prepare_references(np.ascontiguousarray(refs[:, :, ::-1]), tcfg, shape)
    t0, losses = time.perf_counter(), []
    bar = tqdm(total=cfg.steps, initial=step, desc="weighting", unit="step")
    while step < cfg.steps:
        rng = np.random.default_rng([cfg.seed, step])  # a batch is a function of the step: exact resume
        chosen = rng.choice(rows, cfg.batch)
        d, detail, per_ref, glob, o, g = _batch(samples, chosen, rng.random(cfg.batch) < 0.5, prepared)
        y = o + model(d, detail, per_ref, glob)
        loss = (high_pass(y - g, cfg.hp_sigma) ** 2).mean() / 255 ** 2
        with torch.no_grad():
            base = (high_pass(o - g, cfg.hp_sigma) ** 2).mean() / 255 ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        losses.append((loss.item(), base.item()))
        bar.update(1)
        if step % 100 == 0:
            a = np.mean(losses[-100:], 0)
            log.info("step %d band error %.6f (no transfer %.6f)", step, a[0], a[1])
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt, model, None, opt, {"step": step, "wall_s": wall + time.perf_counter() - t0})
    bar.close()
    wall += time.perf_counter() - t0
    last = np.mean(losses[-300:], 0) if losses else [float("nan")] * 2
    extra = {"train": {k: v for k, v in asdict(cfg).items() if k not in ("run_dir", "out")},
             "samples": int(len(rows)), "people": int(len(prepared) // 2), "train_seconds": round(wall, 1),
             "band_error_last300": float(last[0]), "band_error_no_transfer": float(last[1])}
    model_id = export_weighting(model, Path(cfg.out), extra)
    result = {"model_id": model_id, "out": cfg.out, **extra}
    (run / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    return result
