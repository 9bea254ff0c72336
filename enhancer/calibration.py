"""Real degraded face crops for quantisation calibration, parity tests and quality checks.

Numerical agreement on random tensors says little about agreement on faces (activations of a
real crop have other ranges), so every engine comparison uses aligned CelebA crops degraded
with the 'severe' preset, exactly as a video call would feed them. Making them takes the face
pipeline (detection, alignment, degradation), which the engines do not import: the caller hands
``personal_crops`` to ``engines.create_engine(..., calibration=)`` for an int8 build.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from .align import alignment_matrix, warp_crops
from .degrade import degrade
from .detect import detect_faces
from .errors import InputError
from .imageio import read_image

REPO = Path(__file__).resolve().parents[1]


def find_data_root() -> Path | None:
    """``$LIKENESS_DATA`` if set, else ``../shared/data`` beside the repo (the tests' convention)."""
    env = os.environ.get("LIKENESS_DATA")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (c / "celeba" / "labels.csv").is_file():
            return c
    return None


def _labels(root: Path | None) -> tuple[Path, list[dict[str, str]]]:
    root = root or find_data_root()
    if root is None:
        raise InputError("real face data not found: set LIKENESS_DATA to the folder holding celeba/")
    with (root / "celeba" / "labels.csv").open(newline="") as fh:
        return root / "celeba", [r for r in csv.DictReader(fh) if r["kind"] == "crops"]


def _aligned(path: Path, size: int) -> np.ndarray | None:
    """The aligned crop of the one face in a photo, or None (no face, or several)."""
    img = read_image(path)
    dets = detect_faces(img)
    if len(dets) != 1:
        return None
    return warp_crops(img, alignment_matrix(dets[0].landmarks, size)[None], size)[0]


def degraded_crops(n: int, size: int = 128, root: Path | None = None, preset: str = "severe",
                   seed: int = 0, skip: int = 0) -> np.ndarray:
    """``n`` aligned, degraded (F, S, S, 3) uint8 BGR crops of distinct CelebA identities.

    ``skip`` leaves out the first identities, so calibration and evaluation sets can differ.
    """
    celeba, rows = _labels(root)
    out: list[np.ndarray] = []
    used: set[str] = set()
    for r in rows:
        if r["identity"] in used:
            continue
        used.add(r["identity"])
        if len(used) <= skip:
            continue
        crop = _aligned(celeba / r["path"], size)
        if crop is None:
            continue
        out.append(degrade(crop, preset, seed=seed + len(out)))
        if len(out) == n:
            return np.stack(out)
    raise InputError(f"only {len(out)} usable faces in {celeba}, wanted {n}")


def personal_crops(n: int, refs: int = 2, size: int = 128, root: Path | None = None, preset: str = "severe",
                   seed: int = 0, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` degraded crops of distinct identities, each with ``refs`` clean crops of other photos
    of the same person: (F, S, S, 3) and (F, K, S, S, 3) uint8 BGR.

    The personalised mode is what a call runs for an enrolled user, so quality checks need real
    identities from real references, not only the null identity.
    """
    celeba, rows = _labels(root)
    by_id: dict[str, list[str]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r["path"])
    lqs: list[np.ndarray] = []
    sets: list[np.ndarray] = []
    for person in list(by_id)[skip:]:
        crops = []
        for path in by_id[person]:
            crop = _aligned(celeba / path, size)
            if crop is not None:
                crops.append(crop)
            if len(crops) == refs + 1:
                break
        if len(crops) < refs + 1:
            continue
        lqs.append(degrade(crops[0], preset, seed=seed + len(lqs)))
        sets.append(np.stack(crops[1:]))
        if len(lqs) == n:
            return np.stack(lqs), np.stack(sets)
    raise InputError(f"only {len(lqs)} people with {refs + 1} usable photos in {celeba}, wanted {n}")
