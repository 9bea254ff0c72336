"""Reference attention: the generator looks at each reference photo, not only their average.

Why: the identity vector, tokens and spatial map are averages over the references, so they say
what the person looks like in general but carry none of one photo's own eyes, teeth or hairline;
a one-step generator conditioned only on averages returns an average face (ReF-LDM and
InstantRestore found the same, and fixed it by letting the decoder attend to cached per-reference
keys and values).

``ReferenceEncoder`` runs once per reference at enrolment and returns keys and values at the
generator's 32x32 and 16x16 levels; they are stored in the identity, so a frame pays only for the
attention. Crops are aligned to one template, so a face part sits at about the same position in
every photo: each generator position attends to a small window around the same position in every
reference slot (``window`` x ``window`` x slots keys), which is cheap enough for 15 ms a face and
tolerates a few pixels of misalignment.

Stored layout (rows of ``dim`` appended to the identity): per side in ``ref_sides`` order, the
tensor (slots, 2 * width, side, side) (keys then values; ``ref_dims`` gives each side's width),
flattened and cut into rows of ``dim``.
A set with fewer references than slots repeats them in order, so every slot holds a real photo.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import EncoderConfig


def check_ref_config(cfg: EncoderConfig) -> None:
    if cfg.ref_slots <= 0:
        return
    if len(cfg.ref_sides) != len(cfg.ref_dims):
        raise ValueError(f"reference sides {cfg.ref_sides} and widths {cfg.ref_dims} differ in length")
    for s, d in zip(cfg.ref_sides, cfg.ref_dims, strict=True):
        if (2 * d * s * s) % cfg.dim or cfg.size % s:
            raise ValueError(f"reference side {s} with width {d} does not fill rows of {cfg.dim}")


def split_ref_rows(ident: torch.Tensor, cfg: EncoderConfig) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(B, rows, dim) -> the identity without its reference rows, and {side: (B, slots, 2*width, side, side)}."""
    n = cfg.ref_rows()
    if n == 0:
        return ident, {}
    b = ident.shape[0]
    flat = ident[:, ident.shape[1] - n:].reshape(b, -1)
    out, at = {}, 0
    for s, d in zip(cfg.ref_sides, cfg.ref_dims, strict=True):
        size = cfg.ref_slots * 2 * d * s * s
        out[s] = flat[:, at:at + size].reshape(b, cfg.ref_slots, 2 * d, s, s)
        at += size
    return ident[:, :ident.shape[1] - n], out


def slot_indices(mask: torch.Tensor, slots: int) -> torch.Tensor:
    """(B, K) mask of real references (a prefix of K, as every caller builds it) -> (B, slots)
    indices into K that repeat the real references in order."""
    n = mask.long().sum(1).clamp(min=1)
    return torch.arange(slots, device=mask.device)[None] % n[:, None]


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.norm = nn.GroupNorm(8, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm(self.conv1(x)))
        return h + self.conv2(F.silu(h))


