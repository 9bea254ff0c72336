"""Resumable checkpoints in safetensors (no pickle): model, EMA, optimizer, RNG, step.

Tensors go into the safetensors body under prefixed keys; everything else (optimizer
param groups, numpy RNG state, counters, config) is JSON in the metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors = {}
    for pid, st in sd["state"].items():
        for name, val in st.items():
            tensors[f"opt.{pid}.{name}"] = val if torch.is_tensor(val) else torch.tensor(val)
    return tensors, {"param_groups": sd["param_groups"]}


def save_checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module | None, opt: torch.optim.Optimizer,
                    meta: dict) -> None:
    """Atomic write: a crash mid-save never corrupts the last good checkpoint."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if ema is not None:  # a run without an EMA (the reference weighting) has none to keep
        tensors |= {f"ema.{k}": v.detach().contiguous().cpu() for k, v in ema.state_dict().items()}
    ot, ometa = _flat_optimizer(opt)
    tensors |= {k: v.contiguous().cpu() for k, v in ot.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    metadata = {"meta": json.dumps(meta), "optimizer": json.dumps(ometa)}
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, ema: torch.nn.Module | None, opt: torch.optim.Optimizer,
                    device: torch.device) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        md = f.metadata()
    t = load_file(str(path), device="cpu")
    model.load_state_dict({k[6:]: v for k, v in t.items() if k.startswith("model.")})
    if ema is not None:
        ema.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("ema.")})
    ometa = json.loads(md["optimizer"])
    state: dict = {}
    for k, v in t.items():
        if k.startswith("opt."):
            _, pid, name = k.split(".", 2)
            state.setdefault(int(pid), {})[name] = v.to(device) if name != "step" else v
    opt.load_state_dict({"state": state, "param_groups": ometa["param_groups"]})
    torch.set_rng_state(t["rng.torch"])
    if "rng.cuda" in t and torch.cuda.is_available():
        torch.cuda.set_rng_state(t["rng.cuda"])
    return json.loads(md["meta"])
