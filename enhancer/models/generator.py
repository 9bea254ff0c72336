"""Identity-conditioned UNet on aligned crops, sized for ~1-1.5 GFLOP per forward at 128.

Input: noisy target x_t and the bicubic-upsampled degraded crop, concatenated and folded
space-to-depth so no convolution runs at full resolution. Identity enters twice: the global
vector through AdaGN (added to the time embedding) and the identity tokens through
cross-attention at 16x16 and 8x8. With a spatial identity map (``spatial`` > 0, see
identity.py) it is also added in place, through zero-initialised 1x1 convolutions, after each
level at 32x32 and below, both ways: a model grown from one without it starts out unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AdaGNResBlock, CrossAttention, timestep_embedding
from .config import GeneratorConfig


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, ctx_dim: int, n_ctx: int | None = None, spatial: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_ctx = n_ctx  # identity rows used as attention context; the rest is the spatial map
        self.spatial = spatial
        f = cfg.stem_factor
        e = cfg.emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.id_proj = nn.Linear(ctx_dim, e)
        self.stem = nn.Conv2d(6 * f * f, cfg.widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.down_attn = nn.ModuleList()
        self.downsample = nn.ModuleList()
        ch = cfg.widths[0]
        skips = []
        for lvl, w in enumerate(cfg.widths):
            blocks = nn.ModuleList()
            attns = nn.ModuleList()
            for _ in range(cfg.blocks):
                blocks.append(AdaGNResBlock(ch, w, e, cfg.groups))
                ch = w
                attns.append(CrossAttention(ch, ctx_dim, cfg.heads, cfg.groups) if lvl >= cfg.attn_min_level
                             else nn.Identity())
            skips.append(ch)
            self.down.append(blocks)
            self.down_attn.append(attns)
            self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1) if lvl < len(cfg.widths) - 1
                                   else nn.Identity())
        self.mid = AdaGNResBlock(ch, ch, e, cfg.groups)
        self.mid_attn = CrossAttention(ch, ctx_dim, cfg.heads, cfg.groups)
        self.up = nn.ModuleList()
        self.up_attn = nn.ModuleList()
        for lvl in reversed(range(len(cfg.widths))):
            w = cfg.widths[lvl]
            blocks = nn.ModuleList()
            attns = nn.ModuleList()
            for i in range(cfg.blocks):
                cin = ch + skips[lvl] if i == 0 else ch
                blocks.append(AdaGNResBlock(cin, w, e, cfg.groups))
                ch = w
                attns.append(CrossAttention(ch, ctx_dim, cfg.heads, cfg.groups) if lvl >= cfg.attn_min_level
                             else nn.Identity())
            self.up.append(blocks)
            self.up_attn.append(attns)
        self.out_norm = nn.GroupNorm(min(cfg.groups, ch), ch)
        self.spatial_down = nn.ModuleList()
        self.spatial_up = nn.ModuleList()
        if spatial > 0:
            for lst, widths in ((self.spatial_down, cfg.widths), (self.spatial_up, cfg.widths[::-1])):
                for lvl, w in enumerate(widths):
                    side = cfg.size // cfg.stem_factor // 2 ** (lvl if lst is self.spatial_down
                                                                else len(widths) - 1 - lvl)
                    conv = nn.Conv2d(ctx_dim, w, 1) if side <= 32 else nn.Identity()
                    if isinstance(conv, nn.Conv2d):
                        nn.init.zeros_(conv.weight)
                        nn.init.zeros_(conv.bias)
                    lst.append(conv)
        self.out = nn.Conv2d(ch, 3 * f * f, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, lq: torch.Tensor, t: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
        """x_t, lq: (B,3,S,S) in [-1,1]; t: (B,) in [0,1]; ident: (B, 1+T, D) -> v-prediction."""
        f = self.cfg.stem_factor
        smap = None
        if self.spatial > 0:
            sp = ident[:, self.n_ctx:]
            smap = sp.transpose(1, 2).reshape(sp.shape[0], sp.shape[2], self.spatial, self.spatial)
            ident = ident[:, :self.n_ctx]
        temb = timestep_embedding(t, self.cfg.emb_dim).to(self.stem.weight.dtype)
        emb = self.time_mlp(temb) + self.id_proj(ident[:, 0])
        emb = F.silu(emb)
        h = self.stem(F.pixel_unshuffle(torch.cat([x_t, lq], dim=1), f))
        skips = []
        for lvl, (blocks, attns, ds) in enumerate(zip(self.down, self.down_attn, self.downsample, strict=True)):
            for blk, att in zip(blocks, attns, strict=True):
                h = blk(h, emb)
                h = att(h, ident) if isinstance(att, CrossAttention) else h
            h = self._add_spatial(h, smap, self.spatial_down, lvl)
            skips.append(h)
            h = ds(h)
        h = self.mid_attn(self.mid(h, emb), ident)
        for lvl, (blocks, attns) in enumerate(zip(self.up, self.up_attn, strict=True)):
            skip = skips.pop()
            if h.shape[-1] != skip.shape[-1]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            for i, (blk, att) in enumerate(zip(blocks, attns, strict=True)):
                h = blk(torch.cat([h, skip], dim=1) if i == 0 else h, emb)
                h = att(h, ident) if isinstance(att, CrossAttention) else h
            h = self._add_spatial(h, smap, self.spatial_up, lvl)
        h = self.out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(h, f)

    @staticmethod
    def _add_spatial(h: torch.Tensor, smap: torch.Tensor | None, convs: nn.ModuleList, lvl: int) -> torch.Tensor:
        if smap is None or not isinstance(convs[lvl], nn.Conv2d):
            return h
        if smap.shape[-1] != h.shape[-1]:
            smap = F.interpolate(smap, size=h.shape[-2:], mode="bilinear", align_corners=False)
        return h + convs[lvl](smap.to(h.dtype))
