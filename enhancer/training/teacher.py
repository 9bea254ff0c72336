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
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion import from_diffusion_space, q_sample, to_diffusion_space, v_target, x0_from_v
from ..models.config import ModelConfig
from ..models.restorer import Restorer, count_params, generator_gflops, load_grown
from ..weights import export_weights
from .data import RefSampler, load_pack, make_batch, split_identities, starve_input
from .loop import Budget, StopFlag, autocast, ema_update, hardware, lr_at, pick_device, setup_logging, write_json
from .preset_weights import ID_OUTPUT_WEIGHTS, check_margin_anchor, check_ref_flip, preset_weights
from .run_state import RunState


@dataclass(frozen=True)
class TeacherConfig:
    pack: str
    run_dir: str = "runs/teacher"
    model: ModelConfig = field(default_factory=lambda: ModelConfig(residual_scale=4.0))
    init: str | None = None  # start from these weights (fine-tuning), e.g. a GPU-trained teacher
    batch: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup: int = 300
    steps: int | None = None
    minutes: float | None = None
    ema: float = 0.999
    grad_clip: float = 1.0
    id_dropout: float = 0.15
    k_min: int = 1
    k_max: int = 5
    n_val: int = 60
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    ckpt_minutes: float = 5.0
    log_every: int = 50
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


def identity_dropout(ident: torch.Tensor, null: torch.Tensor, p: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row replaced by the null identity with probability ``p``; also returns which (B,) were."""
    drop = (torch.rand(ident.shape[0], generator=gen, device="cpu") < p).to(ident.device)
    return torch.where(drop[:, None, None], null[None].to(ident.dtype).expand_as(ident), ident), drop


def identity_contrast(a: torch.Tensor, b: torch.Tensor, labels: np.ndarray, temperature: float,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between two views' identity vectors, row i of ``a`` matching row i of ``b``;
    other rows of the same identity are left out of the negatives (they are not wrong answers).
    ``weights`` (per row, optional) scale each row's two cross-entropies; the mean is over rows."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    lab = torch.as_tensor(labels, device=a.device)
    same = (lab[:, None] == lab[None, :]) & ~torch.eye(len(lab), dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(lab), device=a.device)
    per_row = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                     + F.cross_entropy(logits.T, target, reduction="none"))
    return per_row.mean() if weights is None else (per_row * weights.to(per_row)).mean()


def output_identity(encoder: torch.nn.Module, restored: torch.Tensor, anchor: torch.Tensor, labels: np.ndarray,
                    temperature: float, weights: np.ndarray | None = None) -> torch.Tensor:
    """InfoNCE between the encoder's global vectors of ``restored`` and ``anchor`` (each sample's
    reference set): each restored face must pick out its own person's *other* photos in the batch.

    Other photos, not the target photo itself: the restored face comes from that photo's
    degraded copy, so pose, light and background alone would match it (the term started at
    0.44 against the target, against 1.19 for refs vs target). Contrastive rather than a plain
    cosine distance because the global vectors share a large common component (cosine distances
    of ~0.01 even across people), which a distance would barely see. The encoder runs with
    detached copies of its weights, so this term moves the generator (through ``restored``) and
    never the encoder: otherwise the encoder could satisfy it by forgetting identity, the
    collapse the contrastive term exists to prevent.

    Rows with weight 0 are dropped before the encoder runs (neither queries nor negatives), so
    they get no gradient from this term at all; the mean stays over the whole batch, so the
    term's scale per weighted sample does not depend on how many were dropped."""
    keep = np.arange(len(labels)) if weights is None else np.nonzero(weights > 0)[0]
    if len(keep) < 2:  # InfoNCE needs a negative
        return restored.sum() * 0.0
    params = {k: v.detach() for k, v in encoder.named_parameters()}
    sel = torch.as_tensor(keep, device=restored.device)
    e = torch.func.functional_call(encoder, params, (restored[sel][:, None],))[:, 0]
    w = None if weights is None else torch.as_tensor(weights[keep] * len(keep) / len(labels))
    return identity_contrast(e, anchor.detach()[sel], labels[keep], temperature, w)


