"""Identity encoder: a CNN per reference crop, then order-invariant set aggregation.

Per the seed paper (Su et al., 2023) per-image encodings are averaged into a global vector;
in addition a few learned queries attend over the spatial features of *all* references
(attention pooling over the set, also order-invariant) to give identity tokens. A mask lets
one batch hold sets of different sizes (1-8 references).

Optionally (``spatial`` > 0) a spatial identity map: the encoder's features at that side,
averaged over the references position by position, appended as side x side tokens. Why: the
pooled vector and tokens keep *what* the person looks like but not *where*; measured, the
generator then conveyed only ~0.03 of identity distance even when handed the clean photo as its
reference. Crops are aligned to one template, so features at the same position of different
photos describe the same part of the face, and the generator can add them in place.

Optionally (``spatial_fine`` > 0) a second, finer map from the first block (32x32 at 128),
projected to dim/4 channels and stored space-to-depth as (side/2)**2 rows, so every identity row
keeps the width ``dim``. Why: at 16x16 one map cell spans a whole eye; the shapes that make a
face someone's (eyelids, nostrils, the mouth's corners) live at the finer scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig
from .reference import ReferenceEncoder


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.n1 = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.n2 = nn.GroupNorm(8, cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.n1(self.conv1(x)))
        h = self.n2(self.conv2(h))
        return F.silu(h + self.skip(x))


class IdentityEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stem = nn.Sequential(nn.Conv2d(12, cfg.widths[0], 3, padding=1), nn.SiLU())  # on 2x s2d
        blocks = []
        ch = cfg.widths[0]
        for w in cfg.widths:
            blocks.append(_Block(ch, w))
            ch = w
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(ch, cfg.dim)
        self.global_mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.queries = nn.Parameter(torch.randn(cfg.tokens, cfg.dim) * 0.02)
        self.attn = nn.MultiheadAttention(cfg.dim, 4, batch_first=True)
        self.tok_norm = nn.LayerNorm(cfg.dim)
        self.out_norm = nn.LayerNorm(cfg.dim)
        self.tap = self.spatial_tap(cfg, cfg.spatial)
        if self.tap is not None:
            self.spatial_proj = nn.Linear(cfg.widths[self.tap], cfg.dim)
            self.spatial_norm = nn.LayerNorm(cfg.dim)
        self.fine_tap = self.spatial_tap(cfg, cfg.spatial_fine)
        if self.fine_tap is not None:
            if cfg.dim % 4:
                raise ValueError(f"a fine spatial map needs an identity width divisible by 4, not {cfg.dim}")
            self.fine_proj = nn.Linear(cfg.widths[self.fine_tap], cfg.dim // 4)
            self.fine_norm = nn.LayerNorm(cfg.dim // 4)
        if cfg.ref_slots > 0:
            self.reference = ReferenceEncoder(cfg)

    @staticmethod
    def spatial_tap(cfg: EncoderConfig, side: int) -> int | None:
        """Index of the block whose output has side ``side`` (block i: size / 2**(i+2)); None for 0."""
        if side <= 0:
            return None
        sides = [cfg.size // 2 ** (i + 2) for i in range(len(cfg.widths))]
        if side not in sides:
            raise ValueError(f"spatial identity side {side}: the encoder's features have sides {sides}")
        return sides.index(side)

    def forward(self, refs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """refs: (B, K, 3, S, S) in [-1,1]; mask: (B, K) bool, True = real reference.

        Returns (B, cfg.rows(), dim): the global vector, the identity tokens, then (if configured)
        the spatial map row by row, the fine map's space-to-depth rows and the references' keys
        and values (models/reference.py).
        """
        b, k = refs.shape[:2]
        if mask is None:
            mask = torch.ones(b, k, dtype=torch.bool, device=refs.device)
        flat_mask = mask.reshape(-1)
        x = F.pixel_unshuffle(refs.flatten(0, 1)[flat_mask], 2)  # padding slots never run the CNN
        h = self.stem(x)
        tap = fine = None
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i == self.tap:
                tap = h
            if i == self.fine_tap:
                fine = h
        real = self.proj(h.flatten(2).transpose(1, 2))  # (N_real, HW, D)
        hw = real.shape[1]
        feat = _pad(real, flat_mask, b, k)  # (B, K, HW, D)
        m = mask.float()[:, :, None]
        per_img = feat.mean(2)  # (B, K, D)
        glob = _set_mean(per_img, m)
        glob = self.global_mlp(glob)
        tokens_kv = self.tok_norm(feat.reshape(b, k * hw, -1))
        key_pad = ~mask[:, :, None].expand(b, k, hw).reshape(b, k * hw)
        q = self.queries[None].expand(b, -1, -1)
        tok, _ = self.attn(q, tokens_kv, tokens_kv, key_padding_mask=key_pad, need_weights=False)
        out = self.out_norm(torch.cat([glob[:, None], tok + q], dim=1))
        parts = [out]
        if tap is not None:
            parts.append(self.spatial_norm(self.spatial_proj(_map_mean(tap, flat_mask, m))))
        if fine is not None:
            side = fine.shape[-1]
            fmap = self.fine_norm(self.fine_proj(_map_mean(fine, flat_mask, m)))  # (B, side*side, D/4)
            fmap = F.pixel_unshuffle(fmap.transpose(1, 2).reshape(b, -1, side, side), 2)  # (B, D, side/2, side/2)
            parts.append(fmap.flatten(2).transpose(1, 2))
        if self.cfg.ref_slots > 0:
            parts.append(self.reference(refs, mask))
        return torch.cat(parts, dim=1) if len(parts) > 1 else out


def _pad(real: torch.Tensor, flat_mask: torch.Tensor, b: int, k: int) -> torch.Tensor:
    """Per-reference results of the real slots (N_real, ...) back into (B, K, ...), zeros for padding."""
    out = real.new_zeros(b * k, *real.shape[1:])
    out[flat_mask] = real
    return out.reshape(b, k, *real.shape[1:])


def _map_mean(feat: torch.Tensor, flat_mask: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Real references' feature maps (N_real, C, H, W) averaged over each set position by position
    -> (B, H*W, C)."""
    b, k = m.shape[:2]
    mean = _set_mean(_pad(feat, flat_mask, b, k).reshape(b, k, -1), m)
    return mean.reshape(b, feat.shape[1], -1).transpose(1, 2)


def _set_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean over the reference axis of (B, K, N), counting only real references (``m``: (B, K, 1))."""
    return (x * m).sum(1) / m.sum(1).clamp(min=1)
