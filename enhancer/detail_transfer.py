"""Reference detail transfer: the person's own fine detail, taken from their enrolment photos.

Why: the one-step generator returns close to the posterior mean of a face, so it deblocks but does
not commit to detail. The enrolment photos do hold this person's detail (eyebrow hairs, eyelids,
the texture of the skin), and aligned to the same template as the call's crop they hold it at
nearly the same place: on our validation people the best of four references' high-pass correlates
0.30 with a test photo's, another person's 0.04 (docs/visible-restoration.md). So after the
generator, each reference's high-pass is added where that reference's low-pass agrees with the
restored face, and nowhere it does not (a null weight keeps the choice "none").

Pure functions on float32 crops (H, W, 3) in 0-255; the per-reference parts that do not depend on
the frame (high-pass and low-pass of each reference) are computed once, at enrolment or when an
identity is loaded (``prepare_references``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .strength import log_detail


@dataclass(frozen=True)
class TransferConfig:
    alpha: float = 1.0  # gain of the transferred high-pass (0: off)
    tau: float = 1000.0  # match temperature, in squared 0-255 units averaged over the window
    window: int = 9  # side of the box over which low-pass differences are averaged (pixels at 128)
    sigma_detail: float = 1.0  # Gaussian whose residual is the detail that moves
    sigma_match: float = 2.5  # Gaussian low-pass that is compared with the restored face
    null: float = 1.0  # weight of "take nothing", beside each reference's exp(-d / tau)
    # the gain falls from alpha to 0 as the degraded crop's own detail (ln of its Laplacian
    # variance, enhancer.strength.log_detail) rises from detail_full to detail_none: a face that
    # arrives sharp already has its detail, and adding the references' on top makes it worse
    detail_full: float = 2.5
    detail_none: float = 3.2

    def __post_init__(self) -> None:
        if (self.alpha < 0 or self.tau <= 0 or self.null < 0 or self.window < 1
                or not self.detail_full < self.detail_none):
            raise ValueError(f"invalid detail transfer settings: {self}")


# what the product runs (docs/visible-restoration.md, run 5: gated, alpha 2)
DEFAULT_TRANSFER = TransferConfig(alpha=2.0)


@dataclass(frozen=True)
class PreparedReferences:
    """What the transfer needs of a person's references, computed once with the settings they
    were computed for (so the two cannot disagree)."""

    detail: np.ndarray  # (K, H, W, 3) high-pass
    low: np.ndarray  # (K, H, W, 3) low-pass used for matching
    cfg: TransferConfig


def prepare_references(crops: np.ndarray, cfg: TransferConfig) -> PreparedReferences:
    """``crops`` (K, H, W, 3) uint8 aligned references -> their detail and low-pass."""
    refs = np.asarray(crops, dtype=np.float32)
    if refs.ndim != 4 or refs.shape[-1] != 3 or len(refs) == 0:
        raise ValueError(f"references must be (K, H, W, 3), not {refs.shape}")
    detail = np.stack([r - cv2.GaussianBlur(r, (0, 0), cfg.sigma_detail) for r in refs])
    low = np.stack([cv2.GaussianBlur(r, (0, 0), cfg.sigma_match) for r in refs])
    return PreparedReferences(detail, low, cfg)


def match_weights(restored: np.ndarray, refs: PreparedReferences) -> np.ndarray:
    """(K, H, W) weight of each reference at each pixel; they sum to less than 1 (the null's share)."""
    cfg = refs.cfg
    low = cv2.GaussianBlur(restored.astype(np.float32), (0, 0), cfg.sigma_match)
    dist = np.stack([cv2.blur(((r - low) ** 2).mean(-1), (cfg.window, cfg.window)) for r in refs.low])
    w = np.exp(-dist / cfg.tau)
    return w / (w.sum(0, keepdims=True) + cfg.null)


def transfer_gain(degraded: np.ndarray, cfg: TransferConfig) -> float:
    """The gain for a face whose degraded crop (H, W, 3) uint8 is ``degraded``: alpha for a face
    that arrived without detail, 0 for one that arrived sharp, log-linear between."""
    ld = float(log_detail(degraded[None])[0])
    return cfg.alpha * float(np.clip((cfg.detail_none - ld) / (cfg.detail_none - cfg.detail_full), 0.0, 1.0))


def transfer_detail(restored: np.ndarray, degraded: np.ndarray, refs: PreparedReferences) -> np.ndarray:
    """``restored`` (H, W, 3) uint8, the restoration of ``degraded``, with the matching
    references' detail added at ``transfer_gain``, uint8."""
    if refs.detail.shape[1:] != restored.shape:
        raise ValueError(f"references {refs.detail.shape[1:]} and crop {restored.shape} differ in size")
    gain = transfer_gain(degraded, refs.cfg) if refs.cfg.alpha > 0 else 0.0
    if gain == 0:
        return restored
    w = match_weights(restored, refs)
    added = np.einsum("khw,khwc->hwc", w, refs.detail)
    return np.clip(restored.astype(np.float32) + gain * added, 0, 255).round().astype(np.uint8)
