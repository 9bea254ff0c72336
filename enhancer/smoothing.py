"""One-Euro filter (Casiez et al., CHI 2012) for landmark smoothing.

Low cutoff when landmarks move slowly (kills jitter), higher cutoff when they move fast
(keeps lag small). The state is a small dataclass so the filter function stays pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OneEuroParams:
    min_cutoff: float = 1.0  # Hz; lower = smoother at rest
    beta: float = 0.05  # speed coefficient; higher = less lag in motion
    d_cutoff: float = 1.0  # Hz, for the derivative


@dataclass(frozen=True)
class OneEuroState:
    x: np.ndarray
    dx: np.ndarray
    t: float


def _alpha(cutoff: float, dt: float) -> float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


def one_euro(
    state: OneEuroState | None, x: np.ndarray, t: float, p: OneEuroParams, scale: float = 1.0
) -> OneEuroState:
    """Filter sample ``x`` at time ``t`` (s); ``scale`` normalises speed (e.g. face size in px)."""
    x = np.asarray(x, dtype=np.float64)
    if state is None:
        return OneEuroState(x=x, dx=np.zeros_like(x), t=t)
    dt = max(t - state.t, 1e-3)
    dx = (x - state.x) / dt
    a_d = _alpha(p.d_cutoff, dt)
    dx_hat = a_d * dx + (1 - a_d) * state.dx
    speed = float(np.abs(dx_hat).mean()) / max(scale, 1e-6)
    cutoff = p.min_cutoff + p.beta * speed * 100.0
    a = _alpha(cutoff, dt)
    return OneEuroState(x=a * x + (1 - a) * state.x, dx=dx_hat, t=t)
