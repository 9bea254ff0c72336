"""Assembly: an engine name becomes a ready ``FramePipeline`` (and, for the bridge, a factory of them).

The CLI is the one place that knows every package: the pipeline only receives an engine, the
engines know nothing of pipelines or identities, and the bridge only receives a factory.
Commands, benchmarks and tests that want "the product pipeline" build it here.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..detail import ReuseConfig
from ..detail_transfer import DEFAULT_TRANSFER, PreparedReferences, TransferConfig, prepare_references
from ..errors import LikenessError, ModelError
from ..identity_store import FROM_VIDEO, IdentityMismatch, IdentityStore, StoredIdentity, check_encoder
from ..pipeline import FramePipeline, Matcher
from ..strength import DEFAULT_STRENGTH, StrengthConfig, person_fade
from ..weighting_runtime import load_weighting_runtime

if TYPE_CHECKING:
    from bridge.remote_view import ViewProcessorBuilder
    from bridge.track import FrameProcessor, ProcessorFactory

DEFAULT_REUSE = ReuseConfig()
# A received stream (``likeness view``) must add little latency on two cores that also decode, re-encode
# and relay it, so its generator rests between calls (at most 10 a second, the frames between take
# the stored detail, at most ~3 frames old: docs/reliability.md measures ages 1-3 at -0.04 to -0.17 dB)
# instead of running back to back beside the frames. Measured: docs/receiver.md.
VIEW_GENERATOR_INTERVAL_S = 0.1
log = logging.getLogger(__name__)


def build_pipeline(
    identity: str | StoredIdentity | None = None,
    engine: str | Any = "auto",
    steps: int | None = None,
    weights: str | None = None,
    seed: int = 0,
    max_faces: int = 4,
    home: str | None = None,
    strength: StrengthConfig | None = DEFAULT_STRENGTH,
    reuse: ReuseConfig | None = None,
    transfer: TransferConfig | None = DEFAULT_TRANSFER,
) -> FramePipeline:
    """The product pipeline: best available engine for the packaged student, the named
    enrolled identity or one already read (a shared identity, validated in memory by
    ``identity_store.parse_identity``), checked against the engine's encoder
    (``IdentityMismatch`` otherwise), an identity matcher, and the
    adaptive strength (``enhancer.strength``; None keeps the generator's full output), and the
    enrolled person's reference detail (``enhancer.detail_transfer``; None: off, and off for an
    identity enrolled before it was stored).

    ``engine``: a name for ``create_engine``, or an engine already built (``likeness bench`` times
    its own builds). An engine without a model (``info``), the bicubic baseline, gets the identity as stored
    (no encoder to check it against) and keeps its output as is: strength and detail reuse
    temper a generator, and a baseline is shown and timed unaltered.
    """
    from engines import create_engine

    eng = create_engine(engine, weights=weights, steps=steps) if isinstance(engine, str) else engine
    if isinstance(identity, str):
        stored = IdentityStore(home).read(identity) if identity else None
    else:
        stored = identity
    if getattr(eng, "info", None) is None:
        return FramePipeline(eng, stored.identity if stored else None, seed=seed, max_faces=max_faces)
    ident = None
    matcher = None
    detail = None
    if stored is not None:
        ident = check_encoder(stored, eng.info.encoder_id)
        matcher = encoder_matcher(weights)
        detail = reference_detail(stored.detail, eng.size, transfer, stored.name, stored.metadata.get("source", ""))
    return FramePipeline(eng, ident, seed=seed, max_faces=max_faces, matcher=matcher, strength=strength,
                         reuse=reuse, reference_detail=detail)


def reference_detail(crops: np.ndarray | None, size: int, transfer: TransferConfig | None,
                     name: str, source: str = "") -> PreparedReferences | None:
    """The identity's reference detail prepared for the pipeline, or None (off, or not stored); an
    identity enrolled from video (``source``) at the transfer's ``video_alpha`` when it has one."""
    if transfer is not None and transfer.video_alpha is not None and source in FROM_VIDEO:
        transfer = replace(transfer, alpha=transfer.video_alpha)
    if transfer is None or transfer.alpha == 0:
        return None
    if crops is None or crops.shape[1] != size:
        log.info("identity %r has no reference detail at %d px; re-enroll it to add its own detail", name, size)
        return None
    return prepare_references(crops, transfer, load_weighting_runtime() if transfer.learned else None)


