"""The engine interface: one batched float call (``run``) under the pipeline's uint8 ``restore``.

Every backend (torch, ONNX Runtime, TensorRT) only implements ``run`` on float tensors; the
uint8 <-> [-1, 1] conversion, the shape checks and the generic mode (``identity=None`` -> the
model's learned null identity) live here once, so all backends behave identically.
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from enhancer.errors import LikenessError


class EngineError(LikenessError):
    """An engine that is unknown, unavailable here, or cannot be built."""


class Calibration(Protocol):
    """Real faces to quantise a sampler on, given by the caller (the engines make no faces):
    ``n`` degraded (F, S, S, 3) crops of distinct people and each one's clean references of other
    photos (F, K, S, S, 3), uint8 BGR at crop side ``size``. ``enhancer.calibration.personal_crops`` is one."""

    def __call__(self, n: int, *, size: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class ModelInfo:
    """What an engine must know about the weights it runs, besides the weights themselves."""

    model_id: str
    encoder_id: str
    kind: str  # "student" or "teacher"
    steps: int  # DDIM steps this engine runs (fixed per instance)
    size: int  # crop side
    null_identity: np.ndarray  # (1 + T, D) float32: the learned generic-mode identity


def cache_dir(sub: str) -> Path:
    """``$LIKENESS_HOME/<sub>`` if set, else ``~/.cache/likeness/<sub>``; created on demand."""
    home = os.environ.get("LIKENESS_HOME")
    root = Path(home) if home else Path.home() / ".cache" / "likeness"
    d = root / sub
    d.mkdir(parents=True, exist_ok=True)
    return d


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def crops_to_float(crops: np.ndarray) -> np.ndarray:
    """(F, S, S, 3) uint8 BGR -> (F, 3, S, S) float32 in [-1, 1] (the training convention)."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1 / 127.5) - 1.0


def float_to_crops(x: np.ndarray) -> np.ndarray:
    """(F, 3, S, S) float in [-1, 1] -> (F, S, S, 3) uint8, rounded like the evaluation code."""
    y = np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5)
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1)).astype(np.uint8)


class BaseEngine(ABC):
    """Implements the pipeline's ``Engine.restore`` on top of a batched float ``run``."""

    name: str = "base"

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.size = info.size
        self.steps = info.steps
        self.null_identity = np.ascontiguousarray(info.null_identity, dtype=np.float32)

    @property
    def identity_shape(self) -> tuple[int, int]:
        return tuple(self.null_identity.shape)  # type: ignore[return-value]

    @abstractmethod
    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """lq, noise (F, 3, S, S) float32 in [-1, 1] / N(0, 1); identity (F, 1+T, D) -> (F, 3, S, S) in [-1, 1]."""

    def null_identities(self, n: int) -> np.ndarray:
        """The generic-mode identity repeated for ``n`` faces."""
        return np.repeat(self.null_identity[None], n, axis=0)

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        """Pipeline entry point: uint8 crops in, uint8 crops out, one batched call for all faces."""
        f, s = crops.shape[0], self.size
        if crops.dtype != np.uint8 or crops.shape[1:] != (s, s, 3):
            raise EngineError(f"{self.name}: crops must be uint8 (F, {s}, {s}, 3), got {crops.dtype} {crops.shape}")
        if noise.shape != (f, 3, s, s):
            raise EngineError(f"{self.name}: noise must be ({f}, 3, {s}, {s}), got {noise.shape}")
        if f == 0:
            return crops.copy()
        if identity is None:
            ident = self.null_identities(f)
        else:
            if identity.shape != (f, *self.null_identity.shape):
                want = (f, *self.null_identity.shape)
                raise EngineError(f"{self.name}: identity must have shape {want}, got {identity.shape}")
            ident = np.ascontiguousarray(identity, dtype=np.float32)
        out = self.run(crops_to_float(crops), ident, np.ascontiguousarray(noise, dtype=np.float32))
        if not np.isfinite(out).all():  # never paste black/white garbage into a call
            raise EngineError(f"{self.name}: non-finite output (NaN/inf); frame left un-enhanced")
        return float_to_crops(out)

    def describe(self) -> dict:
        """Short, JSON-able description for logs and benchmark files."""
        return {"engine": self.name, "model_id": self.info.model_id, "steps": self.steps, "size": self.size}
