"""TensorRT engine: an FP16 plan built from the exported ONNX sampler, cached on disk.

Thin by design: TensorRT 10's ONNX parser and builder do the work; this module adds the
optimisation profile (1 to ``max_batch`` faces), a cache keyed by what makes a plan valid
(ONNX bytes, TensorRT version, GPU), and a run call that passes torch CUDA buffers' addresses
to ``execute_async_v3`` (so no pycuda is needed).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from .base import BaseEngine, EngineError, cache_dir
from .onnx_export import INPUTS, OUTPUT, info_from_onnx

log = logging.getLogger(__name__)


def unavailable_reason() -> str | None:
    """None when TensorRT can run here, else one line saying why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (pip install 'likeness[tensorrt]' on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__} (TensorRT needs one)"
    return None


def _trt():
    reason = unavailable_reason()
    if reason:
        raise EngineError(f"tensorrt engine unavailable: {reason}")
    import tensorrt as trt

    return trt


def plan_key(onnx_bytes: bytes, trt_version: str, gpu_name: str, opt_batch: int, max_batch: int) -> str:
    """A plan is only valid for the same graph, TensorRT build and GPU model (and profile)."""
    h = hashlib.sha256(onnx_bytes)
    h.update(f"|trt={trt_version}|gpu={gpu_name}|opt={opt_batch}|max={max_batch}|fp16".encode())
    return h.hexdigest()[:24]


def _norms_in_fp32(trt, network) -> None:
    """GroupNorm statistics over 32x32+ pixels lose precision in FP16; TensorRT lets them compute in FP32."""
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.__class__ = trt.INormalizationLayer  # the Python binding's way to reach the subclass API
            layer.compute_precision = trt.float32


def build_plan(onnx_path: Path | str, opt_batch: int = 1, max_batch: int = 4, workspace_gb: float = 2.0,
               cache: Path | None = None) -> Path:
    """Build (or reuse) the serialized FP16 engine for ``onnx_path``; returns the plan file."""
    trt = _trt()
    import torch

    if not 1 <= opt_batch <= max_batch:
        raise EngineError(f"need 1 <= opt_batch <= max_batch, got {opt_batch} and {max_batch}")
    onnx_bytes = Path(onnx_path).read_bytes()
    gpu = torch.cuda.get_device_name()
    key = plan_key(onnx_bytes, trt.__version__, gpu, opt_batch, max_batch)
    plan = (cache or cache_dir("engines")) / f"trt-{key}.plan"
    if plan.is_file():
        return plan
    info = info_from_onnx(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {onnx_path}: {errs}")
    _norms_in_fp32(trt, network)
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    s, (t, d) = info.size, info.null_identity.shape
    per_face = {"lq": (3, s, s), "identity": (t, d), "noise": (3, s, s)}
    for name in INPUTS:
        profile.set_shape(name, (1, *per_face[name]), (opt_batch, *per_face[name]), (max_batch, *per_face[name]))
    config.add_optimization_profile(profile)
    log.info("building TensorRT FP16 engine for %s on %s (takes a minute, once)", onnx_path, gpu)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    tmp = plan.with_name(plan.name + f".tmp{os.getpid()}")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(plan)
    return plan


class TensorRTEngine(BaseEngine):
    """Runs a cached FP16 plan with torch CUDA tensors as I/O buffers."""

    name = "tensorrt"

    def __init__(self, onnx_path: Path | str, opt_batch: int = 1, max_batch: int = 4) -> None:
        trt = _trt()
        import torch

        super().__init__(info_from_onnx(onnx_path))
        self.max_batch = max_batch
        plan = build_plan(onnx_path, opt_batch, max_batch)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise EngineError(f"{plan}: TensorRT could not load the cached engine (delete it to rebuild)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.device = torch.device("cuda")
        self._torch = torch

    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        torch = self._torch
        b = lq.shape[0]
        if b > self.max_batch:  # the profile's limit: split rather than fail
            return np.concatenate([self.run(lq[i:i + self.max_batch], identity[i:i + self.max_batch],
                                            noise[i:i + self.max_batch]) for i in range(0, b, self.max_batch)])
        with torch.cuda.stream(self.stream):
            bufs = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(self.device, non_blocking=True)
                    for k, v in zip(INPUTS, (lq, identity, noise), strict=True)}
            out = torch.empty_like(bufs["noise"])
            for k, t in bufs.items():
                self.context.set_input_shape(k, tuple(t.shape))
                self.context.set_tensor_address(k, t.data_ptr())
            self.context.set_tensor_address(OUTPUT, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError("TensorRT execution failed")
            result = out.cpu()  # synchronises the stream
        return result.numpy()

    def describe(self) -> dict:
        return {**super().describe(), "gpu": self._torch.cuda.get_device_name(), "max_batch": self.max_batch}
