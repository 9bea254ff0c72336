"""ONNX Runtime engine: the exported one-graph sampler on the CPU (or CUDA) execution provider.

CPU settings are the ones measured fastest for a ~1 GFLOP conv net at batch 1-4 (see
benchmarks/bench_engines.py): all graph optimisations (NCHWc conv layout, fusions), sequential
execution (the graph is a chain; parallel execution only adds scheduling), memory pattern
planning (shapes repeat every frame), and one intra-op thread per core. A face whose identity
keeps coming back (a call) runs on a copy of the graph specialised to that identity
(``engines.identity_sessions``), where the identity-only part was computed once.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .base import BaseEngine, EngineError
from .identity_sessions import DEFAULT_SPECIALISE, IdentitySessions, SpecialiseConfig
from .onnx_export import INPUTS, OUTPUT, info_from_onnx, read_metadata


def default_threads() -> int:
    """Cores this process may use (affinity-aware), which is what intra-op threads should match."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None, spinning: bool = False) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = True
    so.enable_cpu_mem_arena = True
    so.intra_op_num_threads = int(threads or default_threads())
    so.inter_op_num_threads = 1
    # spinning: workers spin between the operators of one run and sleep when it ends. The generator
    # alone is 2.2 ms faster so, but in a call on two cores the spinning takes the cycles that video
    # decode/encode need during the run: fewer frames restored in time (docs/performance.md); off
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.force_spinning_stop", "1" if spinning else "0")
    so.log_severity_level = 3  # warnings about unused initialisers etc. are not for users
    return so


def providers_for(device: str | None) -> list[str]:
    """CUDA EP where asked for (or 'auto' and present), CPU otherwise; CPU is always the fallback."""
    have = ort.get_available_providers()
    if device in (None, "auto"):
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in have else []) + ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in have:
            raise EngineError(f"onnxruntime {ort.__version__} here has no CUDA execution provider "
                              "(install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "cpu":
        raise EngineError(f"onnxruntime engine runs on cpu or cuda, not {device!r}")
    return ["CPUExecutionProvider"]


class OnnxRuntimeEngine(BaseEngine):
    """Runs an exported sampler (``engines.onnx_export``); everything it needs is in the file."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path | str, device: str | None = None, threads: int | None = None,
                 spinning: bool = False, specialise: SpecialiseConfig | None = DEFAULT_SPECIALISE) -> None:
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise EngineError(f"{onnx_path}: ONNX file not found")
        super().__init__(info_from_onnx(self.onnx_path))
        self.precision = read_metadata(self.onnx_path).get("precision", "fp32")
        options, providers = session_options(threads, spinning), providers_for(device)
        self.session = ort.InferenceSession(str(self.onnx_path), options, providers=providers)
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(INPUTS):
            raise EngineError(f"{onnx_path}: expected inputs {', '.join(INPUTS)}, found {', '.join(names)}")
        # a quantised/fp16 variant may take fp16 inputs; feed what the graph declares
        self._dtypes = {i.name: (np.float16 if i.type == "tensor(float16)" else np.float32)
                        for i in self.session.get_inputs()}
        self._specialised = None if specialise is None else IdentitySessions(
            onnx.load(str(self.onnx_path)),
            lambda model: ort.InferenceSession(model, options, providers=providers), specialise)
        self._lock = threading.Lock()  # a shared engine is called from several streams' threads

    def _general(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        feed = {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in zip(INPUTS, (lq, identity, noise),
                                                                                  strict=True)}
        return np.asarray(self.session.run([OUTPUT], feed)[0], dtype=np.float32)

    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        if self._specialised is None:
            return self._general(lq, identity, noise)
        with self._lock:
            sessions = self._specialised.sessions_for(identity)
        rest = [i for i, s in enumerate(sessions) if s is None]
        if len(rest) == len(sessions):
            return self._general(lq, identity, noise)
        out = np.empty(lq.shape, np.float32)
        for i, session in enumerate(sessions):
            if session is not None:
                feed = {k: np.ascontiguousarray(v[i:i + 1], dtype=self._dtypes[k])
                        for k, v in (("lq", lq), ("noise", noise))}
                out[i] = session.run([OUTPUT], feed)[0][0]
        if rest:
            out[rest] = self._general(lq[rest], identity[rest], noise[rest])
        return out

    def describe(self) -> dict:
        so = self.session.get_session_options()
        return {**super().describe(), "providers": self.session.get_providers(), "onnx": self.onnx_path.name,
                "precision": self.precision,
                "threads": so.intra_op_num_threads,
                "identity_specialised": None if self._specialised is None else len(self._specialised)}