def encoder_matcher(weights: str | None = None) -> Matcher:
    """Our own identity encoder's global vector per crop (never the dlib judge)."""
    import torch

    from ..weights import load_restorer

    model, _ = load_restorer(weights, kind="student")

    def match(crops: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.inference_mode():
            return model.encode(x[:, None])[:, 0].numpy()

    return match


def make_factory(engine: str = "bicubic", strength: StrengthConfig | None = DEFAULT_STRENGTH,
                 reuse: ReuseConfig | None = DEFAULT_REUSE) -> ProcessorFactory:
    """The bridge's factory for any engine name ``create_engine`` knows ('auto', 'bicubic', ...),
    with the adaptive strength (or ``strength``; None keeps the generator's full output) and
    detail reuse for frames the generator is late for (None: those frames go out raw)."""

    def build(identity: str | None) -> FrameProcessor:
        return build_processor(identity, engine, strength, reuse)

    return build


def make_view_builder(engine: str = "bicubic", strength: StrengthConfig | None = DEFAULT_STRENGTH,
                      reuse: ReuseConfig | None = DEFAULT_REUSE) -> ViewProcessorBuilder:
    """How a stream received from another bridge is restored (``likeness view``, the page's watch
    mode): towards the participant's shared identity, generically when none is shared, or not at
    all (raw, with a line saying why) when the identity belongs to another model."""
    if reuse is not None:
        reuse = replace(reuse, generator_interval_s=max(reuse.generator_interval_s, VIEW_GENERATOR_INTERVAL_S))

    def build(stored: StoredIdentity | None) -> tuple[FrameProcessor | None, str]:
        if stored is None:
            return build_processor(None, engine, strength, reuse), "generic: the participant shares no identity"
        try:
            processor = build_processor(stored, engine, view_strength(stored, strength), reuse)
        except IdentityMismatch as e:
            m = stored.metadata
            return None, (f"raw: the shared identity {stored.name!r} is for model {m['model_id']} (encoder "
                          f"{e.made_by}), not this receiver's (encoder {e.expected}); showing the stream as received")
        model = stored.metadata["model_id"]
        return processor, f"identity: restoring towards the shared identity {stored.name!r} (model {model})"

    return build


def view_strength(stored: StoredIdentity, strength: StrengthConfig | None) -> StrengthConfig | None:
    """A receiver's strength for a participant's shared identity: faded out on a face about as sharp
    as their own references (``enhancer.strength.person_fade``), which is how their camera shows them,
    not damage the link did; ``strength`` as it is without stored references (or with none)."""
    if strength is None or stored.detail is None or len(stored.detail) == 0:
        return strength
    return replace(strength, person_fade=person_fade(stored.detail))


def build_processor(identity: str | StoredIdentity | None, engine: str = "bicubic",
                    strength: StrengthConfig | None = DEFAULT_STRENGTH,
                    reuse: ReuseConfig | None = DEFAULT_REUSE) -> FrameProcessor:
    """One stream's processor (``make_factory``'s, or ``likeness view``'s for a shared identity held in
    memory): the face detectors loaded now, and an engine this build lacks as a ``ModelError``."""
    from bridge.factory import warm_detectors

    warm_detectors()
    try:
        return build_pipeline(identity=identity, engine=engine, strength=strength, reuse=reuse)
    except LikenessError:
        raise
    except (ImportError, ValueError) as e:
        raise ModelError(f"engine {engine!r} is not available in this build ({e})") from None
