"""v-prediction diffusion with a cosine schedule and a deterministic DDIM (eta = 0) sampler.

Continuous time t in [0, 1]: alpha = cos(pi t / 2), sigma = sin(pi t / 2), so
x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0 (Salimans & Ho, 2022). All functions
are pure: same inputs, same outputs; the sampler takes its noise as an argument so each video
stream can keep one fixed noise tensor and not flicker.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> v


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cos(t * (math.pi / 2)), torch.sin(t * (math.pi / 2))


def q_sample(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, s = alpha_sigma(t)
    return a[:, None, None, None] * x0 + s[:, None, None, None] * eps


def v_target(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, s = alpha_sigma(t)
    return a[:, None, None, None] * eps - s[:, None, None, None] * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, s = alpha_sigma(t)
    return a[:, None, None, None] * x_t - s[:, None, None, None] * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    a, s = alpha_sigma(t)
    return s[:, None, None, None] * x_t + a[:, None, None, None] * v


def time_grid(steps: int, t_max: float = 1.0) -> list[float]:
    """Uniform grid from t_max down to 0 (steps + 1 points)."""
    return [t_max * (1 - i / steps) for i in range(steps + 1)]


def ddim_step(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor,
              clip: float | None = 1.0) -> torch.Tensor:
    """One deterministic DDIM update from t to t_next given the model's v at t."""
    x0 = x0_from_v(x_t, v, t)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    eps = eps_from_v(x_t, v, t)
    return q_sample(x0, eps, t_next)


def ddim_sample(model: Denoiser, noise: torch.Tensor, steps: int, clip: float | None = 1.0) -> torch.Tensor:
    """Run ``steps`` DDIM steps from pure noise at t = 1; returns x0 (clamped to +-clip)."""
    x = noise
    grid = time_grid(steps)
    b = noise.shape[0]
    for t, tn in zip(grid[:-1], grid[1:], strict=True):
        tt = torch.full((b,), t, device=noise.device, dtype=torch.float32)
        v = model(x, tt)
        if tn <= 0:
            x0 = x0_from_v(x, v, tt)
            return x0.clamp(-clip, clip) if clip is not None else x0
        x = ddim_step(x, v, tt, torch.full_like(tt, tn), clip)
    return x.clamp(-clip, clip) if clip is not None else x


def to_diffusion_space(x0: torch.Tensor, lq: torch.Tensor, residual_scale: float) -> torch.Tensor:
    """What the diffusion model generates: the target, or its scaled residual over the input."""
    return (x0 - lq) * residual_scale if residual_scale > 0 else x0


def from_diffusion_space(z0: torch.Tensor, lq: torch.Tensor, residual_scale: float) -> torch.Tensor:
    """Inverse of :func:`to_diffusion_space`, clamped to the image range [-1, 1]."""
    return (lq + z0 / residual_scale).clamp(-1, 1) if residual_scale > 0 else z0.clamp(-1, 1)


def restore(model: Denoiser, lq: torch.Tensor, noise: torch.Tensor, steps: int, residual_scale: float) -> torch.Tensor:
    """Sample in diffusion space and map back to an image in [-1, 1]."""
    if residual_scale > 0:
        return from_diffusion_space(ddim_sample(model, noise, steps, clip=2.0 * residual_scale), lq, residual_scale)
    return ddim_sample(model, noise, steps)
