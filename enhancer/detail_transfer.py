"""Reference detail transfer: the person's own fine detail, taken from their enrolment photos.

Why: the one-step generator returns close to the posterior mean of a face, so it deblocks but does
not commit to detail. The enrolment photos do hold this person's detail (eyebrow hairs, eyelids,
the texture of the skin), and aligned to the same template as the call's crop they hold it at
nearly the same place: on our validation people the best of four references' high-pass correlates
0.30 with a test photo's, another person's 0.04 (docs/visible-restoration.md). So after the
generator, each reference's high-pass is added where that reference's low-pass agrees with the
restored face, and nowhere it does not (a null weight keeps the choice "none").

Where the detail goes is decided either by hand (one mismatch number per reference and position,
and one gain) or by a small learned network on top of the same mismatch
(``enhancer.models.reference_weighting``, ``learned=True``), which also sees how much detail each
reference has there, whether it agrees with the restored face's own, how degraded the face arrived
and where on the face it is.

Pure functions on float32 crops (H, W, 3) in 0-255; the per-reference parts that do not depend on
the frame (high-pass and low-pass of each reference) are computed once, at enrolment or when an
identity is loaded (``prepare_references``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .strength import log_detail
from .weighting_runtime import WeightingRuntime


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
    # where the detail goes: the learned weighting (needs its network) or the hand-made one
    learned: bool = False
    # alpha for an identity enrolled from video (a clip, a webcam capture): its references come from
    # the same camera and light as the call and match it closely, so more of their detail is taken
    # (None: alpha for every identity)
    video_alpha: float | None = None
    # the learned weighting also moves this much of each reference's mid band (its Gaussian at
    # sigma_detail minus its Gaussian at sigma_match: the shape of brows, lids and lips, coarser
    # than the fine band), with the same weights (0: the fine band only)
    mid: float = 0.0
    # the mid share falls from ``mid`` at detail_full to 0 at this ln Laplacian variance (None: it
    # stays ``mid`` wherever the gate is open): coarser structure only for faces that arrive worst
    mid_none: float | None = None

    def __post_init__(self) -> None:
        if (self.alpha < 0 or self.tau <= 0 or self.null < 0 or self.window < 1 or self.mid < 0
                or not self.detail_full < self.detail_none or (self.video_alpha is not None and self.video_alpha < 0)
                or (self.mid > 0 and not self.learned)
                or (self.mid_none is not None and not self.detail_full < self.mid_none)):
            raise ValueError(f"invalid detail transfer settings: {self}")


# what the product runs (docs/visible-restoration.md, run 6: the learned weighting, gated, dial 5;
# run 7: dial 2 for identities enrolled from video; run 10: a quarter of the mid band for the faces
# that arrive worst; run 5's hand-made weighting at alpha 2 is TransferConfig(alpha=2.0))
DEFAULT_TRANSFER = TransferConfig(alpha=5.0, learned=True, video_alpha=2.0, mid=0.25, mid_none=2.9)


@dataclass(frozen=True)
class PreparedReferences:
    """What the transfer needs of a person's references, computed once with the settings they
    were computed for (so the two cannot disagree)."""

    detail: np.ndarray  # (K, H, W, 3) high-pass
    low: np.ndarray  # (K, H, W, 3) low-pass used for matching
    cfg: TransferConfig
    weighting: WeightingRuntime | None = None  # set when cfg.learned
    energy: np.ndarray | None = None  # (K, h, w) pooled detail energy, a feature of the learned weighting
    grid: np.ndarray | None = None  # (2, h, w) x and y in -1..1 at the learned weighting's resolution
    moved: np.ndarray | None = None  # (K, H, W, 3) what the learned weighting moves: detail + cfg.mid x mid band
    mid_band: np.ndarray | None = None  # (K, H, W, 3) the mid band, when cfg.mid > 0


def prepare_references(crops: np.ndarray, cfg: TransferConfig,
                       weighting: WeightingRuntime | None = None) -> PreparedReferences:
    """``crops`` (K, H, W, 3) uint8 aligned references -> their detail and low-pass (and, for the
    learned weighting, the pooled detail energy it reads)."""
    refs = np.asarray(crops, dtype=np.float32)
    if refs.ndim != 4 or refs.shape[-1] != 3 or len(refs) == 0:
        raise ValueError(f"references must be (K, H, W, 3), not {refs.shape}")
    if cfg.learned != (weighting is not None):
        raise ValueError("the learned weighting needs its network, and only it does")
    if weighting is None:
        detail = np.stack([r - cv2.GaussianBlur(r, (0, 0), cfg.sigma_detail) for r in refs])
        low = np.stack([cv2.GaussianBlur(r, (0, 0), cfg.sigma_match) for r in refs])
        return PreparedReferences(detail, low, cfg)
    fine_low = np.stack([_blur3(r, cfg.sigma_detail) for r in refs])
    detail = refs - fine_low
    low = np.stack([_blur3(r, cfg.sigma_match) for r in refs])
    mid_band = fine_low - low if cfg.mid > 0 else None
    moved = detail + np.float32(cfg.mid) * mid_band if mid_band is not None else detail
    s = weighting.cfg.scale
    energy = np.sqrt(_pool(_channel_mean_of_product(detail, detail), s)) / 16
    ys, xs = np.meshgrid(np.linspace(-1, 1, refs.shape[1] // s), np.linspace(-1, 1, refs.shape[2] // s), indexing="ij")
    grid = np.stack([xs, ys]).astype(np.float32)
    return PreparedReferences(detail, low, cfg, weighting, energy.astype(np.float32), grid, moved, mid_band)


def _blur3(x: np.ndarray, sigma: float) -> np.ndarray:
    """The learned weighting's Gaussian: radius ceil(3 sigma), mirrored border (what it was trained
    with; the hand-made path keeps OpenCV's default radius, as it was judged)."""
    r = math.ceil(3 * sigma)
    return cv2.GaussianBlur(x, (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT_101)


def _pool(x: np.ndarray, s: int) -> np.ndarray:
    """Mean over s x s blocks of a (H, W) or (K, H, W) float32 array (OpenCV's area resize is that
    mean, exactly, for a whole factor)."""
    h, w = x.shape[-2:]
    if x.ndim == 2:
        return cv2.resize(x, (w // s, h // s), interpolation=cv2.INTER_AREA)
    out = cv2.resize(np.ascontiguousarray(x.transpose(1, 2, 0)), (w // s, h // s), interpolation=cv2.INTER_AREA)
    return out.reshape(h // s, w // s, -1).transpose(2, 0, 1)


def _channel_mean_of_product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """mean over the colour axis of a * b (broadcast over K): one product, then a matrix-vector
    product with (1/3, 1/3, 1/3), a third of the time of the same sum as an einsum."""
    prod = np.multiply(a, b)
    c = prod.shape[-1]
    return (prod.reshape(-1, c) @ np.full(c, 1 / c, np.float32)).reshape(prod.shape[:-1])


def weighting_features(restored: np.ndarray, ld: float,
                       refs: PreparedReferences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the learned weighting reads for one restored face (H, W, 3) float32 whose degraded
    crop had ln Laplacian variance ``ld``: the mismatch (K, H, W), per-reference features
    (K, 7, h, w) and face features (5, h, w), h = H / scale."""
    assert refs.weighting is not None and refs.energy is not None
    wc = refs.weighting.cfg
    k, h, w = refs.detail.shape[:3]
    s = wc.scale
    diff = refs.low - _blur3(restored, refs.cfg.sigma_match)
    sq = np.ascontiguousarray(_channel_mean_of_product(diff, diff).transpose(1, 2, 0))  # (H, W, K): one box filter
    d = np.ascontiguousarray(cv2.blur(sq, (refs.cfg.window, refs.cfg.window)).reshape(h, w, k).transpose(2, 0, 1))
    o_hp = restored - _blur3(restored, refs.cfg.sigma_detail)
    o_en = np.sqrt(_pool(_channel_mean_of_product(o_hp, o_hp), s)) / 16
    agree = _pool(_channel_mean_of_product(refs.detail, o_hp), s) / 256
    per_ref = np.empty((k, 7, h // s, w // s), np.float32)
    per_ref[:, 0] = _pool(d, s) / wc.tau
    per_ref[:, 1] = refs.energy
    per_ref[:, 2] = agree
    per_ref[:, 3] = o_en
    per_ref[:, 4] = ld - 3.0
    per_ref[:, 5:] = refs.grid
    glob = np.empty((5, h // s, w // s), np.float32)
    glob[0] = o_en
    glob[1] = _pool(restored.mean(-1), s) / 255
    glob[2] = ld - 3.0
    glob[3:] = refs.grid
    return d, per_ref, glob


def learned_detail(restored: np.ndarray, ld: float, refs: PreparedReferences) -> np.ndarray:
    """(H, W, 3) detail the learned weighting adds to ``restored`` (float32), before the gain."""
    assert refs.weighting is not None
    d, per_ref, glob = weighting_features(restored, ld, refs)
    share = mid_share(ld, refs.cfg)
    if share == 0 or refs.mid_band is None:
        moved = refs.detail
    elif share == refs.cfg.mid:
        moved = refs.moved
    else:
        moved = refs.detail + np.float32(share) * refs.mid_band
    return refs.weighting.detail(d, moved, per_ref, glob)


def mid_share(ld: float, cfg: TransferConfig) -> float:
    """The share of the mid band moved for a face whose degraded crop had ln Laplacian variance ``ld``."""
    return cfg.mid if cfg.mid_none is None else cfg.mid * _ramp(ld, cfg.detail_full, cfg.mid_none)


def _ramp(ld: float, full: float, none: float) -> float:
    """1 at or below ``full``, 0 at or above ``none``, linear between."""
    return float(np.clip((none - ld) / (none - full), 0.0, 1.0))


def match_weights(restored: np.ndarray, refs: PreparedReferences) -> np.ndarray:
    """(K, H, W) weight of each reference at each pixel; they sum to less than 1 (the null's share)."""
    cfg = refs.cfg
    low = cv2.GaussianBlur(restored.astype(np.float32), (0, 0), cfg.sigma_match)
    dist = np.stack([cv2.blur(((r - low) ** 2).mean(-1), (cfg.window, cfg.window)) for r in refs.low])
    w = np.exp(-dist / cfg.tau)
    return w / (w.sum(0, keepdims=True) + cfg.null)


def gate_gain(ld: float, cfg: TransferConfig) -> float:
    """alpha for a face whose degraded crop had ln Laplacian variance ``ld`` at or below
    detail_full (it arrived without detail), 0 at or above detail_none (it arrived sharp), linear between."""
    return cfg.alpha * _ramp(ld, cfg.detail_full, cfg.detail_none)


def transfer_gain(degraded: np.ndarray, cfg: TransferConfig) -> float:
    """The gain for a face whose degraded crop (H, W, 3) uint8 is ``degraded`` (``gate_gain``)."""
    return gate_gain(float(log_detail(degraded[None])[0]), cfg)


def transfer_detail(restored: np.ndarray, degraded: np.ndarray, refs: PreparedReferences) -> np.ndarray:
    """``restored`` (H, W, 3) uint8, the restoration of ``degraded``, with the matching
    references' detail added at ``transfer_gain``, uint8."""
    if refs.detail.shape[1:] != restored.shape:
        raise ValueError(f"references {refs.detail.shape[1:]} and crop {restored.shape} differ in size")
    ld = float(log_detail(degraded[None])[0])
    gain = gate_gain(ld, refs.cfg)
    if gain == 0:
        return restored
    if refs.weighting is not None:
        added = learned_detail(restored.astype(np.float32), ld, refs)
    else:
        added = np.einsum("khw,khwc->hwc", match_weights(restored, refs), refs.detail)
    return np.clip(restored.astype(np.float32) + gain * added, 0, 255).round().astype(np.uint8)