class ReferenceEncoder(nn.Module):
    """Per-reference keys and values at the generator's attention sides (at 128: 32x32, 16x16)."""

    def __init__(self, cfg: EncoderConfig, widths: tuple[int, ...] = (32, 48, 64)) -> None:
        super().__init__()
        check_ref_config(cfg)
        self.cfg = cfg
        self.stem = nn.Conv2d(12, widths[0], 3, padding=1)  # on 2x space-to-depth: size/2
        self.down = nn.ModuleList()
        self.heads = nn.ModuleDict()
        ch, side = widths[0], cfg.size // 2
        for w in widths[1:]:
            self.down.append(_Down(ch, w))
            ch, side = w, side // 2
            if side in cfg.ref_sides:
                self.heads[str(side)] = nn.Conv2d(ch, 2 * cfg.ref_dims[cfg.ref_sides.index(side)], 1)
        missing = set(cfg.ref_sides) - {int(k) for k in self.heads}
        if missing:
            raise ValueError(f"reference sides {sorted(missing)}: the reference encoder reaches {side} at the least")

    def forward(self, refs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """refs (B, K, 3, S, S), mask (B, K) -> (B, ref_rows, dim)."""
        b = refs.shape[0]
        idx = slot_indices(mask, self.cfg.ref_slots)
        picked = torch.gather(refs, 1, idx[:, :, None, None, None].expand(-1, -1, *refs.shape[2:]))
        h = F.silu(self.stem(F.pixel_unshuffle(picked.flatten(0, 1), 2)))
        maps = {}
        for blk in self.down:
            h = blk(h)
            key = str(h.shape[-1])
            if key in self.heads:
                maps[h.shape[-1]] = self.heads[key](h)
        flat = [maps[s].reshape(b, -1) for s in self.cfg.ref_sides]
        return torch.cat(flat, dim=1).reshape(b, -1, self.cfg.dim)


class ReferenceAttention(nn.Module):
    """Generator features attend to a window around the same position in every reference slot.

    The output projection starts at zero, so a model grown with this layer computes what it did
    without it until training moves it. A learned bias per window offset lets attention prefer the
    same position (the crops are aligned) without forbidding its neighbours."""

    def __init__(self, channels: int, ref_dim: int, window: int, groups: int, side: int) -> None:
        super().__init__()
        self.side = side  # the side of the reference keys this layer reads (the level's side at full size)
        if window % 2 == 0:
            raise ValueError(f"reference attention window must be odd, not {window}")
        self.window = window
        self.ref_dim = ref_dim
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.q = nn.Conv2d(channels, ref_dim, 1)
        self.k_norm = nn.GroupNorm(1, ref_dim)
        self.offset_bias = nn.Parameter(torch.zeros(window * window))
        self.out = nn.Conv2d(ref_dim, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W); kv (B, slots, 2*ref_dim, H, W) -> x plus what the references say."""
        b, _, h, w = x.shape
        slots, d = kv.shape[1], self.ref_dim
        q = self.q(self.norm(x)) / math.sqrt(d)  # (B, d, H, W)
        k = self.k_norm(kv[:, :, :d].flatten(0, 1).to(x.dtype)).reshape(b, slots, d, h, w)
        v = kv[:, :, d:].to(x.dtype)
        logits, values = window_gather(q, k, v, self.window)  # (B, slots*w*w, H, W), (B, slots*w*w, d, H, W)
        logits = logits + self.offset_bias.repeat(slots)[None, :, None, None].to(x.dtype)
        logits = logits + window_validity(h, w, self.window, slots, x.device, x.dtype)
        att = torch.softmax(logits, dim=1)
        o = (att[:, :, None] * values).sum(1)
        return x + self.out(o)


def window_gather(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Dot products of q (B, d, H, W) with every key in a window x window neighbourhood of each
    slot of k (B, slots, d, H, W), and the matching values; built from shifted slices so it exports
    to plain ONNX ops."""
    r = window // 2
    b, slots, d, h, w = k.shape
    kp = F.pad(k.flatten(1, 2), (r, r, r, r)).reshape(b, slots, d, h + 2 * r, w + 2 * r)
    vp = F.pad(v.flatten(1, 2), (r, r, r, r)).reshape(b, slots, d, h + 2 * r, w + 2 * r)
    ks, vs = [], []
    for dy in range(window):
        for dx in range(window):
            ks.append(kp[..., dy:dy + h, dx:dx + w])
            vs.append(vp[..., dy:dy + h, dx:dx + w])
    kw = torch.stack(ks, dim=2)  # (B, slots, w*w, d, H, W)
    vw = torch.stack(vs, dim=2)
    logits = (q[:, None, None] * kw).sum(3).flatten(1, 2)
    return logits, vw.flatten(1, 2)


def window_validity(h: int, w: int, window: int, slots: int, device: torch.device,
                    dtype: torch.dtype) -> torch.Tensor:
    """0 where a window offset lands inside the map, a large negative number where it falls in the
    padding: (1, slots*window*window, H, W)."""
    r = window // 2
    ones = F.pad(torch.ones(1, 1, h, w, device=device), (r, r, r, r))
    inside = torch.stack([ones[0, 0, dy:dy + h, dx:dx + w] for dy in range(window) for dx in range(window)])
    return ((inside - 1.0) * 1e4).repeat(slots, 1, 1)[None].to(dtype)
