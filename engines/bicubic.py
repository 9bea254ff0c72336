"""The bicubic baseline: no model, always available; the speed floor and the bridge's placeholder."""

from __future__ import annotations

import cv2
import numpy as np


class BicubicEngine:
    """Classic baseline: what the receiver already sees (bicubic) plus a mild unsharp mask.

    Not a model (it has no ``info``): it stands in where no weights are available and is the
    speed floor in benchmarks.
    """

    name = "bicubic"

    def __init__(self, size: int = 128) -> None:
        self.size = size

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        out = np.empty_like(crops)
        for i, c in enumerate(crops):
            blur = cv2.GaussianBlur(c, (0, 0), 1.2)
            out[i] = cv2.addWeighted(c, 1.6, blur, -0.6, 0)
        return out

    def describe(self) -> dict:
        """Short, JSON-able description for logs and benchmark files (as model engines give)."""
        return {"engine": self.name, "size": self.size}
