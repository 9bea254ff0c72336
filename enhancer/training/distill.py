"""`likeness train distill`: distil the teacher's N-step DDIM sampler into a 1-2 step student.

Method: knowledge distillation of a deterministic sampler (Luhman & Luhman, 2021, "Knowledge
Distillation in Iterative Generative Models for Improved Sampling Speed"). With DDIM eta = 0
the teacher defines a deterministic map (noise, degraded crop, identity) -> restored crop; the
student, initialised from the teacher and sharing its frozen identity encoder, is trained so
that its own ``student_steps``-step DDIM sampler (differentiated end to end) reproduces that
map. Why this and not progressive distillation: one stage instead of log2(N) stages, which
fits our short training budget, and restoration is strongly conditioned so the map is smooth
and easy to regress. Identity dropout is kept, so the generic (null) mode is distilled too.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..weights import export_weights, load_restorer
from .checkpoint import load_checkpoint, save_checkpoint
from .data import RefSampler, load_pack, make_batch
from .loop import Budget, StopFlag, autocast, ema_update, hardware, lr_at, pick_device, setup_logging, write_json
from .teacher import identity_dropout, prepare_split


@dataclass(frozen=True)
class DistillConfig:
    pack: str
    teacher: str
    run_dir: str = "runs/distill"
    teacher_steps: int = 8
    student_steps: int = 1
    batch: int = 16
    lr: float = 1e-4
    warmup: int = 100
    steps: int | None = None
    minutes: float | None = None
    ema: float = 0.995
    grad_clip: float = 1.0
    id_dropout: float = 0.15
    n_val: int = 60
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    ckpt_minutes: float = 5.0
    log_every: int = 50


def train_distill(cfg: DistillConfig) -> dict:
    run = Path(cfg.run_dir)
    log = setup_logging(run, "distill")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    teacher, tmeta = load_restorer(Path(cfg.teacher), device=str(device))
    train_ids, val_ids = prepare_split(Path(cfg.pack), cfg.n_val, cfg.split_seed)
    pool = load_pack(Path(cfg.pack), device, keep=set(train_ids))
    sampler = RefSampler(pool, 5, cfg.seed + 7)
    student = copy.deepcopy(teacher).train()
    student.encoder.requires_grad_(False)
    student.null_identity.requires_grad_(False)
    student.generator.requires_grad_(True)
    ema = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.AdamW(student.generator.parameters(), lr=cfg.lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    ckpt = run / "ckpt.safetensors"
    step, wall = 0, 0.0
    budget = Budget(cfg.steps, cfg.minutes)
    if ckpt.exists():
        meta = load_checkpoint(ckpt, student, ema, opt, device)
        step, wall, budget.total = meta["step"], meta["wall_s"], cfg.steps or meta["total"]
        sampler.set_state(meta["sampler"])
        gen.set_state(torch.tensor(meta["gen_state"], dtype=torch.uint8))
        log.info("resumed at step %d", step)
    size = teacher.cfg.generator.size
    start = step
    t_start = time.perf_counter() - wall
    last_ckpt = time.perf_counter()
    losses: list[float] = []
    bar = tqdm(total=budget.total, initial=step, desc=f"distill {cfg.teacher_steps}->{cfg.student_steps}",
               unit="it", dynamic_ncols=True)
    flag = StopFlag()
    while step < budget.effective_total() and not flag.stop:
        _, lq, refs, mask = make_batch(pool, sampler.sample(cfg.batch), size, device)
        noise = torch.randn(lq.shape, generator=gen).to(device)
        with torch.no_grad(), autocast(device, cfg.bf16):
            ident = teacher.encode(refs, mask)
            ident = identity_dropout(ident, teacher.null_identity, cfg.id_dropout, gen)
            target = teacher.restore(lq, ident, noise, cfg.teacher_steps).float()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, budget.effective_total() if budget.total else 10**6, cfg.lr, cfg.warmup)
        with autocast(device, cfg.bf16):
            out = student.restore(lq, ident.detach(), noise, cfg.student_steps)
            loss = F.mse_loss(out.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.generator.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, student, cfg.ema)
        step += 1
        budget.observe(step, start)
        if budget.total is not None and bar.total != budget.total:
            bar.total = budget.total
        losses.append(loss.item())
        bar.update(1)
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.5f}")
        if step % cfg.log_every == 0:
            log.info("step %d loss %.6f", step, np.mean(losses[-cfg.log_every:]))
        if time.perf_counter() - last_ckpt > cfg.ckpt_minutes * 60:
            save_checkpoint(ckpt, student, ema, opt, _meta(step, time.perf_counter() - t_start, budget, sampler, gen))
            last_ckpt = time.perf_counter()
    bar.close()
    wall = time.perf_counter() - t_start
    save_checkpoint(ckpt, student, ema, opt, _meta(step, wall, budget, sampler, gen))
    extra = {"steps": step, "student_steps": cfg.student_steps, "teacher_steps": cfg.teacher_steps,
             "teacher_id": tmeta["model_id"], "val_identities": val_ids, "train_cfg": asdict(cfg)}
    model_id = export_weights(ema.eval(), run / "student.safetensors", "student", extra)
    metrics = {"steps": step, "wall_time_s": round(wall, 1), "final_loss": float(np.mean(losses[-200:])) if losses
               else None, "model_id": model_id, "teacher_id": tmeta["model_id"], "hardware": hardware(),
               "config": asdict(cfg)}
    write_json(run / "metrics.json", metrics)
    log.info("done %s", json.dumps(metrics))
    return metrics


def _meta(step, wall, budget, sampler, gen) -> dict:
    return {"step": step, "wall_s": wall, "total": budget.total, "sampler": sampler.state(),
            "gen_state": gen.get_state().tolist()}
