"""Training losses: the pure terms, and one loss object per trainer that combines them.

As in EDM's ``training/loss.py``: a trainer draws its batch and noise, then calls its loss
object, which conditions the model, runs it and returns the scalar to minimise. Keeping the
terms here (not inline in a training loop) lets the teacher, the distilled student and the GAN
stage share one definition of each, and lets tests check a term without a trainer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..diffusion import from_diffusion_space, q_sample, to_diffusion_space, v_target, x0_from_v
from ..models.restorer import Restorer


def identity_dropout(ident: torch.Tensor, null: torch.Tensor, p: float,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row replaced by the null identity with probability ``p``; also returns which (B,) were."""
    drop = (torch.rand(ident.shape[0], generator=gen, device="cpu") < p).to(ident.device)
    return torch.where(drop[:, None, None], null[None].to(ident.dtype).expand_as(ident), ident), drop


def identity_contrast(a: torch.Tensor, b: torch.Tensor, labels: np.ndarray, temperature: float,
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between two views' identity vectors, row i of ``a`` matching row i of ``b``;
    other rows of the same identity are left out of the negatives (they are not wrong answers).
    ``weights`` (per row, optional) scale each row's two cross-entropies; the mean is over rows."""
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    lab = torch.as_tensor(labels, device=a.device)
    same = (lab[:, None] == lab[None, :]) & ~torch.eye(len(lab), dtype=torch.bool, device=a.device)
    logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(len(lab), device=a.device)
    per_row = 0.5 * (F.cross_entropy(logits, target, reduction="none")
                     + F.cross_entropy(logits.T, target, reduction="none"))
    return per_row.mean() if weights is None else (per_row * weights.to(per_row)).mean()


def output_identity(encoder: torch.nn.Module, restored: torch.Tensor, anchor: torch.Tensor, labels: np.ndarray,
                    temperature: float, weights: np.ndarray | None = None) -> torch.Tensor:
    """InfoNCE between the encoder's global vectors of ``restored`` and ``anchor`` (each sample's
    reference set): each restored face must pick out its own person's *other* photos in the batch.

    Other photos, not the target photo itself: the restored face comes from that photo's
    degraded copy, so pose, light and background alone would match it (the term started at
    0.44 against the target, against 1.19 for refs vs target). Contrastive rather than a plain
    cosine distance because the global vectors share a large common component (cosine distances
    of ~0.01 even across people), which a distance would barely see. The encoder runs with
    detached copies of its weights, so this term moves the generator (through ``restored``) and
    never the encoder: otherwise the encoder could satisfy it by forgetting identity, the
    collapse the contrastive term exists to prevent.

    Rows with weight 0 are dropped before the encoder runs (neither queries nor negatives), so
    they get no gradient from this term at all; the mean stays over the whole batch, so the
    term's scale per weighted sample does not depend on how many were dropped."""
    keep = np.arange(len(labels)) if weights is None else np.nonzero(weights > 0)[0]
    if len(keep) < 2:  # InfoNCE needs a negative
        return restored.sum() * 0.0
    params = {k: v.detach() for k, v in encoder.named_parameters()}
    sel = torch.as_tensor(keep, device=restored.device)
    e = torch.func.functional_call(encoder, params, (restored[sel][:, None],))[:, 0]
    w = None if weights is None else torch.as_tensor(weights[keep] * len(keep) / len(labels))
    return identity_contrast(e, anchor.detach()[sel], labels[keep], temperature, w)


def identity_margin(encoder: torch.nn.Module, restored: torch.Tensor, generic: torch.Tensor, anchor: torch.Tensor,
                    weights: np.ndarray, temperature: float) -> torch.Tensor:
    """Per sample: the personalised restoration must be nearer ``anchor`` (cosine of the encoder's
    global vectors; the person's references, or the clean target photo) than the generic
    restoration of the same crop is.

    Why: the output term rewards any restoration that looks like the person, and the generic mode
    learns that from the degraded crop as fast as the personalised mode learns it from the
    references, so the margin between them, the one thing personalisation adds, stayed flat while
    both improved. This term rewards only the margin. ``generic`` is held fixed (no gradient), so
    the baseline is never made worse to win; the encoder is held fixed as in ``output_identity``.
    Rows with weight 0 (generic samples, sharp crops) get no gradient; the mean is over all rows.
    ``softplus((s_generic - s_personal) / T)``: ln 2 when the two are equally near."""
    keep = np.nonzero(weights > 0)[0]
    if len(keep) == 0:
        return restored.sum() * 0.0
    params = {k: v.detach() for k, v in encoder.named_parameters()}
    sel = torch.as_tensor(keep, device=restored.device)
    both = torch.cat([restored[sel], generic[sel].detach()])
    e = F.normalize(torch.func.functional_call(encoder, params, (both[:, None],))[:, 0].float(), dim=-1)
    a = F.normalize(anchor.detach()[sel].float(), dim=-1)
    s_personal, s_generic = (e[: len(keep)] * a).sum(-1), (e[len(keep):] * a).sum(-1)
    w = torch.as_tensor(weights[keep], dtype=torch.float32, device=restored.device)
    return (F.softplus((s_generic - s_personal) / temperature) * w).sum() / len(weights)


@dataclass(frozen=True)
class TeacherLoss:
    """v-prediction MSE with identity dropout, plus the optional identity terms (teacher module docstring).

    ``__call__`` returns the total and each active identity term alone (for the logs).
    """

    id_dropout: float
    id_contrast: float = 0.0
    id_output: float = 0.0
    id_margin: float = 0.0
    id_temperature: float = 0.1
    margin_anchor: str = "target"

    def __call__(self, model: Restorer, x0: torch.Tensor, lq: torch.Tensor, refs: torch.Tensor, mask: torch.Tensor,
                 t: torch.Tensor, eps: torch.Tensor, labels: np.ndarray, weights: np.ndarray,
                 gen: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """``weights``: each sample's preset multiplier for the output and margin terms."""
        scale = model.cfg.residual_scale
        z0 = to_diffusion_space(x0, lq, scale)
        x_t = q_sample(z0, eps, t)
        terms: dict[str, float] = {}
        ident = model.encode(refs, mask)
        refs_vec = ident[:, 0]
        target_vec = model.encode(x0[:, None])[:, 0] if self.id_contrast > 0 or self.id_margin > 0 else None
        contrast = (identity_contrast(refs_vec, target_vec, labels, self.id_temperature)
                    if self.id_contrast > 0 else None)
        ident, dropped = identity_dropout(ident, model.null_identity, self.id_dropout, gen)
        v = model(x_t, lq, t, ident)
        loss = F.mse_loss(v.float(), v_target(z0, eps, t))
        if contrast is not None:
            terms["id_contrast"] = contrast.item()
            loss = loss + self.id_contrast * contrast
        if self.id_output > 0 or self.id_margin > 0:
            restored = from_diffusion_space(x0_from_v(x_t, v.float(), t), lq, scale)
        if self.id_output > 0:
            out_id = output_identity(model.encoder, restored, refs_vec, labels, self.id_temperature, weights)
            terms["id_output"] = out_id.item()
            loss = loss + self.id_output * out_id
        if self.id_margin > 0:
            with torch.no_grad():
                v_gen = model(x_t, lq, t, model.resolve_identity(None, len(ident)).to(ident.dtype))
                generic = from_diffusion_space(x0_from_v(x_t, v_gen.float(), t), lq, scale)
            anchor = target_vec if self.margin_anchor == "target" else refs_vec
            margin = identity_margin(model.encoder, restored, generic, anchor, weights * (~dropped).cpu().numpy(),
                                     self.id_temperature)
            terms["id_margin"] = margin.item()
            loss = loss + self.id_margin * margin
        return loss, terms


@dataclass(frozen=True)
class DistillLoss:
    """The student's own sampler matched to the teacher's samples, plus the optional terms (distill
    module docstring): ground-truth MSE, output identity and personalisation margin."""

    student_steps: int
    gt_weight: float = 0.0
    id_output: float = 0.0
    id_margin: float = 0.0
    id_temperature: float = 0.1

    def __call__(self, student: Restorer, lq: torch.Tensor, ident: torch.Tensor, dropped: torch.Tensor,
                 noise: torch.Tensor, target: torch.Tensor, x0: torch.Tensor, anchor: torch.Tensor,
                 margin_anchor: torch.Tensor, labels: np.ndarray, weights: np.ndarray) -> torch.Tensor:
        """``target``: the teacher's samples for the same (lq, ident, noise); ``anchor``: the references'
        global vectors; ``weights``: each sample's preset multiplier for the identity terms."""
        out = student.restore(lq, ident.detach(), noise, self.student_steps).float()
        loss = F.mse_loss(out, target)
        if self.gt_weight > 0:
            loss = loss + self.gt_weight * F.mse_loss(out, x0)
        if self.id_output > 0:
            loss = loss + self.id_output * output_identity(student.encoder, out, anchor, labels, self.id_temperature,
                                                           weights)
        if self.id_margin > 0:
            with torch.no_grad():
                generic = student.restore(lq, None, noise, self.student_steps).float()
            loss = loss + self.id_margin * identity_margin(student.encoder, out, generic, margin_anchor,
                                                           weights * (~dropped).cpu().numpy(), self.id_temperature)
        return loss
