"""PyTorch engine: the reference backend, and the fallback where nothing faster is installed.

CPU runs fp32 or bf16 autocast (bf16 uses AMX/AVX-512 where the CPU has them); CUDA runs
fp16 autocast, optionally replayed from a CUDA graph per batch size (kernel launches dominate
a ~1 GFLOP net at batch 1-4). The DDIM arithmetic stays fp32 in every mode.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from enhancer.diffusion import restore
from enhancer.models.restorer import Restorer
from enhancer.weights import default_steps, load_restorer

from .base import BaseEngine, EngineError, ModelInfo

PRECISIONS = ("fp32", "bf16", "fp16")


def model_info(model: Restorer, meta: dict, steps: int | None = None) -> ModelInfo:
    """Engine-facing facts about loaded weights; ``steps`` None -> the kind's default."""
    kind = meta.get("kind", "student")
    return ModelInfo(
        model_id=meta.get("model_id", "unknown"),
        encoder_id=meta.get("encoder_id", "unknown"),
        kind=kind,
        steps=int(steps) if steps else default_steps(kind, meta.get("extra")),
        size=model.cfg.generator.size,
        null_identity=model.null_identity.detach().float().cpu().numpy().copy(),
    )


def load_model(weights: Path | str | None = None, kind: str = "student") -> tuple[Restorer, dict]:
    """fp32 eval Restorer on CPU; ``weights`` None -> the packaged ``kind`` weights."""
    return load_restorer(Path(weights) if weights else None, kind=kind)


class Sampler(torch.nn.Module):
    """The whole deterministic sampler as one module: (lq, identity, noise) -> restored.

    The same module is what ONNX export traces, so torch and ONNX run identical arithmetic.
    """

    def __init__(self, model: Restorer, steps: int) -> None:
        super().__init__()
        if steps < 1:
            raise EngineError(f"steps must be >= 1, got {steps}")
        self.generator = model.generator
        self.residual_scale = float(model.cfg.residual_scale)
        self.steps = int(steps)

    def forward(self, lq: torch.Tensor, identity: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # enhancer.diffusion.restore holds the parameterisation (plain or residual) in one place
        return restore(lambda x, t: self.generator(x, lq, t, identity), lq, noise, self.steps, self.residual_scale)


def _resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"device {device!r} asked for, but torch {torch.__version__} sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise EngineError(f"torch engine runs on cpu or cuda, not {device!r}")
    return dev


class TorchEngine(BaseEngine):
    """Eager PyTorch under ``inference_mode``; see the module docstring for the precisions."""

    name = "torch"

    def __init__(
        self,
        model: Restorer,
        meta: dict,
        steps: int | None = None,
        device: str | None = None,
        precision: str | None = None,
        threads: int | None = None,
        cuda_graphs: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__(model_info(model, meta, steps))
        self.device = _resolve_device(device)
        precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if precision not in PRECISIONS:
            raise EngineError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if precision == "fp16" and self.device.type != "cuda":
            raise EngineError("fp16 is for CUDA; on CPU use fp32 or bf16")
        self.precision = precision
        if threads:
            torch.set_num_threads(int(threads))  # process-wide by torch's design; only set when asked
        self.sampler = Sampler(model, self.steps).to(self.device).eval().requires_grad_(False)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.sampler = self.sampler.to(memory_format=torch.channels_last)
        self.cuda_graphs = bool(cuda_graphs) and self.device.type == "cuda"
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]] = {}

    @classmethod
    def from_weights(cls, weights: Path | str | None = None, steps: int | None = None, **kw) -> TorchEngine:
        model, meta = load_model(weights)
        return cls(model, meta, steps=steps, **kw)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        # cache off: CUDA-graph capture must not keep casts from the warm-up run
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=not self.cuda_graphs)

    def _forward(self, lq: torch.Tensor, ident: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.sampler(lq, ident, noise).float()

    def _graph_for(self, b: int) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...], torch.Tensor]:
        """Capture (once per batch size) the whole sampler into a CUDA graph with static buffers."""
        if b not in self._graphs:
            s, (t, d) = self.size, self.null_identity.shape
            static = (torch.zeros(b, 3, s, s, device=self.device), torch.zeros(b, t, d, device=self.device),
                      torch.zeros(b, 3, s, s, device=self.device))
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up allocations and cuDNN autotuning outside the capture
                    self._forward(*static)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = self._forward(*static)
            self._graphs[b] = (graph, static, out)
        return self._graphs[b]

    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            if self.cuda_graphs:
                graph, static, out = self._graph_for(lq.shape[0])
                for dst, src in zip(static, (lq, identity, noise), strict=True):
                    dst.copy_(torch.from_numpy(np.ascontiguousarray(src, dtype=np.float32)))
                graph.replay()
                return out.cpu().numpy()
            x = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)
                 for a in (lq, identity, noise)]
            if self.memory_format is torch.channels_last:
                x[0] = x[0].contiguous(memory_format=torch.channels_last)
                x[2] = x[2].contiguous(memory_format=torch.channels_last)
            return self._forward(*x).cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "device": str(self.device), "precision": self.precision,
                "threads": torch.get_num_threads(), "cuda_graphs": self.cuda_graphs}
