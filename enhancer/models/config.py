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
    # the fine spatial identity map (if the encoder makes one) is added at level <= this (at 128:
    # 64x64 and 32x32), where the coarse map is too blurred to say where an eyelid or a nostril is
    fine_max_level: int = 1
    emb_dim: int = 128
    groups: int = 8
    heads: int = 4
    # reference attention: at the encoder's ``ref_sides[i]`` each position sees ref_windows[i]**2 cells
    # of every slot (1 at 32x32, the same position only: a 3x3 window there cost 3 ms a face)
    ref_windows: tuple[int, ...] = (1, 3)


@dataclass(frozen=True)
class EncoderConfig:
    size: int = 128
    widths: tuple[int, ...] = (32, 64, 128, 192)  # at /4, /8, /16, /32 (after a stride-2 stem)
    dim: int = 256  # identity vector / token width
    tokens: int = 4  # identity tokens besides the global vector
    # > 0: also a spatial identity map, side x side tokens (16: the encoder's 16x16 features averaged
    # over the references), which the generator adds in place from ``GeneratorConfig.spatial_min_level``; 0: off
    spatial: int = 0
    # > 0: also a fine spatial map of this side (32: the first block's features, averaged over the
    # references in place and projected to dim/4 channels), stored space-to-depth as (side/2)**2
    # rows of dim, which the generator adds at ``GeneratorConfig.fine_max_level`` and above; 0: off
    spatial_fine: int = 0
    max_refs: int = 8
    # > 0: reference attention (models/reference.py): per-reference keys and values of this many
    # slots at each side of ``ref_sides``, ``ref_dims`` wide there, appended to the identity; 0: off
    ref_slots: int = 0
    ref_sides: tuple[int, ...] = (32, 16)
    ref_dims: tuple[int, ...] = (16, 32)

    def ref_rows(self) -> int:
        if self.ref_slots <= 0:
            return 0
        return sum(self.ref_slots * 2 * d * s * s // self.dim for s, d in zip(self.ref_sides, self.ref_dims,
                                                                               strict=True))

    def fine_rows(self) -> int:
        return (self.spatial_fine // 2) ** 2 if self.spatial_fine > 0 else 0

    def rows(self) -> int:
        """Rows of an identity: the global vector, the tokens, the coarse map, the fine map, the
        references' keys and values."""
        return 1 + self.tokens + self.spatial ** 2 + self.fine_rows() + self.ref_rows()


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
        if "ref_windows" in g:
            g["ref_windows"] = tuple(g["ref_windows"])
        e["widths"] = tuple(e["widths"])
        for k in ("ref_sides", "ref_dims"):
            if k in e:
                e[k] = tuple(e[k])
        return ModelConfig(GeneratorConfig(**g), EncoderConfig(**e), float(d.get("residual_scale", 0.0)))
