"""Learned weighting of the references' detail (the network half of ``enhancer.detail_transfer``).

Why: the hand-made transfer decides where each reference's detail goes from one number (its
low-pass mismatch with the restored face over a 9x9 window) and applies one global gain. Whether a
reference's detail belongs at a place also depends on things that number does not see: how much
detail the reference has there, whether it agrees with the detail the generator already put
there, how degraded the face arrived, and where on the face it is (an eye moves between photos, a
cheek does not). Two tiny CNNs at 1/4 resolution learn those corrections; their outputs start at
zero, so an untrained network is exactly the hand-made transfer (tested).

The features are computed with NumPy/OpenCV (``enhancer.detail_transfer.weighting_features``),
the same code for training and for a call. This module is the network as it trains; a call runs
the same network in NumPy (``enhancer.weighting_runtime``), held to the same output by a test.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..weighting_runtime import WeightingConfig, WeightingRuntime

REF_FEATURES = 7  # mismatch, detail energy, agreement, restored energy, degradation, x, y
GLOBAL_FEATURES = 5  # restored energy, brightness, degradation, x, y


def _head(cin: int, cout: int, width: int) -> nn.Sequential:
    """Three 3x3 convolutions, dilated 1/2/4 (a 15-pixel field at 1/4 resolution), zero output."""
    last = nn.Conv2d(width, cout, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.GELU(),
                         nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.GELU(),
                         nn.Conv2d(width, width, 3, padding=4, dilation=4), nn.GELU(), last)


class ReferenceWeighting(nn.Module):
    def __init__(self, cfg: WeightingConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or WeightingConfig()
        self.per_ref = _head(REF_FEATURES, 1, cfg.width)  # a correction to each reference's logit
        self.glob = _head(GLOBAL_FEATURES, 2, cfg.width)  # the null's logit and the log-gain

    def forward(self, d: torch.Tensor, detail: torch.Tensor, ref_feats: torch.Tensor,
                glob_feats: torch.Tensor) -> torch.Tensor:
        """d (B, K, H, W) mismatch, detail (B, K, 3, H, W), ref_feats (B, K, 7, h, w), glob_feats
        (B, 5, h, w) -> the detail to add (B, 3, H, W), before the gain of the transfer."""
        b, k = d.shape[:2]
        corr = self.per_ref(ref_feats.flatten(0, 1)).view(b, k, *ref_feats.shape[-2:])
        return combine(d, detail, corr, self.glob(glob_feats), self.cfg.tau)

    def runtime(self) -> WeightingRuntime:
        """The same network as NumPy arrays, for calls (``enhancer.weighting_runtime``)."""
        state = {k: v.detach().float().numpy() for k, v in self.state_dict().items()}
        return WeightingRuntime.from_state(self.cfg, state)


def combine(d: torch.Tensor, detail: torch.Tensor, corr: torch.Tensor, glob: torch.Tensor,
            tau: float) -> torch.Tensor:
    """Softmax over (null, references) of the hand-made logits -d / tau plus the upsampled
    corrections, times each reference's detail, times exp(log-gain)."""
    size = d.shape[-2:]
    up = lambda x: F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # noqa: E731
    g = up(glob)
    logits = torch.cat([g[:, :1], -d / tau + up(corr)], 1)
    w = torch.softmax(logits, 1)[:, 1:]
    return (w[:, :, None] * detail).sum(1) * torch.exp(g[:, 1:2])
