"""Adversarial loss terms and differentiable augmentation, as pure functions.

Hinge loss (SPARNet-HD, BigGAN), the discriminator's own feature matching as the perceptual term
(pix2pixHD: nothing pretrained can be downloaded here, so the discriminator's features are the
only learned perceptual space we have), and DiffAugment (Zhao et al., NeurIPS 2020): colour,
translation and cutout applied alike to real and fake, differentiably, so a discriminator on
7k photos judges texture instead of memorising the training set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Outputs = list[tuple[list[torch.Tensor], torch.Tensor]]  # per scale: (features, patch logits)


def hinge_d_loss(real: Outputs, fake: Outputs) -> torch.Tensor:
    """Discriminator hinge loss, averaged over scales."""
    terms = [F.relu(1 - r[1]).mean() + F.relu(1 + f[1]).mean() for r, f in zip(real, fake, strict=True)]
    return sum(terms) / len(terms)


def hinge_mismatch_loss(wrong: Outputs, rows: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge term for real faces shown with another person's identity: fake, on the
    rows ``rows`` (B,) bool only (pairs that really are mismatched); zero when there are none."""
    if not bool(rows.any()):
        return wrong[0][1].sum() * 0.0
    terms = [F.relu(1 + w[1][rows]).mean() for w in wrong]
    return sum(terms) / len(terms)


def hinge_g_loss(fake: Outputs) -> torch.Tensor:
    """Generator side of the hinge loss: raise the discriminator's score of its outputs."""
    return sum(-f[1].mean() for f in fake) / len(fake)


def feature_matching(real: Outputs, fake: Outputs) -> torch.Tensor:
    """L1 between the discriminator's features of the output and of the truth (same augmentation),
    averaged over layers and scales; the truth's side carries no gradient."""
    terms = [F.l1_loss(ff, rf.detach()) for r, f in zip(real, fake, strict=True) for rf, ff in zip(r[0], f[0],
                                                                                                   strict=True)]
    return sum(terms) / len(terms)


def diff_augment(x: torch.Tensor, gen: torch.Generator, groups: int, translation: float = 0.125,
                 cutout: float = 0.5) -> torch.Tensor:
    """Augment (B, groups*3, H, W) images in [-1, 1]: every 3-channel group of a sample gets the same
    colour change, shift and cutout (they are one scene: face, its degraded input, references, or
    an output and its truth side by side), different samples get different ones."""
    b, c, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen).to(dev, x.dtype)

    g = x.reshape(b, groups, 3, h, w)
    g = g + (rand(b, 1, 1, 1, 1) - 0.5) * 2  # brightness (+-0.5 of the [0, 1] range)
    mean = g.mean(dim=2, keepdim=True)
    g = (g - mean) * (rand(b, 1, 1, 1, 1) * 2) + mean  # saturation
    mean = g.mean(dim=(1, 2, 3, 4), keepdim=True)
    g = (g - mean) * (rand(b, 1, 1, 1, 1) + 0.5) + mean  # contrast
    x = g.reshape(b, c, h, w)
    if translation > 0:  # integer shift with zero fill
        shift = ((rand(b, 2) * 2 - 1) * translation * torch.tensor([w, h], device=dev)).round()
        theta = torch.zeros(b, 2, 3, device=dev, dtype=x.dtype)
        theta[:, 0, 0] = 1
        theta[:, 1, 1] = 1
        theta[:, 0, 2] = -shift[:, 0] * 2 / w
        theta[:, 1, 2] = -shift[:, 1] * 2 / h
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if cutout > 0:
        ch, cw = int(h * cutout), int(w * cutout)
        cy = (rand(b) * (h + 1 - ch)).long()
        cx = (rand(b) * (w + 1 - cw)).long()
        ys = torch.arange(h, device=dev)[None, :, None]
        xs = torch.arange(w, device=dev)[None, None, :]
        inside = ((ys >= cy[:, None, None]) & (ys < cy[:, None, None] + ch)
                  & (xs >= cx[:, None, None]) & (xs < cx[:, None, None] + cw))
        x = x * (~inside)[:, None].to(x.dtype)
    return x
