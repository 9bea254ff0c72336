"""Committed model weights: fp16 safetensors with the config and a model id in the metadata.

The model id is a hash of the weights, so an identity file made by another model version can
be recognised and refused. Loading uses safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from importlib.resources import files
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .errors import ModelError
from .models.config import ModelConfig
from .models.reference_weighting import ReferenceWeighting
from .models.restorer import Restorer

WEIGHTS_DIR = Path(str(files("enhancer") / "weights"))
TEACHER_STEPS = 4  # the teacher's sampler length unless its weights say otherwise (8 measured worse)
DEFAULT_STUDENT_STEPS = 1


def _save_fp16(model: torch.nn.Module, path: Path, id_prefix: str, meta: dict[str, str]) -> str:
    """Write ``model``'s weights as fp16 with ``meta`` and a model id (``id_prefix``-hash of the
    stored tensors); returns the id."""
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].numpy().tobytes())
    model_id = f"{id_prefix}-{h.hexdigest()[:12]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(path), metadata={**meta, "model_id": model_id})
    return model_id


def export_weights(model: Restorer, path: Path, kind: str, extra: dict | None = None) -> str:
    """Write fp16 weights; returns the model id (hash of the stored tensors)."""
    return _save_fp16(model, path, kind, {"config": model.cfg.to_json(), "kind": kind,
                                          "extra": json.dumps(extra or {})})


def encoder_id(model: Restorer) -> str:
    """Hash of the identity encoder and null identity (fp16): identity files record it, and
    any model sharing the encoder (teacher and its distilled student) can use them."""
    h = hashlib.sha256()
    sd = model.state_dict()
    for k in sorted(sd):
        if k.startswith("encoder.") or k == "null_identity":
            h.update(k.encode())
            h.update((sd[k].detach().float() + 0.0).to(torch.float16).cpu().numpy().tobytes())  # -0.0 -> 0.0
    return f"enc-{h.hexdigest()[:12]}"


def default_steps(kind: str, extra: dict | None) -> int:
    """Weights may record their sampler steps; else student: its distilled steps, teacher: 4."""
    if (extra or {}).get("sampler_steps"):
        return int(extra["sampler_steps"])
    if kind == "teacher":
        return TEACHER_STEPS
    return int((extra or {}).get("student_steps", DEFAULT_STUDENT_STEPS))


def read_metadata(path: Path) -> dict:
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises several types for corrupt headers
        raise ModelError(f"{path}: not a valid safetensors weight file ({e})") from None


def load_restorer(path: Path | None = None, kind: str = "student", device: str = "cpu") -> tuple[Restorer, dict]:
    """Load committed weights (default: the packaged ``kind``) as an fp32 eval-mode Restorer."""
    path = Path(path) if path else WEIGHTS_DIR / f"{kind}.safetensors"
    if not path.is_file():
        raise ModelError(f"{path}: model weights not found")
    meta = read_metadata(path)
    if "config" not in meta:
        raise ModelError(f"{path}: weight file has no model config in its metadata")
    model = Restorer(ModelConfig.from_json(meta["config"]))
    try:
        sd = load_file(str(path), device="cpu")
        model.load_state_dict({k: v.float() for k, v in sd.items()})
    except Exception as e:
        raise ModelError(f"{path}: weights do not match the model ({e})") from None
    meta["extra"] = json.loads(meta.get("extra", "{}"))
    meta["encoder_id"] = encoder_id(model)
    return model.to(device).eval().requires_grad_(False), meta


def compute_identity(model: Restorer, crops: np.ndarray) -> np.ndarray:
    """One masked reference set of (K, S, S, 3) uint8 BGR crops through the encoder -> (1 + tokens, dim)
    float32: how enrolment makes an identity, and how int8 calibration must make them too."""
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)[None]  # (1,K,3,S,S) BGR
    mask = torch.ones(1, x.shape[1], dtype=torch.bool)
    with torch.no_grad():
        ident = model.encode(x, mask)[0].float().cpu().numpy()
    if not np.isfinite(ident).all():
        raise ModelError("the encoder produced non-finite values; the weights are broken")
    return np.ascontiguousarray(ident, dtype=np.float32)


def export_weighting(model: ReferenceWeighting, path: Path, extra: dict | None = None) -> str:
    """Write the reference weighting's fp16 weights (read back by
    ``enhancer.weighting_runtime.load_weighting_runtime``); returns its id."""
    return _save_fp16(model, path, "weighting", {"config": json.dumps(asdict(model.cfg)), "kind": "reference_weighting",
                                                 "extra": json.dumps(extra or {})})
