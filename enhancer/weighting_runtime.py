"""The learned reference weighting at call time, in NumPy.

Why NumPy and not the torch module it was trained as: the network is tiny (two heads of three
16-wide convolutions at 32x32), so torch's per-call overhead and its thread pool, which competes
with the generator's for the same two cores, cost more than the arithmetic (torch: 2.0 ms median
and 70 ms at p95 under load; this: well under 1 ms), and the frame pipeline keeps starting
without torch. ``tests/test_reference_weighting.py`` holds the two implementations to the same
output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
from safetensors import safe_open

from .errors import ModelError

PACKAGED = Path(str(files("enhancer") / "weights" / "reference_weighting.safetensors"))


@dataclass(frozen=True)
class WeightingConfig:
    width: int = 16
    scale: int = 4  # the heads run at (size / scale) squared
    tau: float = 1000.0  # temperature of the hand-made mismatch term, as TransferConfig.tau


# (weight (out, in, 3, 3), bias (out,), dilation) per convolution; a GELU between them
Layer = tuple[np.ndarray, np.ndarray, int]
DILATIONS = (1, 2, 4, 1)  # the heads' convolutions (enhancer.models.reference_weighting._head)


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU, x * Phi(x) = (x + |x| erf(|x| / sqrt 2)) / 2, with erf by Abramowitz & Stegun
    7.1.26 (error < 1.5e-7): NumPy has no erf, and the heads were trained with the exact GELU."""
    a = np.abs(x)
    z = a * np.float32(0.7071067811865476)
    t = z * np.float32(0.3275911)
    t += 1.0
    np.reciprocal(t, out=t)
    poly = np.float32(1.061405429) * t  # in place from here: the same operations, fewer temporaries
    poly -= np.float32(1.453152027)
    poly *= t
    poly += np.float32(1.421413741)
    poly *= t
    poly -= np.float32(0.284496736)
    poly *= t
    poly += np.float32(0.254829592)
    poly *= t
    np.multiply(z, z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z
    np.subtract(1.0, poly, out=poly)  # erf(|x| / sqrt 2)
    poly *= a
    poly += x
    poly *= 0.5
    return poly


def _conv(x: np.ndarray, layer: Layer) -> np.ndarray:
    """3x3 convolution with zero padding equal to the dilation ('same'), on x laid out (C, B, H, W).

    The padded batch is one flat row per channel, so each of the nine taps is a matrix product
    with a shifted view of it (no im2col copy); outputs are read back at the valid positions."""
    w, b, dil = layer
    c, n, h, wd = x.shape
    hp, wp = h + 2 * dil, wd + 2 * dil
    size = n * hp * wp
    flat = np.zeros((c, size + 2 * dil * (wp + 1)), np.float32)
    flat[:, :size].reshape(c, n, hp, wp)[:, :, dil:dil + h, dil:dil + wd] = x
    out = np.zeros((w.shape[0], size), np.float32)
    for i in range(3):
        for j in range(3):
            off = (i * wp + j) * dil
            out += w[:, :, i, j] @ flat[:, off:off + size]
    return out.reshape(-1, n, hp, wp)[:, :, :h, :wd] + b[:, None, None, None]


def _head(x: np.ndarray, layers: tuple[Layer, ...]) -> np.ndarray:
    """x (B, C, H, W) -> (B, C_out, H, W)."""
    x = np.ascontiguousarray(x.transpose(1, 0, 2, 3))
    for i, layer in enumerate(layers):
        x = _conv(x, layer)
        if i < len(layers) - 1:
            x = _gelu(x)
    return x.transpose(1, 0, 2, 3)


@dataclass(frozen=True)
class WeightingRuntime:
    cfg: WeightingConfig
    per_ref: tuple[Layer, ...]
    glob: tuple[Layer, ...]
    model_id: str = ""

    @classmethod
    def from_state(cls, cfg: WeightingConfig, state: dict[str, np.ndarray], model_id: str = "") -> WeightingRuntime:
        """From the torch module's state dict (names ``per_ref.0.weight`` ...), as float32 arrays."""
        def layers(prefix: str) -> tuple[Layer, ...]:
            idx = sorted({int(k.split(".")[1]) for k in state if k.startswith(prefix + ".")})
            if len(idx) != len(DILATIONS):
                raise ModelError(f"reference weighting: {prefix} has {len(idx)} layers, not {len(DILATIONS)}")
            return tuple((state[f"{prefix}.{i}.weight"].astype(np.float32),
                          state[f"{prefix}.{i}.bias"].astype(np.float32), d)
                         for i, d in zip(idx, DILATIONS, strict=True))
        return cls(cfg, layers("per_ref"), layers("glob"), model_id)

    def detail(self, d: np.ndarray, detail: np.ndarray, per_ref: np.ndarray, glob: np.ndarray) -> np.ndarray:
        """d (K, H, W), detail (K, H, W, 3), per_ref (K, 7, h, w), glob (5, h, w) -> the detail to
        add (H, W, 3), before the transfer's gain: softmax over (null, references) of the hand-made
        logits -d / tau plus the upsampled corrections, times exp(log-gain)."""
        k, hgt, wid = d.shape
        up = lambda m: cv2.resize(np.ascontiguousarray(m.transpose(1, 2, 0)), (wid, hgt),  # noqa: E731
                                  interpolation=cv2.INTER_LINEAR).reshape(hgt, wid, -1).transpose(2, 0, 1)
        corr = up(_head(per_ref, self.per_ref)[:, 0])
        g = up(_head(glob[None], self.glob)[0])
        logits = np.concatenate([g[:1], -d / self.cfg.tau + corr])
        logits -= logits.max(0, keepdims=True)
        e = np.exp(logits)
        w = e[1:] / e.sum(0, keepdims=True)
        return np.einsum("khw,khwc->hwc", w, detail) * np.exp(g[1])[..., None]


def load_weighting_runtime(path: Path | None = None) -> WeightingRuntime:
    """The weighting's fp16 safetensors file (default: the packaged one; written by
    ``enhancer.weights.export_weighting``), without torch."""
    path = Path(path) if path else PACKAGED
    if not path.is_file():
        raise ModelError(f"{path}: reference weighting weights not found")
    try:
        with safe_open(str(path), "np") as f:
            meta = dict(f.metadata() or {})
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # safetensors raises several types for corrupt headers
        raise ModelError(f"{path}: not a valid safetensors weight file ({e})") from None
    if meta.get("kind") != "reference_weighting" or "config" not in meta:
        raise ModelError(f"{path}: not a reference weighting weight file")
    try:
        cfg = WeightingConfig(**json.loads(meta["config"]))
        return WeightingRuntime.from_state(cfg, state, meta.get("model_id", ""))
    except KeyError as e:
        raise ModelError(f"{path}: reference weighting weights lack {e}") from None
