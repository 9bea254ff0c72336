"""Building blocks: residual blocks with adaptive group-norm, and identity cross-attention."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous time t in [0, 1] (scaled to 0..1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class AdaGNResBlock(nn.Module):
    """GroupNorm whose scale/shift come from the time + identity embedding (AdaGN)."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout, affine=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class CrossAttention(nn.Module):
    """Features attend to identity tokens; zero-initialised output so it starts as identity."""

    def __init__(self, channels: int, ctx_dim: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(ctx_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        nh, hd = self.heads, c // self.heads
        q = self.q(self.norm(x)).reshape(b, nh, hd, h * w).transpose(2, 3)  # b nh hw hd
        k, v = self.kv(ctx).chunk(2, dim=-1)  # b T c
        k = k.reshape(b, -1, nh, hd).transpose(1, 2)  # b nh T hd
        v = v.reshape(b, -1, nh, hd).transpose(1, 2)
        att = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd), dim=-1)
        o = (att @ v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.out(o)
