"""`likeness train distill`: distil the teacher's N-step DDIM sampler into a 1-2 step student.

Method: knowledge distillation of a deterministic sampler (Luhman & Luhman, 2021, "Knowledge
Distillation in Iterative Generative Models for Improved Sampling Speed"). With DDIM eta = 0
the teacher defines a deterministic map (noise, degraded crop, identity) -> restored crop; the
student, initialised from the teacher and sharing its frozen identity encoder, is trained so
that its own ``student_steps``-step DDIM sampler (differentiated end to end) reproduces that
map. Why this and not progressive distillation: one stage instead of log2(N) stages, which
fits our short training budget, and restoration is strongly conditioned so the map is smooth
and easy to regress. Identity dropout is kept, so the generic (null) mode is distilled too.

Two optional terms beyond the pure sampler match (both off by default, so older runs resume
unchanged). ``gt_weight``: an MSE to the ground truth as well as to the teacher. Why: the teacher's
multi-step samples score *below* its own one-step prediction on PSNR and identity (stage 5:
22.34 dB at 4 steps vs 22.92 at 1), so a student that only imitates them inherits that gap; the
data term pulls it back towards the fidelity the eval measures. ``id_output``: the teacher's
output identity term (``loss.output_identity``, weighted per preset), now on the student's own
one-step output, through the frozen encoder, so identity is optimised for the sampler that ships.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..weights import export_weights, load_restorer
from .data import RefSampler, load_pack, make_batch, prepare_split
from .loop import StopFlag, autocast, ema_update, hardware, lr_at, pick_device, setup_logging, write_json
from .loss import DistillLoss, identity_dropout
from .options import RunOptions
from .preset_weights import ID_OUTPUT_WEIGHTS, check_margin_anchor, check_ref_flip, preset_weights
from .run_state import RunState


@dataclass(frozen=True)
class DistillConfig(RunOptions):
    pack: str
    teacher: str
    run_dir: str = "runs/distill"
    teacher_steps: int = 8
    student_steps: int = 1
    batch: int = 16
    lr: float = 1e-4
    warmup: int = 100
    ema: float = 0.995
    gt_weight: float = 0.0  # weight of an MSE to the ground truth beside the teacher match (0: off)
    id_output: float = 0.0  # weight of the output identity term on the student's output (0: off)
    id_temperature: float = 0.1
    id_output_weights: tuple[tuple[str, float], ...] = ID_OUTPUT_WEIGHTS
    # weight of the personalisation margin (0: off): the personalised output must be nearer the
    # person than the student's own generic output of the same crop, held fixed
    id_margin: float = 0.0
    # what the margin measures nearness to: "references" (the person's other photos) or "target"
    # (the clean photo itself, the eval's own criterion: pose and light cancel in the margin,
    # since the personalised and generic outputs both come from the same degraded crop)
    margin_anchor: str = "target"
    ref_flip: str = "with-target"  # preset_weights.REF_FLIPS; students up to stage 9 used "independent"

    def __post_init__(self) -> None:
        check_margin_anchor(self.margin_anchor)
        check_ref_flip(self.ref_flip)


def train_distill(cfg: DistillConfig) -> dict:
    run = Path(cfg.run_dir)
    log = setup_logging(run, "distill")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    teacher, tmeta = load_restorer(Path(cfg.teacher), device=str(device))
    train_ids, val_ids = prepare_split(Path(cfg.pack), cfg.n_val, cfg.split_seed)
    pool = load_pack(Path(cfg.pack), device, keep=set(train_ids))
    sampler = RefSampler(pool, 5, cfg.seed + 7, cfg.ref_flip)
    student = copy.deepcopy(teacher).train()
    student.encoder.requires_grad_(False)
    student.null_identity.requires_grad_(False)
    student.generator.requires_grad_(True)
    ema = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.AdamW(student.generator.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    state = RunState.open(run, student, ema, opt, sampler, gen, cfg, device, log)
    size = teacher.cfg.generator.size
    loss_fn = DistillLoss(cfg.student_steps, cfg.gt_weight, cfg.id_output, cfg.id_margin, cfg.id_temperature)
    state.open_bar(f"distill {cfg.teacher_steps}->{cfg.student_steps}")
    flag = StopFlag()
    while state.running(flag):
        draw = sampler.sample(cfg.batch)
        x0, lq, refs, mask = make_batch(pool, draw, size, device)
        noise = torch.randn(lq.shape, generator=gen).to(device)
        with torch.no_grad(), autocast(device, cfg.bf16):
            ident = teacher.encode(refs, mask)
            anchor = ident[:, 0]
            margin_anchor = (teacher.encode(x0[:, None])[:, 0] if cfg.id_margin > 0 and cfg.margin_anchor == "target"
                             else anchor)
            ident, dropped = identity_dropout(ident, teacher.null_identity, cfg.id_dropout, gen)
            target = teacher.restore(lq, ident, noise, cfg.teacher_steps).float()
        for g in opt.param_groups:
            g["lr"] = lr_at(state.step, state.lr_total(), cfg.lr, cfg.warmup)
        with autocast(device, cfg.bf16):
            loss = loss_fn(student, lq, ident, dropped, noise, target, x0, anchor, margin_anchor, pool.labels[draw[0]],
                           preset_weights(pool.presets, draw[3], cfg.id_output_weights))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.generator.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, student, cfg.ema)
        state.finish_step(loss.item(), ".5f")
        if state.step % cfg.log_every == 0:
            log.info("step %d loss %.6f", state.step, state.mean_loss(cfg.log_every))
    wall = state.close()
    step = state.step
    extra = {"steps": step, "student_steps": cfg.student_steps, "teacher_steps": cfg.teacher_steps,
             "teacher_id": tmeta["model_id"], "val_identities": val_ids, "train_cfg": asdict(cfg)}
    model_id = export_weights(ema.eval(), run / "student.safetensors", "student", extra)
    metrics = {"steps": step, "wall_time_s": round(wall, 1), "final_loss": state.mean_loss(200), "model_id": model_id,
               "teacher_id": tmeta["model_id"], "hardware": hardware(), "config": asdict(cfg)}
    write_json(run / "metrics.json", metrics)
    log.info("done %s", json.dumps(metrics))
    return metrics

