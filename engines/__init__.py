"""Inference backends for the restorer's sampler: TensorRT, ONNX Runtime and PyTorch, plus the
model-free bicubic baseline, all built by one registry behind ``create_engine``.

``create_engine('auto')`` picks the fastest backend this machine can run: TensorRT on a CUDA
GPU when installed; else ONNX Runtime (its CPU provider beats eager PyTorch on CPUs, and its
CUDA provider is used when present); else PyTorch, which on a GPU without TensorRT or
onnxruntime-gpu means torch CUDA fp16; 'auto' never picks 'bicubic', which runs no model. Every
engine implements ``enhancer.pipeline.Engine``. The engines make no faces: an int8 build
calibrates on the real crops its caller passes (``calibration``, see ``base.Calibration``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .base import BaseEngine, Calibration, EngineError, ModelInfo

if TYPE_CHECKING:
    from .bicubic import BicubicEngine

ENGINES = ("tensorrt", "onnxruntime", "torch")  # model backends, best first: what 'auto' picks from
BASELINES = ("bicubic",)  # no model: always available, only when asked for by name

__all__ = ["BASELINES", "ENGINES", "BaseEngine", "Calibration", "EngineError", "ModelInfo", "available_engines",
           "create_engine", "engine_status"]


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


def _torch(weights: Path | str | None, steps: int | None, device: str | None, calibration: Calibration | None,
           **options) -> BaseEngine:
    if weights is not None and str(weights).endswith(".onnx"):
        raise EngineError("the torch engine needs .safetensors weights, not an .onnx export")
    from .torch_engine import TorchEngine

    return TorchEngine.from_weights(weights, steps=steps, device=device, **options)


def _onnx(weights: Path | str | None, steps: int | None, exporter: str) -> Path:
    """The exported sampler these weights name: an .onnx as given, else the cached export."""
    from .onnx_export import cached_onnx

    return Path(weights) if str(weights).endswith(".onnx") else cached_onnx(weights, steps, exporter=exporter)


def _onnxruntime(weights: Path | str | None, steps: int | None, device: str | None, calibration: Calibration | None,
                 **options) -> BaseEngine:
    from .onnxruntime_engine import OnnxRuntimeEngine

    precision = options.pop("precision", "fp32")
    if precision not in ("fp32", "int8"):
        raise EngineError(f"onnxruntime precision must be fp32 or int8, not {precision!r}")
    onnx_path = _onnx(weights, steps, "legacy")  # the legacy graph runs faster in ORT
    if precision == "int8":
        from .quantize import cached_int8

        onnx_path = cached_int8(onnx_path, None if str(weights).endswith(".onnx") else weights, calibration)
    return OnnxRuntimeEngine(onnx_path, device=device, **options)


def _tensorrt(weights: Path | str | None, steps: int | None, device: str | None, calibration: Calibration | None,
              **options) -> BaseEngine:
    from .tensorrt_engine import TensorRTEngine

    if options.pop("precision", "fp16") != "fp16":
        raise EngineError("the tensorrt engine builds FP16 plans only")
    return TensorRTEngine(_onnx(weights, steps, "dynamo"), **options)  # dynamo: native GroupNormalization


def _bicubic(weights: Path | str | None, steps: int | None, device: str | None, calibration: Calibration | None,
             **options) -> BicubicEngine:
    if weights is not None or steps is not None:
        raise EngineError("the bicubic engine runs no model: it takes no weights or steps")
    from .bicubic import BicubicEngine

    return BicubicEngine(**options)


_BUILDERS: dict[str, Callable[..., BaseEngine | BicubicEngine]] = {
    "tensorrt": _tensorrt, "onnxruntime": _onnxruntime, "torch": _torch, "bicubic": _bicubic}


def create_engine(name: str = "auto", weights: Path | str | None = None, steps: int | None = None,
                  device: str | None = None, calibration: Calibration | None = None,
                  **options) -> BaseEngine | BicubicEngine:
    """Build an engine by name: 'auto', a model backend (``ENGINES``) or the 'bicubic' baseline.

    ``weights``: a .safetensors file (default: the packaged student) or, for onnxruntime and
    tensorrt, an exported .onnx sampler. ``steps``: DDIM steps (default: the student's trained
    steps, else ``enhancer.weights.TEACHER_STEPS`` for a teacher, unless the weights record
    ``sampler_steps``). ``calibration``: real faces for a quantised build (onnxruntime int8), needed
    only when no int8 copy of this sampler is cached yet; the other builds ignore it. ``options`` go
    to the backend (precision, threads, cuda_graphs, size, ...).
    """
    if name not in ("auto", *_BUILDERS):
        raise EngineError(f"unknown engine {name!r}: choose auto, {', '.join(_BUILDERS)}")
    if name == "auto":
        name = _auto(device)
    why = engine_status().get(name)  # baselines are not listed: they always run
    if why:
        raise EngineError(f"{name} engine unavailable: {why}")
    if weights is not None and str(weights).endswith(".onnx") and steps is not None:
        raise EngineError("steps are fixed inside an exported .onnx sampler; export another to change them")
    return _BUILDERS[name](weights, steps, device, calibration, **options)
