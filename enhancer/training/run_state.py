"""Checkpoint, resume and progress scaffolding shared by the training loops.

Why one place: exact resume needs every piece of state (weights, EMA, optimizer, both RNGs,
step, step budget, elapsed wall time) saved and restored together; two copies of that list
drift apart. tests/test_training_resume.py checks the result bit for bit.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import RefSampler
from .loop import Budget
from .options import RunOptions


class RunState:
    """The resumable state of one training run and its progress bar."""

    def __init__(self, ckpt: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
                 sampler: RefSampler, gen: torch.Generator, budget: Budget, ckpt_minutes: float) -> None:
        self.ckpt, self.model, self.ema, self.opt = ckpt, model, ema, opt
        self.sampler, self.gen, self.budget = sampler, gen, budget
        self.ckpt_s = ckpt_minutes * 60
        self.step, self.start = 0, 0
        self.losses: list[float] = []
        self._t0 = time.perf_counter()
        self._last_save = time.perf_counter()
        self.bar: tqdm | None = None

    @classmethod
    def open(cls, run_dir: Path, model: torch.nn.Module, ema: torch.nn.Module, opt: torch.optim.Optimizer,
             sampler: RefSampler, gen: torch.Generator, opts: RunOptions, device: torch.device,
             log: logging.Logger) -> RunState:
        """The run in ``run_dir`` with ``opts``' budget and checkpoint interval, resumed from its
        checkpoint when there is one."""
        state = cls(run_dir / "ckpt.safetensors", model, ema, opt, sampler, gen, Budget(opts.steps, opts.minutes),
                    opts.ckpt_minutes)
        if state.resume(device, opts.steps):
            log.info("resumed at step %d", state.step)
        return state

    def resume(self, device: torch.device, steps: int | None) -> bool:
        """Load the checkpoint if there is one; ``steps`` (if given) overrides the saved total."""
        wall = 0.0
        resumed = self.ckpt.exists()
        if resumed:
            meta = load_checkpoint(self.ckpt, self.model, self.ema, self.opt, device)
            self.step, wall = meta["step"], meta["wall_s"]
            self.budget.total = steps or meta["total"]
            self.sampler.set_state(meta["sampler"])
            self.gen.set_state(torch.tensor(meta["gen_state"], dtype=torch.uint8))
        self.start = self.step
        self._t0 = time.perf_counter() - wall
        return resumed

    def running(self, stop_flag) -> bool:
        return self.step < self.budget.effective_total() and not stop_flag.stop

    def lr_total(self) -> int:
        """Total steps for the LR schedule (a large stand-in while a wall-clock budget is probed)."""
        return self.budget.effective_total() if self.budget.total else 10**6

    def open_bar(self, desc: str) -> None:
        self.bar = tqdm(total=self.budget.total, initial=self.step, desc=desc, unit="it", dynamic_ncols=True)

    def finish_step(self, loss: float, fmt: str = ".4f") -> None:
        """Count the step, update the bar, and checkpoint every ``ckpt_minutes``."""
        self.step += 1
        self.budget.observe(self.step, self.start)
        self.losses.append(loss)
        if self.bar is not None:
            if self.budget.total is not None and self.bar.total != self.budget.total:
                self.bar.total = self.budget.total
            self.bar.update(1)
            if self.step % 10 == 0:
                self.bar.set_postfix(loss=format(np.mean(self.losses[-50:]), fmt))
        if time.perf_counter() - self._last_save > self.ckpt_s:
            self.save()

    def mean_loss(self, n: int) -> float | None:
        return float(np.mean(self.losses[-n:])) if self.losses else None

    def wall(self) -> float:
        return time.perf_counter() - self._t0

    def save(self) -> None:
        save_checkpoint(self.ckpt, self.model, self.ema, self.opt,
                        {"step": self.step, "wall_s": self.wall(), "total": self.budget.total,
                         "sampler": self.sampler.state(), "gen_state": self.gen.get_state().tolist()})
        self._last_save = time.perf_counter()

    def close(self) -> float:
        """End of the run (finished or stopped): close the bar, checkpoint, return wall seconds."""
        if self.bar is not None:
            self.bar.close()
        self.save()
        return self.wall()
