"""Inference backends for the restorer's sampler: TensorRT, ONNX Runtime and PyTorch.

``create_engine('auto')`` picks the fastest backend this machine can run: TensorRT on a CUDA
GPU when installed; else ONNX Runtime (its CPU provider beats eager PyTorch on CPUs, and its
CUDA provider is used when present); else PyTorch, which on a GPU without TensorRT or
onnxruntime-gpu means torch CUDA fp16. Every engine implements ``enhancer.pipeline.Engine``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .base import BaseEngine, EngineError, ModelInfo

ENGINES = ("tensorrt", "onnxruntime", "torch")

__all__ = ["ENGINES", "BaseEngine", "EngineError", "ModelInfo", "available_engines", "create_engine",
           "engine_status"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_status() -> dict[str, str | None]:
    """Engine name -> None when it can run here, else a one-line reason why not."""
    from .tensorrt_engine import unavailable_reason

    status: dict[str, str | None] = {"tensorrt": unavailable_reason()}
    status["onnxruntime"] = (None if importlib.util.find_spec("onnxruntime") is not None
                             else "the onnxruntime package is not installed")
    status["torch"] = None
    return status


def available_engines() -> list[str]:
    """Engines that can run here, best first."""
    return [n for n, why in engine_status().items() if why is None]


def _auto(device: str | None) -> str:
    have = available_engines()
    cpu_best = "onnxruntime" if "onnxruntime" in have else "torch"
    if device == "cpu":
        return cpu_best
    if "tensorrt" in have:
        return "tensorrt"
    if _cuda():
        import onnxruntime as ort

        if "onnxruntime" in have and "CUDAExecutionProvider" in ort.get_available_providers():
            return "onnxruntime"
        return "torch"  # torch CUDA fp16 beats any CPU backend
    return cpu_best


def create_engine(name: str = "auto", weights: Path | str | None = None, steps: int | None = None,
                  device: str | None = None, **options) -> BaseEngine:
    """Build an engine.

    ``weights``: a .safetensors file (default: the packaged student) or, for onnxruntime and
    tensorrt, an exported .onnx sampler. ``steps``: DDIM steps (default: the student's trained
    steps, else ``enhancer.weights.TEACHER_STEPS`` for a teacher, unless the weights record
    ``sampler_steps``). ``options`` go to the backend (precision, threads, cuda_graphs, ...).
    """
    if name not in ("auto", *ENGINES):
        raise EngineError(f"unknown engine {name!r}: choose auto, {', '.join(ENGINES)}")
    if name == "auto":
        name = _auto(device)
    why = engine_status()[name]
    if why:
        raise EngineError(f"{name} engine unavailable: {why}")
    is_onnx = weights is not None and str(weights).endswith(".onnx")
    if is_onnx and steps is not None:
        raise EngineError("steps are fixed inside an exported .onnx sampler; export another to change them")
    if name == "torch":
        if is_onnx:
            raise EngineError("the torch engine needs .safetensors weights, not an .onnx export")
        from .torch_engine import TorchEngine

        return TorchEngine.from_weights(weights, steps=steps, device=device, **options)
    from .onnx_export import cached_onnx

    # TensorRT gets the dynamo graph (native GroupNormalization), ORT the faster legacy one
    onnx_path = Path(weights) if is_onnx else cached_onnx(weights, steps,
                                                         exporter="dynamo" if name == "tensorrt" else "legacy")
    if name == "onnxruntime":
        from .onnxruntime_engine import OnnxRuntimeEngine

        precision = options.pop("precision", "fp32")
        if precision == "int8":
            from .quantize import cached_int8

            onnx_path = cached_int8(onnx_path, None if is_onnx else weights)
        elif precision != "fp32":
            raise EngineError(f"onnxruntime precision must be fp32 or int8, not {precision!r}")
        return OnnxRuntimeEngine(onnx_path, device=device, **options)
    from .tensorrt_engine import TensorRTEngine

    if options.pop("precision", "fp16") != "fp16":
        raise EngineError("the tensorrt engine builds FP16 plans only")
    return TensorRTEngine(onnx_path, **options)
