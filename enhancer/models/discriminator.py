"""Conditional multi-scale patch discriminator, trained here from scratch (nothing pretrained).

Why a discriminator: every other loss of the one-step generator (L1, v-prediction, distillation)
is minimised by the posterior mean, a face with the detail averaged away. A patch discriminator
judges local texture, so the generator is pushed to commit to eyelashes, pores and hair strands.
It sees the degraded input and the mean of the person's references beside the face, so detail
that contradicts the input or does not fit this person is what it learns to call fake.

pix2pixHD / SPARNet-HD style: a few stride-2 4x4 convolutions with spectral norm (keeps the
discriminator Lipschitz, so its gradients stay useful on 7k photos) and leaky ReLU, at full and
half resolution; each returns its intermediate features for the feature-matching loss.

With ``identity_dim`` it is also a projection discriminator (Miyato & Koyama, ICLR 2018) on the
identity the generator was given: each patch's logit gains the inner product of its features
with a learned embedding of that identity. Trained to call a real face with *another* person's
identity fake (GAN-CLS's mismatched pairs, Reed et al. 2016), it judges whether the detail fits
this person, which an image-only discriminator cannot: there, generic and personalised outputs
gain sharpness alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


@dataclass(frozen=True)
class DiscriminatorConfig:
    in_channels: int = 9  # the face, the degraded input, the references' mean
    widths: tuple[int, ...] = (48, 96, 192)
    scales: int = 2  # full and half resolution
    identity_dim: int = 0  # >0: projection on an identity vector of this size


class PatchDiscriminator(nn.Module):
    def __init__(self, cin: int, widths: tuple[int, ...], identity_dim: int = 0) -> None:
        super().__init__()
        layers = []
        ch = cin
        for w in widths:
            layers.append(spectral_norm(nn.Conv2d(ch, w, 4, stride=2, padding=1)))
            ch = w
        self.layers = nn.ModuleList(layers)
        self.head = spectral_norm(nn.Conv2d(ch, 1, 3, padding=1))
        self.embed = spectral_norm(nn.Linear(identity_dim, ch, bias=False)) if identity_dim > 0 else None

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats = []
        for conv in self.layers:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x)
        logits = self.head(x)
        if self.embed is not None:
            if identity is None:
                raise ValueError("this discriminator judges against an identity: pass one")
            logits = logits + (x * self.embed(identity.to(x.dtype))[:, :, None, None]).sum(1, keepdim=True)
        return feats, logits


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, cfg: DiscriminatorConfig = DiscriminatorConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.nets = nn.ModuleList(PatchDiscriminator(cfg.in_channels, cfg.widths, cfg.identity_dim)
                                  for _ in range(cfg.scales))

    def forward(self, x: torch.Tensor, identity: torch.Tensor | None = None) -> list[tuple[list[torch.Tensor],
                                                                                           torch.Tensor]]:
        """x (B, in_channels, S, S) [and identity (B, identity_dim)] -> per scale (features, patch logits)."""
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 2)
            out.append(net(x, identity))
        return out
