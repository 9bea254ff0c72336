"""Processor factories: one ``FramePipeline`` per stream.

The bridge and `likeness call` only see a ``ProcessorFactory`` (identity name -> object
with ``process(frame_bgr, t)``); the CLI builds the real one from an engine name
(``enhancer.commands.assemble.make_factory``), so the real engine plugs in with no bridge
change. ``default_processor_factory`` is the model-free placeholder (the bicubic baseline)
that benchmarks and tests run the bridge with.
"""

from __future__ import annotations

import numpy as np

from engines.bicubic import BicubicEngine
from enhancer.detect import detect_faces, landmarks5
from enhancer.pipeline import FramePipeline

from .identities import load_identity


def warm_detectors() -> None:
    """Load dlib's detector and landmark models now (process-wide cache).

    Loading them holds the GIL for about a second; done lazily on a stream's first frame
    it would stall the event loop and every other stream with it.
    """
    blank = np.zeros((64, 64), np.uint8)
    detect_faces(blank)
    landmarks5(blank, np.array([8, 8, 56, 56], np.float32))


def default_processor_factory(identity: str | None) -> FramePipeline:
    """BicubicEngine placeholder pipeline with the named identity (or none)."""
    warm_detectors()
    return FramePipeline(BicubicEngine(), identity=load_identity(identity))
