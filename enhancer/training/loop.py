"""Shared training-loop pieces: device/precision set-up, EMA, LR schedule, step budget, logging."""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from pathlib import Path

import torch


def pick_device(name: str = "auto") -> torch.device:
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if dev.type == "cuda":
        # no cudnn autotuning: the output identity term runs the encoder on a batch whose size
        # varies per step, and re-tuning every new shape made a GPU step 2.3 s instead of ~0.5
        torch.backends.cudnn.benchmark = False
    return dev


BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (empty if none are listed)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def native_bf16(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 autocast pays on ``device``: on GPUs, and on CPUs with bf16 instructions
    (AVX512-BF16 or AMX). Elsewhere PyTorch emulates bf16: a GAN step took 22 s instead of 1.2 s in
    fp32 on a 2-core AVX2 EPYC. ``flags``: the CPU's (default: read from /proc/cpuinfo)."""
    if device.type != "cpu":
        return True
    if flags is None:
        try:
            flags = cpu_flags(Path("/proc/cpuinfo").read_text())
        except OSError:
            return False
    return bool(flags & BF16_CPU_FLAGS)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast where the hardware has it (``native_bf16``): 2.2x faster training measured on
    an AMX CPU, and standard on GPUs; fp32 elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and native_bf16(device))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ep = [p for p in ema.parameters()]
    mp = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ep, mp, 1 - decay)


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 % of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def hardware() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "bf16_native_cpu": native_bf16(torch.device("cpu"))}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def setup_logging(run_dir: Path, name: str) -> logging.Logger:
    run_dir.mkdir(parents=True, exist_ok=True)
    log = logging.getLogger(f"likeness.{name}.{run_dir}")
    log.setLevel(logging.INFO)
    if not log.handlers:
        fh = logging.FileHandler(run_dir / f"{name}.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(fh)
    return log


class Budget:
    """Turns a wall-clock budget into a fixed step count after timing the first steps, so the
    LR schedule is well defined and a resumed run keeps the same total."""

    def __init__(self, steps: int | None, minutes: float | None, probe: int = 30) -> None:
        self.total = steps
        self.minutes = minutes
        self.probe = probe
        self._t0: float | None = None

    def observe(self, step: int, start_step: int) -> None:
        if self.total is not None or self.minutes is None:
            return
        if step == start_step + 5:
            self._t0 = time.perf_counter()
        elif self._t0 is not None and step == start_step + 5 + self.probe:
            per = (time.perf_counter() - self._t0) / self.probe
            self.total = max(step + 1, int(self.minutes * 60 / per * 0.97))

    def effective_total(self) -> int:
        return self.total if self.total is not None else 10**9


class StopFlag:
    """SIGTERM/SIGINT end training at the next step boundary, which then checkpoints and
    exports as if the run had finished; a second signal kills as usual."""

    def __init__(self) -> None:
        import signal

        self.stop = False
        self._old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        for s in self._old:
            signal.signal(s, self._handle)

    def _handle(self, signum, frame) -> None:
        import signal

        self.stop = True
        for s, h in self._old.items():
            signal.signal(s, h)


def write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True))
