"""Adaptive enhancement strength: how much of the generator's change to keep, per face.

Why: the generator's residual over the input points the right way, but its full magnitude
can cost fidelity on crops that were barely degraded (an early student's full output was
~1.4 dB *below* the input on ``mild`` crops; the shipped one gains +0.6 dB there, and the
blend another +0.1). A video call must never make a good picture worse, so the pipeline keeps
``w * (restored - lq)``, with ``w`` falling as the crop's own detail rises.

The detail measure is the variance of the Laplacian of the crop's grey levels (no
reference needed: heavy blur and low bitrate remove exactly that energy). ``w`` is a clipped
linear function of its log, fitted by ``benchmarks/studies/fit_strength.py`` to the per-crop best
blend weight on *training* identities (never the evaluation's), and recorded with the
model id it was fitted for. Above the presets' range the line would still keep ~0.7 of the change on a
face that arrives clean (a good webcam), where any change costs fidelity, so it fades to 0 there
(``StrengthConfig.fade``). A receiver that holds the sender's references also fades on the
person's own detail (``person_fade``): a soft camera's face is not damage the link did. Pure
functions; the per-track smoothing lives in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class StrengthConfig:
    """``w = clip(intercept + slope * ln(laplacian variance), lo, hi)``, times the fade; see the
    module docstring."""

    intercept: float = 1.025
    slope: float = -0.055
    lo: float = 0.0
    hi: float = 1.0
    fitted_for: str = "student-e2ba606a000f"  # benchmarks/results/strength-*.json
    # (from, to): the weight falls linearly to 0 as ln laplacian variance rises from ``from`` to ``to``;
    # a face that arrives clean needs no change, and the line, fitted on degraded crops, would keep
    # most of it (None: no fade)
    fade: tuple[float, float] | None = None
    # a second fade of the same form, set per person from their own references' detail
    # (``person_fade``): none of the change on a face about as sharp as the person's enrolment
    # shows them, whatever that camera's absolute detail is (None: no such fade)
    person_fade: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for f in (self.fade, self.person_fade):
            if f is not None and not f[0] < f[1]:
                raise ValueError(f"strength fade must rise (from < to), not {f}")


# the fitted line, faded out between 5.0 and 6.0: bounds read off video frames, where a clean webcam
# face (about 6.1) sits well above a damaged one (3.7-4.5), unlike CelebA's softer photos
# (docs/visible-restoration.md, run 15)
DEFAULT_STRENGTH = StrengthConfig(fade=(5.0, 6.0))


def laplacian_variance(crops: np.ndarray) -> np.ndarray:
    """(F, S, S, 3) uint8 BGR -> (F,) variance of the grey Laplacian: the crop's fine detail."""
    out = np.empty(len(crops), dtype=np.float64)
    for i, c in enumerate(crops):
        out[i] = cv2.Laplacian(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    return out


def log_detail(crops: np.ndarray) -> np.ndarray:
    """(F,) ln of the Laplacian variance (floored): the quantity the strength is linear in, and
    the one ``benchmarks/studies/fit_strength.py`` fits against."""
    return np.log(np.maximum(laplacian_variance(crops), 1e-3))


def strength(crops: np.ndarray, cfg: StrengthConfig) -> np.ndarray:
    """(F,) weight in [lo, hi] for each crop: high for blurred/blocky crops, low for sharp ones."""
    return strength_at(log_detail(crops), cfg)


def strength_at(detail: np.ndarray, cfg: StrengthConfig) -> np.ndarray:
    """``strength`` from crops' ``log_detail`` already computed (the pipeline needs it twice a frame)."""
    ld = np.asarray(detail, np.float64)
    w = np.clip(cfg.intercept + cfg.slope * ld, cfg.lo, cfg.hi)
    for fade in (cfg.fade, cfg.person_fade):
        if fade is not None:
            f0, f1 = fade
            w = w * np.clip((f1 - ld) / (f1 - f0), 0.0, 1.0)
    return w.astype(np.float32)


# where the person fade runs, below the references' mean ln Laplacian variance: a face as sent sits
# 0.15-0.42 below its own references (docs/receiver.md), so within 0.5 it arrived as the camera gave it
PERSON_FADE_BELOW = (1.5, 0.5)


def person_fade(references: np.ndarray, below: tuple[float, float] = PERSON_FADE_BELOW) -> tuple[float, float]:
    """The ``person_fade`` bounds for someone whose aligned reference crops (K, S, S, 3) uint8 are
    ``references``: all of the change at or under their mean ln Laplacian variance - ``below[0]``,
    none from - ``below[1]``."""
    ref = float(np.mean(log_detail(references)))
    return ref - below[0], ref - below[1]


def blend(lq: np.ndarray, restored: np.ndarray, w: np.ndarray) -> np.ndarray:
    """uint8 crops ``lq + w * (restored - lq)``, ``w`` per crop."""
    lq32 = lq.astype(np.float32)
    out = lq32 + w.reshape(-1, 1, 1, 1).astype(np.float32) * (restored.astype(np.float32) - lq32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def parse_strength(text: str) -> StrengthConfig | None:
    """CLI value -> config: 'auto' (adaptive, the default), 'full' (None: no blend) or a fixed 0-1."""
    t = text.strip().lower()
    if t == "auto":
        return DEFAULT_STRENGTH
    if t == "full":
        return None
    try:
        w = float(t)
    except ValueError:
        raise ValueError(f"strength must be auto, full or a number from 0 to 1, not {text!r}") from None
    if not 0.0 <= w <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, not {w:g}")
    return StrengthConfig(intercept=w, slope=0.0, fitted_for="")
