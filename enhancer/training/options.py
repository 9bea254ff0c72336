"""Options every training stage shares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How a training run runs, the same for every stage (teacher, distillation, GAN): its budget,
    the identity split and seeds, device and precision, checkpoints and logging. Keyword-only, so
    each stage's own fields (its data, learning rate, losses) keep their places in front."""

    steps: int | None = None
    minutes: float | None = None
    grad_clip: float = 1.0
    id_dropout: float = 0.15  # share of samples trained in the generic mode (identity replaced)
    n_val: int = 60
    split_seed: int = 0
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    ckpt_minutes: float = 5.0
    log_every: int = 50
