"""The learned reference weighting at call time: its two heads in ONNX Runtime, the rest in NumPy.

Why not the torch module it was trained as: torch's per-call overhead and its thread pool, which
competes with the generator's for the same two cores, cost more than the arithmetic (2.0 ms median
and 70 ms at p95 under load), and the frame pipeline keeps starting without torch. Why ONNX Runtime
for the heads: they are 23 MFLOP of 16-wide 3x3 convolutions at 32x32, which NumPy can only do as
nine small matrix products per layer (2.1 ms here); ORT's convolution kernels on one thread do it in
0.7 ms without a thread pool of their own. The graph is built from the same fp16 safetensors file
when it is loaded, so there is one weight file and no export step. ``tests/test_reference_weighting.py``
holds this to the trained torch network.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, checker, helper, numpy_helper
from safetensors import safe_open

from .errors import ModelError

PACKAGED = Path(str(files("enhancer") / "weights" / "reference_weighting.safetensors"))


@dataclass(frozen=True)
class WeightingConfig:
    width: int = 16
    scale: int = 4  # the heads run at (size / scale) squared
    tau: float = 1000.0  # temperature of the hand-made mismatch term, as TransferConfig.tau


DILATIONS = (1, 2, 4, 1)  # the heads' convolutions (enhancer.models.reference_weighting._head)
HEADS = (("per_ref", "corr"), ("glob", "g"))  # (input, output) of each head, as the torch module names them
OPSET = 17


def _head_nodes(prefix: str, out: str, state: dict[str, np.ndarray],
                inits: list[TensorProto]) -> tuple[list[helper.NodeProto], int, int]:
    """One head: 3x3 convolutions with 'same' zero padding, an exact GELU (x * (1 + erf(x / sqrt 2)) / 2)
    between them, read from the state dict's ``{prefix}.{i}.weight/bias``; with its input and
    output channel counts."""
    idx = sorted({int(k.split(".")[1]) for k in state if k.startswith(prefix + ".")})
    if len(idx) != len(DILATIONS):
        raise ModelError(f"reference weighting: {prefix} has {len(idx)} layers, not {len(DILATIONS)}")

    def const(name: str, value: np.ndarray | float) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), f"{prefix}.{name}"))
        return f"{prefix}.{name}"

    nodes, x = [], prefix
    for n, (i, dil) in enumerate(zip(idx, DILATIONS, strict=True)):
        y = out if n == len(idx) - 1 else f"{prefix}.{i}.out"
        nodes.append(helper.make_node("Conv", [x, const(f"{i}.weight", state[f"{prefix}.{i}.weight"]),
                                               const(f"{i}.bias", state[f"{prefix}.{i}.bias"])], [y],
                                      kernel_shape=[3, 3], dilations=[dil, dil], pads=[dil] * 4))
        if y != out:
            nodes += [helper.make_node("Div", [y, const(f"{i}.sqrt2", np.sqrt(2.0))], [f"{y}.s"]),
                      helper.make_node("Erf", [f"{y}.s"], [f"{y}.e"]),
                      helper.make_node("Add", [f"{y}.e", const(f"{i}.one", 1.0)], [f"{y}.a"]),
                      helper.make_node("Mul", [y, f"{y}.a"], [f"{y}.m"]),
                      helper.make_node("Mul", [f"{y}.m", const(f"{i}.half", 0.5)], [f"{y}.gelu"])]
            y = f"{y}.gelu"
        x = y
    return nodes, state[f"{prefix}.{idx[0]}.weight"].shape[1], state[f"{prefix}.{idx[-1]}.weight"].shape[0]


def heads_model(state: dict[str, np.ndarray]) -> bytes:
    """The two heads as one ONNX model: per_ref (K, 7, h, w) -> corr (K, 1, h, w) and
    glob (1, 5, h, w) -> g (1, 2, h, w)."""
    inits: list[TensorProto] = []
    nodes, inputs, outputs = [], [], []
    for (prefix, out), batch in zip(HEADS, ("K", 1), strict=True):
        head, cin, cout = _head_nodes(prefix, out, state, inits)
        nodes += head
        inputs.append(helper.make_tensor_value_info(prefix, TensorProto.FLOAT, [batch, cin, "h", "w"]))
        outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, [batch, cout, "h", "w"]))
    graph = helper.make_graph(nodes, "reference_weighting", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    checker.check_model(model)
    return model.SerializeToString()


def _session(model: bytes) -> ort.InferenceSession:
    """One thread and no spinning: the heads run between the generator's calls, on the same cores."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class WeightingRuntime:
    cfg: WeightingConfig
    session: ort.InferenceSession
    model_id: str = ""

    @classmethod
    def from_state(cls, cfg: WeightingConfig, state: dict[str, np.ndarray], model_id: str = "") -> WeightingRuntime:
        """From the torch module's state dict (names ``per_ref.0.weight`` ...)."""
        state = {k: np.asarray(v, np.float32) for k, v in state.items()}
        return cls(cfg, _session(heads_model(state)), model_id)

    def detail(self, d: np.ndarray, detail: np.ndarray, per_ref: np.ndarray, glob: np.ndarray) -> np.ndarray:
        """d (K, H, W), detail (K, H, W, 3), per_ref (K, 7, h, w), glob (5, h, w) -> the detail to
        add (H, W, 3), before the transfer's gain: softmax over (null, references) of the hand-made
        logits -d / tau plus the upsampled corrections, times exp(log-gain)."""
        k, hgt, wid = d.shape
        corr, g = self.session.run(None, {"per_ref": per_ref, "glob": glob[None]})
        up = lambda m: cv2.resize(np.ascontiguousarray(m.transpose(1, 2, 0)), (wid, hgt),  # noqa: E731
                                  interpolation=cv2.INTER_LINEAR).reshape(hgt, wid, -1).transpose(2, 0, 1)
        corr, g = up(corr[:, 0]), up(g[0])
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
