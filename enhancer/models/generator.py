"""Identity-conditioned UNet on aligned crops, sized for ~1-1.5 GFLOP per forward at 128.

Input: noisy target x_t and the bicubic-upsampled degraded crop, concatenated and folded
space-to-depth so no convolution runs at full resolution. Identity enters twice: the global
vector through AdaGN (added to the time embedding) and the identity tokens through
cross-attention at 16x16 and 8x8. With a spatial identity map (``spatial`` > 0, see
identity.py) it is also added in place, through zero-initialised 1x1 convolutions, after each
level at 32x32 and below, both ways: a model grown from one without it starts out unchanged.
A fine map (``spatial_fine`` > 0, 32x32 at 128) is added the same way at 64x64 and 32x32.
With reference attention (``refs.ref_slots`` > 0, see reference.py) each decoder level at a
side the references' keys have attends to a window of every reference photo, zero-initialised too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import AdaGNResBlock, CrossAttention, timestep_embedding
from .config import EncoderConfig, GeneratorConfig
from .reference import ReferenceAttention, split_ref_rows


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig, ctx_dim: int, spatial: int = 0, spatial_fine: int = 0,
                 refs: EncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.refs = refs if refs is not None and refs.ref_slots > 0 else None  # reference attention's layout
        self.spatial = spatial  # side of the spatial identity map: the identity's rows after the tokens
        self.spatial_fine = spatial_fine  # side of the fine map: the last (side/2)**2 rows, space-to-depth
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
        levels = range(len(cfg.widths))  # one entry per level either way (Identity: no map there)
        # the coarse map at level >= spatial_min_level (at 128: 32x32 and below), the fine map (dim/4
        # channels) at level <= fine_max_level (64x64 and 32x32)
        coarse = [spatial > 0 and lvl >= cfg.spatial_min_level for lvl in levels]
        fine = [spatial_fine > 0 and lvl <= cfg.fine_max_level for lvl in levels]
        self.spatial_down = nn.ModuleList(_map_conv(ctx_dim, cfg.widths[lvl], coarse[lvl]) for lvl in levels)
        self.spatial_up = nn.ModuleList(_map_conv(ctx_dim, cfg.widths[lvl], coarse[lvl]) for lvl in reversed(levels))
        self.spatial_fine_down = nn.ModuleList(_map_conv(ctx_dim // 4, cfg.widths[lvl], fine[lvl]) for lvl in levels)
        self.spatial_fine_up = nn.ModuleList(
            _map_conv(ctx_dim // 4, cfg.widths[lvl], fine[lvl]) for lvl in reversed(levels))
        # reference attention after each decoder level whose side the references' keys have
        sides = [cfg.size // 2 ** (lvl + 1) for lvl in reversed(levels)]
        self.ref_up = nn.ModuleList(
            ReferenceAttention(cfg.widths[lvl], self.refs.ref_dims[self.refs.ref_sides.index(side)],
                               cfg.ref_windows[self.refs.ref_sides.index(side)], cfg.groups, side)
            if self.refs is not None and side in self.refs.ref_sides else nn.Identity()
            for lvl, side in zip(reversed(levels), sides, strict=True))
        self.out = nn.Conv2d(ch, 3 * f * f, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t: torch.Tensor, lq: torch.Tensor, t: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
        """x_t, lq: (B,3,S,S) in [-1,1]; t: (B,) in [0,1]; ident: (B, 1+T, D) -> v-prediction."""
        f = self.cfg.stem_factor
        maps: dict[int, torch.Tensor] = {}  # the spatial map resized per side, once per forward
        fmaps: dict[int, torch.Tensor] = {}  # the same for the fine map
        kv: dict[int, torch.Tensor] = {}
        if self.refs is not None:
            ident, kv = split_ref_rows(ident, self.refs)
        if self.spatial_fine > 0:
            half = self.spatial_fine // 2
            fp = ident[:, -half * half:].transpose(1, 2)  # stored space-to-depth: (B, D, half*half)
            fmaps[self.spatial_fine] = F.pixel_shuffle(fp.reshape(*fp.shape[:2], half, half), 2)
            ident = ident[:, :-half * half]
        if self.spatial > 0:
            s = self.spatial
            sp = ident[:, -s * s:]
            maps[s] = sp.transpose(1, 2).reshape(sp.shape[0], sp.shape[2], s, s)
            ident = ident[:, :-s * s]
        temb = timestep_embedding(t, self.cfg.emb_dim).to(self.stem.weight.dtype)
        emb = self.time_mlp(temb) + self.id_proj(ident[:, 0])
        emb = F.silu(emb)
        h = self.stem(F.pixel_unshuffle(torch.cat([x_t, lq], dim=1), f))
        skips = []
        for lvl, (blocks, attns, ds) in enumerate(zip(self.down, self.down_attn, self.downsample, strict=True)):
            for blk, att in zip(blocks, attns, strict=True):
                h = blk(h, emb)
                h = att(h, ident) if isinstance(att, CrossAttention) else h
            h = self._add_spatial(h, maps, self.spatial_down[lvl])
            h = self._add_spatial(h, fmaps, self.spatial_fine_down[lvl])
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
            h = self._add_spatial(h, maps, self.spatial_up[lvl])
            h = self._add_spatial(h, fmaps, self.spatial_fine_up[lvl])
            if isinstance(self.ref_up[lvl], ReferenceAttention):
                h = self.ref_up[lvl](h, kv[self.ref_up[lvl].side])
        h = self.out(F.silu(self.out_norm(h)))
        return F.pixel_shuffle(h, f)

    @staticmethod
    def _add_spatial(h: torch.Tensor, maps: dict[int, torch.Tensor], conv: nn.Module) -> torch.Tensor:
        if not maps or not isinstance(conv, nn.Conv2d):
            return h
        side = h.shape[-1]
        if side not in maps:  # down and up pass share each resize
            src = next(iter(maps.values()))
            maps[side] = F.interpolate(src, size=h.shape[-2:], mode="bilinear", align_corners=False)
        return h + conv(maps[side].to(h.dtype))


def _map_conv(cin: int, cout: int, used: bool) -> nn.Module:
    """Zero-initialised 1x1 conv adding an identity map at one level (Identity where the map is
    not added), so a model grown with a map starts out computing what it did without."""
    if not used:
        return nn.Identity()
    conv = nn.Conv2d(cin, cout, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv
