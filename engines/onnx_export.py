"""Export the whole sampler (every DDIM step unrolled) as ONE ONNX graph.

One graph, not a per-step model driven from Python, so ONNX Runtime and TensorRT see (and
fuse across) the full computation and a call is one launch. Inputs ``lq``, ``identity``,
``noise``; output ``restored``; the batch dimension is dynamic.

Two exporters. The TorchScript ("legacy") one is the default for ONNX Runtime: it exports in
~0.5 s per step where the dynamo one takes ~10 s (so a first ``likeness bench`` is not spent
exporting), and ORT runs its graph ~10 % faster on this CPU (it fuses the reshape +
InstanceNormalization chain that GroupNorm becomes). TensorRT gets the dynamo graph: at opset
21 ``GroupNormalization`` has per-channel scale/bias like ``torch.nn.GroupNorm``, so it is
emitted natively and TensorRT 10 parses it as one layer.

The file is self-describing: ``metadata_props`` hold the model and encoder ids, the step
count and the null identity, so an engine can run it without the weight file.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import torch

from enhancer.errors import ModelError
from enhancer.weights import WEIGHTS_DIR, default_steps
from enhancer.weights import read_metadata as read_weight_metadata

from .base import EngineError, ModelInfo, cache_dir, file_sha256
from .torch_engine import Sampler, load_model, model_info

OPSET = 21
EXPORT_VERSION = "2"  # bump when the exported graph changes: part of the cache key
# sources whose change changes the exported graph: their hash is part of the cache key too, so a
# new sampler parameterisation or generator edit never reuses a stale export
GRAPH_SOURCES = ("enhancer/diffusion.py", "enhancer/models/generator.py", "enhancer/models/blocks.py",
                 "engines/torch_engine.py", "engines/onnx_export.py")
EXPORTERS = ("legacy", "dynamo")
DEFAULT_EXPORTER = "legacy"  # fast to export, fastest in ORT (see the module docstring)
INPUTS = ("lq", "identity", "noise")
OUTPUT = "restored"
MAX_BATCH = 64
log = logging.getLogger(__name__)


def _example(info: ModelInfo, batch: int = 2) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    s, (t, d) = info.size, info.null_identity.shape
    return (torch.rand(batch, 3, s, s, generator=g) * 2 - 1, torch.randn(batch, t, d, generator=g),
            torch.randn(batch, 3, s, s, generator=g))


@contextlib.contextmanager
def quiet():
    """The exporters print progress and warnings meant for their developers, not our users."""
    reg = logging.getLogger("torch.onnx._internal.exporter._registration")  # "torchvision is not installed"
    level = reg.level
    reg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            warnings.simplefilter("ignore")
            yield
    finally:
        reg.setLevel(level)


def _export_dynamo(sampler: Sampler, args: tuple[torch.Tensor, ...], opset: int) -> onnx.ModelProto:
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with quiet():
        prog = torch.onnx.export(sampler, args, None, dynamo=True, opset_version=opset, input_names=list(INPUTS),
                                 output_names=[OUTPUT], dynamic_shapes={k: {0: batch} for k in INPUTS},
                                 optimize=True, verbose=False, external_data=False)
    return prog.model_proto


def _export_legacy(sampler: Sampler, args: tuple[torch.Tensor, ...], opset: int) -> onnx.ModelProto:
    buf = io.BytesIO()
    with quiet():
        torch.onnx.export(sampler, args, buf, dynamo=False, opset_version=opset, input_names=list(INPUTS),
                          output_names=[OUTPUT], dynamic_axes={k: {0: "batch"} for k in (*INPUTS, OUTPUT)})
    return onnx.load_from_string(buf.getvalue())


def code_fingerprint() -> str:
    """Short hash of the sources that define the exported graph, plus the torch version."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(torch.__version__.encode())
    for rel in GRAPH_SOURCES:
        p = root / rel
        h.update(p.read_bytes() if p.is_file() else rel.encode())
    return h.hexdigest()[:8]


def encode_array(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def decode_array(s: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<f4").reshape(shape).astype(np.float32)


def export_sampler(model: torch.nn.Module, meta: dict, out: Path | str, steps: int | None = None,
                   opset: int = OPSET, exporter: str = DEFAULT_EXPORTER) -> Path:
    """Write the ONNX sampler for ``model`` to ``out`` (checked with onnx.checker); returns ``out``."""
    info = model_info(model, meta, steps)
    sampler = Sampler(model, info.steps).eval()
    args = _example(info)
    if exporter not in EXPORTERS:
        raise EngineError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    try:
        with torch.inference_mode(False), torch.no_grad():
            proto = (_export_dynamo if exporter == "dynamo" else _export_legacy)(sampler, args, opset)
    except Exception as e:  # the exporters raise many types; the first line says what broke
        raise EngineError(f"ONNX export ({exporter}, opset {opset}) failed: {str(e).splitlines()[0]}") from e
    props = {
        "model_id": info.model_id, "encoder_id": info.encoder_id, "kind": info.kind, "steps": str(info.steps),
        "size": str(info.size), "identity_shape": ",".join(map(str, info.null_identity.shape)),
        "null_identity": encode_array(info.null_identity), "exporter": exporter, "opset": str(opset),
        "torch": torch.__version__, "likeness_export": EXPORT_VERSION, "code": code_fingerprint(),
    }
    onnx.helper.set_model_props(proto, props)
    proto.producer_name = "likeness"
    onnx.checker.check_model(proto, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    onnx.save_model(proto, str(tmp))
    tmp.replace(out)  # atomic: a concurrent reader never sees half a file
    return out


def read_metadata(path: Path | str) -> dict[str, str]:
    """``metadata_props`` of an ONNX file (without loading the weights)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise EngineError(f"{path}: not a readable ONNX file ({e})") from None
    return {p.key: p.value for p in proto.metadata_props}


def info_from_onnx(path: Path | str) -> ModelInfo:
    """The ModelInfo an exported sampler carries, so engines need no weight file."""
    m = read_metadata(path)
    missing = [k for k in ("model_id", "steps", "size", "null_identity", "identity_shape") if k not in m]
    if missing:
        raise EngineError(f"{path}: not a likeness sampler export (metadata lacks {', '.join(missing)})")
    shape = tuple(int(v) for v in m["identity_shape"].split(","))
    return ModelInfo(model_id=m["model_id"], encoder_id=m.get("encoder_id", "unknown"), kind=m.get("kind", "student"),
                     steps=int(m["steps"]), size=int(m["size"]), null_identity=decode_array(m["null_identity"], shape))


def op_summary(path: Path | str) -> dict[str, int]:
    """Op type -> count, most frequent first."""
    proto = onnx.load(str(path), load_external_data=False)
    return dict(Counter(n.op_type for n in proto.graph.node).most_common())


def cached_onnx(weights: Path | str | None = None, steps: int | None = None, opset: int = OPSET,
                exporter: str = DEFAULT_EXPORTER) -> Path:
    """The ONNX sampler for these weights and steps, exported on first use and reused afterwards.

    Keyed by the weight file's hash, the steps, the opset, the exporter and the export version, so
    no ONNX file has to be committed and new weights never pick up a stale graph.
    """
    if exporter not in EXPORTERS:
        raise EngineError(f"exporter must be one of {', '.join(EXPORTERS)}, not {exporter!r}")
    wpath = Path(weights) if weights else WEIGHTS_DIR / "student.safetensors"
    if not wpath.is_file():
        raise ModelError(f"{wpath}: model weights not found")
    meta = read_weight_metadata(wpath)
    kind = meta.get("kind", "student")
    n = int(steps) if steps else default_steps(kind, json.loads(meta.get("extra", "{}")))
    key = (f"{meta.get('model_id', kind)}-{file_sha256(wpath)[:12]}-s{n}-o{opset}-{exporter}"
           f"-v{EXPORT_VERSION}-{code_fingerprint()}")
    path = cache_dir("engines") / f"{key}.onnx"
    if not path.is_file():
        log.info("exporting %s (%d steps, %s) to %s; done once per weights and steps", wpath, n, exporter, path)
        model, meta = load_model(wpath)
        export_sampler(model, meta, path, steps=n, opset=opset, exporter=exporter)
    return path
