"""The restorer: identity encoder + generator + learned null identity + sampler settings.

``identity=None`` selects the learned null identity: the generic mode for people who have
not enrolled, which identity dropout during training teaches.
"""

from __future__ import annotations

import torch
from torch import nn

from ..diffusion import restore
from .config import ModelConfig
from .generator import Generator
from .identity import IdentityEncoder


class Restorer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e = cfg.encoder
        self.encoder = IdentityEncoder(e)
        self.generator = Generator(cfg.generator, e.dim, e.spatial, e.spatial_fine, e)
        self.null_identity = nn.Parameter(torch.zeros(e.rows(), e.dim))

    def identity_shape(self) -> tuple[int, int]:
        e = self.cfg.encoder
        return (e.rows(), e.dim)

    def encode(self, refs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(refs, mask)

    def resolve_identity(self, ident: torch.Tensor | None, batch: int) -> torch.Tensor:
        if ident is None:
            return self.null_identity[None].expand(batch, -1, -1)
        return ident

    def forward(self, x_t: torch.Tensor, lq: torch.Tensor, t: torch.Tensor, ident: torch.Tensor) -> torch.Tensor:
        return self.generator(x_t, lq, t, ident)

    def restore(self, lq: torch.Tensor, ident: torch.Tensor | None, noise: torch.Tensor, steps: int) -> torch.Tensor:
        """The whole deterministic sampler (differentiable: distillation trains through it)."""
        ident = self.resolve_identity(ident, lq.shape[0])
        return restore(lambda x, t: self.generator(x, lq, t, ident), lq, noise, steps, self.cfg.residual_scale)

    @torch.no_grad()
    def sample(self, lq: torch.Tensor, ident: torch.Tensor | None, noise: torch.Tensor, steps: int) -> torch.Tensor:
        return self.restore(lq, ident, noise, steps)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def generator_gflops(model: Restorer, size: int | None = None) -> float:
    """GFLOPs (2 x multiply-adds) of one generator forward on one face."""
    from torch.utils.flop_counter import FlopCounterMode

    s = size or model.cfg.generator.size
    dev = model.null_identity.device
    x = torch.zeros(1, 3, s, s, device=dev)
    ident = model.null_identity.detach()[None]
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.generator(x, x, torch.zeros(1, device=dev), ident)
    return fc.get_total_flops() / 1e9


def load_grown(model: Restorer, src: Restorer) -> list[str]:
    """Load ``src``'s weights into ``model``, which may have layers ``src`` lacks (e.g. identity
    cross-attention at more levels); returns their names. Why: a wider identity pathway can
    start from trained weights. New cross-attention layers have zero-initialised outputs, so the
    grown model computes exactly what ``src`` did until training moves them. Every ``src`` weight
    must land somewhere with the same shape: a model that would silently drop or reshape trained
    weights is refused. The one exception is the null identity, which grows by the spatial maps'
    rows (kept at zero: the generic mode adds nothing in place, as before)."""
    from ..errors import ModelError

    dst, s = model.state_dict(), src.state_dict()
    n_old, n_new = s["null_identity"].shape[0], dst["null_identity"].shape[0]
    if n_new > n_old and s["null_identity"].shape[1:] == dst["null_identity"].shape[1:]:
        grown = dst["null_identity"].clone().zero_()
        grown[:n_old] = s["null_identity"]
        s["null_identity"] = grown
    lost = [k for k in s if k not in dst or dst[k].shape != s[k].shape]
    if lost:
        raise ModelError(f"cannot grow these weights into the new model: {', '.join(lost[:4])}"
                         f"{' ...' if len(lost) > 4 else ''} have no place of the same shape")
    model.load_state_dict(s, strict=False)
    return sorted(set(dst) - set(s))
