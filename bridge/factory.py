"""Processor factories: one ``FramePipeline`` per stream.

The bridge and `likeness call` only see a ``ProcessorFactory`` (identity name -> object
with ``process(frame_bgr, t)``). ``make_factory("bicubic")`` is the placeholder engine;
any other engine name goes through ``enhancer.pipeline.build_pipeline`` (the trained
student, identity checked against its encoder), so the real engine plugs in with
``--engine auto`` and no bridge change.
"""

from __future__ import annotations

import numpy as np

from enhancer.detail import ReuseConfig
from enhancer.detect import detect_faces, landmarks5
from enhancer.errors import LikenessError, ModelError
from enhancer.pipeline import BicubicEngine, FramePipeline
from enhancer.strength import DEFAULT_STRENGTH, StrengthConfig

from .identities import load_identity
from .track import FrameProcessor, ProcessorFactory

DEFAULT_REUSE = ReuseConfig()


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


def make_factory(engine: str = "bicubic", strength: StrengthConfig | None = DEFAULT_STRENGTH,
                 reuse: ReuseConfig | None = DEFAULT_REUSE) -> ProcessorFactory:
    """The factory for an engine name: 'bicubic', or one ``build_pipeline`` knows ('auto', ...),
    with the adaptive strength (or ``strength``; None keeps the generator's full output) and
    detail reuse for frames the generator is late for (None: those frames go out raw)."""
    if engine == "bicubic":
        return default_processor_factory

    def build(identity: str | None) -> FrameProcessor:
        warm_detectors()
        try:
            from enhancer.pipeline import build_pipeline

            return build_pipeline(identity=identity, engine=engine, strength=strength, reuse=reuse)
        except LikenessError:
            raise
        except (ImportError, ValueError) as e:
            raise ModelError(f"engine {engine!r} is not available in this build ({e})") from None

    return build
