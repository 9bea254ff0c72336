"""Default processor factory: one ``FramePipeline`` per stream.

The single place to switch engines: when the trained model's ``build_pipeline`` lands,
point ``default_processor_factory`` at it; the bridge and `likeness call` only see a
``ProcessorFactory`` (identity name -> object with ``process(frame_bgr, t)``).
"""

from __future__ import annotations

from enhancer.pipeline import BicubicEngine, FramePipeline

from .identities import load_identity


def default_processor_factory(identity: str | None) -> FramePipeline:
    """BicubicEngine placeholder pipeline with the named identity vector (or none)."""
    return FramePipeline(BicubicEngine(), identity=load_identity(identity))
