"""Weight interpolation between a PSNR-trained and a GAN-trained student (ESRGAN's network
interpolation): one dial from faithful-but-smooth to sharp, without retraining.

The sharp student may have layers the smooth one lacks (reference attention grown in): there the
smooth model is taken to be the grown copy, i.e. zero output projections, so those layers are
scaled by alpha like everything else. Other new weights (the reference encoder, attention
queries) act only through those projections and are taken from the sharp model as they are.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..errors import ModelError
from ..models.restorer import Restorer
from ..weights import export_weights, load_restorer


def blend_state(smooth: dict[str, torch.Tensor], sharp: dict[str, torch.Tensor], alpha: float,
                zero_start: set[str]) -> dict[str, torch.Tensor]:
    """(1 - alpha) * smooth + alpha * sharp per tensor; tensors only in ``sharp`` are scaled by alpha
    when named in ``zero_start`` (they start at zero when grown) and kept otherwise."""
    out = {}
    for k, v in sharp.items():
        if k == "null_identity" and k in smooth and smooth[k].shape[0] < v.shape[0]:
            smooth = dict(smooth)  # the generic identity grows by zero rows for the references
            smooth[k] = torch.cat([smooth[k], smooth[k].new_zeros(v.shape[0] - smooth[k].shape[0], v.shape[1])])
        if k in smooth:
            if smooth[k].shape != v.shape:
                raise ModelError(f"cannot blend {k}: shapes {tuple(smooth[k].shape)} and {tuple(v.shape)}")
            out[k] = torch.lerp(smooth[k].float(), v.float(), alpha) if v.is_floating_point() else v
        elif k in zero_start:
            out[k] = v.float() * alpha
        else:
            out[k] = v
    return out


def zero_initialised(model: Restorer) -> set[str]:
    """Names of the grown layers whose weights start at zero (reference attention's output)."""
    return {k for k in model.state_dict() if ".ref_up." in k and ".out." in k}


def blend_students(smooth_path: Path, sharp_path: Path, alpha: float, out: Path) -> dict:
    smooth, smeta = load_restorer(smooth_path)
    sharp, hmeta = load_restorer(sharp_path)
    mixed = copy.deepcopy(sharp)
    mixed.load_state_dict(blend_state(smooth.state_dict(), sharp.state_dict(), alpha, zero_initialised(sharp)))
    extra = dict(hmeta["extra"])
    extra |= {"blend": {"alpha": alpha, "smooth_id": smeta["model_id"], "sharp_id": hmeta["model_id"]}}
    model_id = export_weights(mixed, out, "student", extra)
    return {"model_id": model_id, "alpha": alpha, "smooth_id": smeta["model_id"], "sharp_id": hmeta["model_id"],
            "out": str(out)}