def identity_margin(encoder: torch.nn.Module, restored: torch.Tensor, generic: torch.Tensor, anchor: torch.Tensor,
                    weights: np.ndarray, temperature: float) -> torch.Tensor:
    """Per sample: the personalised restoration must be nearer ``anchor`` (cosine of the encoder's
    global vectors; the person's references, or the clean target photo) than the generic
    restoration of the same crop is.

    Why: the output term rewards any restoration that looks like the person, and the generic mode
    learns that from the degraded crop as fast as the personalised mode learns it from the
    references, so the margin between them, the one thing personalisation adds, stayed flat while
    both improved. This term rewards only the margin. ``generic`` is held fixed (no gradient), so
    the baseline is never made worse to win; the encoder is held fixed as in ``output_identity``.
    Rows with weight 0 (generic samples, sharp crops) get no gradient; the mean is over all rows.
    ``softplus((s_generic - s_personal) / T)``: ln 2 when the two are equally near."""
    keep = np.nonzero(weights > 0)[0]
    if len(keep) == 0:
        return restored.sum() * 0.0
    params = {k: v.detach() for k, v in encoder.named_parameters()}
    sel = torch.as_tensor(keep, device=restored.device)
    both = torch.cat([restored[sel], generic[sel].detach()])
    e = F.normalize(torch.func.functional_call(encoder, params, (both[:, None],))[:, 0].float(), dim=-1)
    a = F.normalize(anchor.detach()[sel].float(), dim=-1)
    s_personal, s_generic = (e[: len(keep)] * a).sum(-1), (e[len(keep):] * a).sum(-1)
    w = torch.as_tensor(weights[keep], dtype=torch.float32, device=restored.device)
    return (F.softplus((s_generic - s_personal) / temperature) * w).sum() / len(weights)


def prepare_split(pack: Path, n_val: int, seed: int) -> tuple[list[str], list[str]]:
    z = np.load(pack, allow_pickle=False)
    ids = [str(s) for s in z["identities"]]
    counts = Counter(ids[i] for i in z["labels"])
    return split_identities(ids, n_val, seed, counts)


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
    budget = Budget(cfg.steps, cfg.minutes)
    state = RunState(run / "ckpt.safetensors", model, ema, opt, sampler, gen, budget, cfg.ckpt_minutes)
    if state.resume(device, cfg.steps):
        log.info("resumed at step %d", state.step)
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
        z0 = to_diffusion_space(x0, lq, cfg.model.residual_scale)
        x_t = q_sample(z0, eps, t)
        for g in opt.param_groups:
            g["lr"] = lr_at(state.step, state.lr_total(), cfg.lr, cfg.warmup)
        with autocast(device, cfg.bf16):
            ident = model.encode(refs, mask)
            refs_vec = ident[:, 0]
            target_vec = model.encode(x0[:, None])[:, 0] if cfg.id_contrast > 0 or cfg.id_margin > 0 else None
            contrast = (identity_contrast(refs_vec, target_vec, pool.labels[draw[0]], cfg.id_temperature)
                        if cfg.id_contrast > 0 else None)
            ident, dropped = identity_dropout(ident, model.null_identity, cfg.id_dropout, gen)
            v = model(x_t, lq, t, ident)
            loss = F.mse_loss(v.float(), v_target(z0, eps, t))
            if contrast is not None:
                contrasts.append(contrast.item())
                loss = loss + cfg.id_contrast * contrast
            if cfg.id_output > 0 or cfg.id_margin > 0:
                restored = from_diffusion_space(x0_from_v(x_t, v.float(), t), lq, cfg.model.residual_scale)
            if cfg.id_output > 0:
                out_id = output_identity(model.encoder, restored, refs_vec, pool.labels[draw[0]], cfg.id_temperature,
                                         preset_weights(pool.presets, draw[3], cfg.id_output_weights))
                out_ids.append(out_id.item())
                loss = loss + cfg.id_output * out_id
            if cfg.id_margin > 0:
                with torch.no_grad():
                    v_gen = model(x_t, lq, t, model.resolve_identity(None, len(ident)).to(ident.dtype))
                    generic = from_diffusion_space(x0_from_v(x_t, v_gen.float(), t), lq, cfg.model.residual_scale)
                w = preset_weights(pool.presets, draw[3], cfg.id_output_weights) * (~dropped).cpu().numpy()
                anchor = target_vec if cfg.margin_anchor == "target" else refs_vec
                margin = identity_margin(model.encoder, restored, generic, anchor, w, cfg.id_temperature)
                margins.append(margin.item())
                loss = loss + cfg.id_margin * margin
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

