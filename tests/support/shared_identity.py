"""Identities for the sharing tests: a stored one with kept photos (to see them stripped), and a real
enrolment from a clip's frames (for a receiver that restores towards it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from enhancer.identity_store import IDENTITY_SHAPE, IdentityStore
from support.synthetic import face_like


def stored_identity(home: Path, name: str, encoder_id: str = "enc-test") -> bytes:
    """Store ``name`` with reference detail and kept photos under ``home``; returns the file's bytes."""
    detail = np.stack([face_like(i) for i in range(2)])
    refs = np.zeros((2, 256, 256, 3), np.uint8)
    ident = np.random.default_rng(0).normal(size=IDENTITY_SHAPE).astype(np.float32)
    path = IdentityStore(home).save(name, ident, encoder_id=encoder_id, model_id="model-test", n_refs=2,
                                    refs=refs, detail=detail)
    return path.read_bytes()


def enrolled_identity(home: Path, name: str, frames: list[np.ndarray]) -> bytes:
    """Enrol ``name`` for real (the packaged student's encoder) from face frames; the file's bytes."""
    from enhancer.enroll import enroll_from_images

    report = enroll_from_images(name, frames, home=home)
    return Path(report["path"]).read_bytes()
