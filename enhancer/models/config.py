"""Model configuration. Stored in every weight file's metadata, so loading rebuilds the same net."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class GeneratorConfig:
    size: int = 128
    stem_factor: int = 2  # space-to-depth: no convolution runs at full resolution
    widths: tuple[int, ...] = (32, 64, 96, 128)  # at size/2, /4, /8, /16
    blocks: int = 1  # residual blocks per level and direction
    attn_min_level: int = 2  # cross-attention to identity tokens at level >= this (16x16 and 8x8)
    # the spatial identity map (if the encoder makes one) is added at level >= this (at 128: 32x32
    # and below); by level, not side, so a copy of the net at another crop size has the same layers
    spatial_min_level: int = 1
    emb_dim: int = 128
    groups: int = 8
    heads: int = 4


@dataclass(frozen=True)
class EncoderConfig:
    size: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 192)  # at /4, /8, /16, /32 (after a stride-2 stem)
    dim: int = 256  # identity vector / token width
    tokens: int = 4  # identity tokens besides the global vector
    # > 0: also a spatial identity map, side x side tokens (16: the encoder's 16x16 features averaged
    # over the references), which the generator adds in place from ``GeneratorConfig.spatial_min_level``; 0: off
    spatial: int = 0
    max_refs: int = 8


@dataclass(frozen=True)
class ModelConfig:
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    # > 0: diffuse the scaled residual (target - degraded) instead of the target itself, so
    # "predict nothing" already returns the degraded input and the network learns corrections.
    # 0 means plain x0 diffusion (the first GPU-trained teacher used that).
    residual_scale: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(s: str) -> ModelConfig:
        d = json.loads(s)
        g = d["generator"]
        e = d["encoder"]
        g["widths"] = tuple(g["widths"])
        e["widths"] = tuple(e["widths"])
        return ModelConfig(GeneratorConfig(**g), EncoderConfig(**e), float(d.get("residual_scale", 0.0)))
