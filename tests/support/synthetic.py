"""Constructed crops for the detail-transfer tests."""

from __future__ import annotations

import cv2
import numpy as np


def face_like(seed: int) -> np.ndarray:
    """A 128x128 crop with structure at every scale: smooth shading plus fine texture."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(60, 200, (8, 8, 3)).astype(np.float32), (128, 128), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 25, (128, 128, 3)).astype(np.float32), (0, 0), 0.7)
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)
