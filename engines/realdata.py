"""Real degraded face crops for parity tests, quantisation calibration and quality checks.

Numerical agreement on random tensors says little about agreement on faces (activations of a
real crop have other ranges), so every engine comparison uses aligned CelebA crops degraded
with the 'severe' preset, exactly as a video call would feed them.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from enhancer.align import alignment_matrix, warp_crops
from enhancer.degrade import degrade
from enhancer.detect import detect_faces
from enhancer.imageio import read_image

from .base import EngineError

REPO = Path(__file__).resolve().parents[1]


def find_data_root() -> Path | None:
    """``$LIKENESS_DATA`` if set, else ``../shared/data`` beside the repo (the tests' convention)."""
    env = os.environ.get("LIKENESS_DATA")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if (c / "celeba" / "labels.csv").is_file():
            return c
    return None


def degraded_crops(n: int, size: int = 128, root: Path | None = None, preset: str = "severe",
                   seed: int = 0, skip: int = 0) -> np.ndarray:
    """``n`` aligned, degraded (F, S, S, 3) uint8 BGR crops of distinct CelebA identities.

    ``skip`` leaves out the first identities, so calibration and evaluation sets can differ.
    """
    root = root or find_data_root()
    if root is None:
        raise EngineError("real face data not found: set LIKENESS_DATA to the folder holding celeba/")
    with (root / "celeba" / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "crops"]
    out: list[np.ndarray] = []
    used: set[str] = set()
    for r in rows:
        if r["identity"] in used:
            continue
        used.add(r["identity"])
        if len(used) <= skip:
            continue
        img = read_image(root / "celeba" / r["path"])
        dets = detect_faces(img)
        if len(dets) != 1:
            continue
        crop = warp_crops(img, alignment_matrix(dets[0].landmarks, size)[None], size)[0]
        out.append(degrade(crop, preset, seed=seed + len(out)))
        if len(out) == n:
            return np.stack(out)
    raise EngineError(f"only {len(out)} usable faces in {root / 'celeba'}, wanted {n}")
