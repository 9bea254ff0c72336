"""ONNX Runtime sessions specialised to one identity: the identity-only part of the graph runs once.

In a call the identity of a face is fixed for minutes, yet the exported sampler recomputes
everything that depends only on it every frame: AdaGN scales and shifts, the resized and projected
spatial identity map, the cross-attention keys and values of the identity tokens, and the shape
arithmetic of a dynamic batch. A batch-1 copy of the graph with the identity stored as a constant
lets ORT's constant folding compute all of that once, when the session is built (~0.1 s), instead
of on every frame; the outputs are the general graph's up to float rounding.

Building costs more than a frame, so an identity is specialised only once it is seen repeatedly
(a video stream), never for faces that each come with their own identity (an evaluation).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

IDENTITY = "identity"


@dataclass(frozen=True)
class SpecialiseConfig:
    """``after``: calls with one identity before its session is built; ``capacity``: sessions kept
    (least recently used dropped), each its own copy of the weights, prepacked, and the folded
    constants (the process grew by ~50 MB per fp32 session, ~40 MB per int8 one, on the EPYC)."""

    after: int = 3
    capacity: int = 4
    candidates: int = 16  # identities counted but not yet specialised


DEFAULT_SPECIALISE = SpecialiseConfig()


def specialised_model(model: onnx.ModelProto, identity: np.ndarray) -> onnx.ModelProto:
    """A copy of ``model`` with batch 1 and ``identity`` (1+T, D) stored as a constant input."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    (inp,) = [i for i in graph.input if i.name == IDENTITY]
    graph.input.remove(inp)
    graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(identity[None], dtype=np.float32),
                                                     IDENTITY))
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = 1
    return out


class _Entry:
    __slots__ = ("identity", "probe", "count", "session")

    def __init__(self, identity: np.ndarray) -> None:
        self.identity = identity.copy()
        self.probe = self.identity.ravel()[:16].copy()
        self.count = 0
        self.session: ort.InferenceSession | None = None

    def matches(self, identity: np.ndarray) -> bool:
        return (np.array_equal(identity.ravel()[:16], self.probe)
                and np.array_equal(identity, self.identity))


class IdentitySessions:
    """Sessions of one exported sampler, each specialised to an identity seen often enough.

    ``sessions_for(identities)`` counts the call and returns each face's session, building an
    identity's on the ``after``-th call that has it; ``None`` means: run the general graph. The
    decision depends only on the sequence of calls, never on timing, so a stream is reproducible.
    """

    def __init__(self, model: onnx.ModelProto, build: Callable[[bytes], ort.InferenceSession],
                 config: SpecialiseConfig = DEFAULT_SPECIALISE) -> None:
        self.model = model
        self.build = build
        self.config = config
        self._ready: OrderedDict[int, _Entry] = OrderedDict()
        self._counted: OrderedDict[int, _Entry] = OrderedDict()
        self._next = 0

    def __len__(self) -> int:
        return len(self._ready)

    def _find(self, table: OrderedDict[int, _Entry], identity: np.ndarray) -> tuple[int, _Entry] | None:
        for key, entry in table.items():
            if entry.matches(identity):
                table.move_to_end(key)
                return key, entry
        return None

    def sessions_for(self, identities: np.ndarray) -> list[ort.InferenceSession | None]:
        """One call's faces (F, 1+T, D): each face's session, or ``None`` for the general graph.
        A call counts once per distinct identity in it, however many faces share it."""
        out: list[ort.InferenceSession | None] = []
        for i, identity in enumerate(identities):
            same = next((j for j in range(i) if np.array_equal(identities[j], identity)), None)
            out.append(out[same] if same is not None else self._session_for(identity))
        return out

    def _session_for(self, identity: np.ndarray) -> ort.InferenceSession | None:
        hit = self._find(self._ready, identity)
        if hit is not None:
            return hit[1].session
        hit = self._find(self._counted, identity)
        if hit is None:
            key, entry = self._next, _Entry(identity)
            self._next += 1
            self._counted[key] = entry
            if len(self._counted) > self.config.candidates:
                self._counted.popitem(last=False)
        else:
            key, entry = hit
        entry.count += 1
        if entry.count < self.config.after:
            return None
        del self._counted[key]
        entry.session = self.build(specialised_model(self.model, entry.identity).SerializeToString())
        self._ready[key] = entry
        if len(self._ready) > self.config.capacity:
            self._ready.popitem(last=False)
        return entry.session
