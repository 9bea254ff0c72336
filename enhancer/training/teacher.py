"""`likeness train teacher`: joint identity encoder + diffusion generator training.

Each sample: a target crop of one identity, degraded (from the packed real-codec pool, or on
the fly), and K in [1, 5] *other* crops of the same identity as references. With probability
``id_dropout`` the identity is replaced by the learned null identity, which teaches the
generic mode. v-prediction MSE, AdamW, EMA, gradient clipping, bf16 autocast.

Optionally (``id_contrast`` > 0) an InfoNCE term on the encoder's global vector: the
references and the target photo itself, encoded as two sets, must match each other and not
the other identities in the batch (labels from the dataset, never the dlib judge). Why: the
diffusion loss alone, at our compute, left the encoder nearly constant (its global vector
varied by 0.6 % of its norm across held-out people), so the generator had nothing to use.

Optionally (``id_output`` > 0) an identity term on the *output*: the generator's one-shot
estimate of the clean face, read by our own encoder (its weights held fixed for this term),
must be recognised as its own person (its reference photos) among the batch. Why: the
diffusion loss rewards identity detail only as far as it lowers pixel MSE, which is little;
this rewards it directly. Applied to personalised and generic samples alike, so the generic
baseline is trained on the same objective and stays a fair comparison. Weighted by the
sample's degradation preset (``id_output_weights``): applied uniformly, it made sharp (`mild`)
restorations drift *away* from the person (a sharp crop needs no identity help, and the term
then trades fidelity for what our encoder likes), so by default mild crops are left out.

Optionally (``id_margin`` > 0) a margin term (``identity_margin``): the personalised one-shot
estimate must be nearer the clean target photo than the generic estimate of the same noisy
input. Why: the output term improved the generic and personalised modes alike, so the gap
between them, the thing personalisation adds and the eval's win rate measures, stayed small.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..models.config import ModelConfig
from ..models.restorer import Restorer, count_params, generator_gflops, load_grown
from ..weights import export_weights
from .data import RefSampler, load_pack, make_batch, prepare_split, starve_input
from .loop import StopFlag, autocast, ema_update, hardware, lr_at, pick_device, setup_logging, write_json
from .loss import TeacherLoss
from .options import RunOptions
from .preset_weights import ID_OUTPUT_WEIGHTS, check_margin_anchor, check_ref_flip, preset_weights
from .run_state import RunState


@dataclass(frozen=True)
class TeacherConfig(RunOptions):
    pack: str
    run_dir: str = "runs/teacher"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(residual_scale=4.0))
    init: str | None = None  # start from these weights (fine-tuning), e.g. a GPU-trained teacher
    batch: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 300
    ema: float = 0.999
    k_min: int = 1
    k_max: int = 5
    eval_steps: int = 8
    id_contrast: float = 0.1  # weight of the identity InfoNCE term (the packaged teacher's stage 3; 0: off)
    id_temperature: float = 0.1
    id_output: float = 0.0  # weight of the output identity term (0: off)
    # per-preset multiplier of the output term; presets not named get 1 (stage 4 used 1 everywhere)
    id_output_weights: tuple[tuple[str, float], ...] = ID_OUTPUT_WEIGHTS
    # identity cross-attention from this generator level up (0: 64x64, 1: 32x32, 2: 16x16 as
    # shipped); None keeps ``model``'s. With ``init``, the added layers start at zero (load_grown).
    attn_min_level: int | None = None
    # spatial identity map side (EncoderConfig.spatial); None keeps ``model``'s. With ``init``,
    # the added layers start at zero (load_grown), so training starts from the init's outputs.
    spatial_identity: int | None = None
    # fine spatial map side (EncoderConfig.spatial_fine); None keeps ``model``'s; grown like the map
    spatial_fine: int | None = None
    # weight of the personalisation margin on the one-shot estimate (0: off): the personalised
    # estimate must be nearer the anchor than the generic estimate of the same noisy input, held
    # fixed (``identity_margin``); "target": the clean photo (the eval's criterion), or "references"
    id_margin: float = 0.0
    margin_anchor: str = "target"
    ref_flip: str = "with-target"  # preset_weights.REF_FLIPS; stages 1-9 trained with "independent"
    self_ref: float = 0.0  # share of samples with the target itself as a reference (diagnostic only)
    starve: float = 0.0  # share of samples whose degraded input is starved to 16 px (data.starve_input)

    def __post_init__(self) -> None:
        check_margin_anchor(self.margin_anchor)
        check_ref_flip(self.ref_flip)
        if not 0.0 <= self.self_ref <= 1.0:
            raise ValueError(f"self_ref must be in [0, 1], not {self.self_ref}")
        if not 0.0 <= self.starve <= 1.0:
            raise ValueError(f"starve must be in [0, 1], not {self.starve}")


def train_teacher(cfg: TeacherConfig) -> dict:
    run = Path(cfg.run_dir)
    log = setup_logging(run, "train")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    mcfg = cfg.model  # built first: a bad --init fails before the pack is decoded
    if cfg.attn_min_level is not None:
        mcfg = replace(mcfg, generator=replace(mcfg.generator, attn_min_level=cfg.attn_min_level))
    if cfg.spatial_identity is not None:
        mcfg = replace(mcfg, encoder=replace(mcfg.encoder, spatial=cfg.spatial_identity))
    if cfg.spatial_fine is not None:
        mcfg = replace(mcfg, encoder=replace(mcfg.encoder, spatial_fine=cfg.spatial_fine))
    model = Restorer(mcfg).to(device)
    built_cfg = asdict(replace(cfg, model=mcfg))  # what the logs and weights record: the model as built
    if cfg.init:
        from ..weights import load_restorer

        init, _ = load_restorer(Path(cfg.init))
        added = load_grown(model, init)
        log.info("initialised from %s%s", cfg.init, f" (new layers: {len(added)} tensors)" if added else "")
    train_ids, val_ids = prepare_split(Path(cfg.pack), cfg.n_val, cfg.split_seed)
    write_json(run / "split.json", {"train": train_ids, "val": val_ids, "seed": cfg.split_seed})
    pool = load_pack(Path(cfg.pack), device, keep=set(train_ids))
    sampler = RefSampler(pool, cfg.k_max, cfg.seed, cfg.ref_flip, cfg.self_ref)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    state = RunState.open(run, model, ema, opt, sampler, gen, cfg, device, log)
    info = {"generator_params": count_params(model.generator), "encoder_params": count_params(model.encoder),
            "generator_gflops": round(generator_gflops(model), 3), "train_images": len(pool.labels),
            "train_identities": len(train_ids), "val_identities": len(val_ids), "device": str(device),
            "hardware": hardware(), "config": built_cfg}
    log.info("start %s", json.dumps(info))
    print(f"generator {info['generator_params'] / 1e6:.2f} M params, {info['generator_gflops']:.2f} GFLOP/forward; "
          f"encoder {info['encoder_params'] / 1e6:.2f} M; {len(pool.labels)} images / {len(train_ids)} identities")
    size = cfg.model.generator.size
    contrasts: list[float] = []  # the identity InfoNCE term alone, when on
    out_ids: list[float] = []  # the output identity term alone, when on
    margins: list[float] = []  # the margin term alone, when on
    loss_fn = TeacherLoss(cfg.id_dropout, cfg.id_contrast, cfg.id_output, cfg.id_margin, cfg.id_temperature,
                          cfg.margin_anchor)
    state.open_bar("teacher")
    model.train()
    flag = StopFlag()
    while state.running(flag):
        draw = sampler.sample(cfg.batch, (cfg.k_min, cfg.k_max))
        x0, lq, refs, mask = make_batch(pool, draw, size, device)
        if cfg.starve > 0:  # drawn only when asked, so the default keeps the old RNG stream
            lq = starve_input(lq, torch.rand(x0.shape[0], generator=gen) < cfg.starve)
        t = torch.rand(x0.shape[0], generator=gen).to(device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        for g in opt.param_groups:
            g["lr"] = lr_at(state.step, state.lr_total(), cfg.lr, cfg.warmup)
        with autocast(device, cfg.bf16):
            loss, terms = loss_fn(model, x0, lq, refs, mask, t, eps, pool.labels[draw[0]],
                                  preset_weights(pool.presets, draw[3], cfg.id_output_weights), gen)
        for name, values in (("id_contrast", contrasts), ("id_output", out_ids), ("id_margin", margins)):
            if name in terms:
                values.append(terms[name])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, cfg.ema if state.step > cfg.warmup else 0.9)
        state.finish_step(loss.item())
        if state.step % cfg.log_every == 0:
            n = cfg.log_every
            log.info("step %d loss %.5f id_contrast %.4f id_output %.4f id_margin %.4f lr %.2e", state.step,
                     state.mean_loss(n), np.mean(contrasts[-n:]) if contrasts else float("nan"),
                     np.mean(out_ids[-n:]) if out_ids else float("nan"),
                     np.mean(margins[-n:]) if margins else float("nan"), opt.param_groups[0]["lr"])
    wall = state.close()
    step = state.step
    ema.eval()
    metrics = {"steps": step, "wall_time_s": round(wall, 1), "final_loss": state.mean_loss(200),
               "final_id_contrast": float(np.mean(contrasts[-200:])) if contrasts else None,
               "final_id_output": float(np.mean(out_ids[-200:])) if out_ids else None,
               "final_id_margin": float(np.mean(margins[-200:])) if margins else None,
               "samples_seen": step * cfg.batch, **{k: v for k, v in info.items() if k != "config"}}
    model_id = export_weights(ema, run / "teacher.safetensors", "teacher",
                              {"steps": step, "val_identities": val_ids, "train_cfg": built_cfg})
    metrics["model_id"] = model_id
    write_json(run / "metrics.json", metrics)
    log.info("done %s", json.dumps(metrics))
    return metrics

