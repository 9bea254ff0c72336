"""Whether a received frame carries the enhancer's change: a face box and a correlation."""

from __future__ import annotations

import numpy as np

from engines.bicubic import BicubicEngine
from enhancer.pipeline import FramePipeline


def face_box(landmarks: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice]:
    """A box around the face from 5 landmarks (eye distance based), clipped to the frame."""
    c = landmarks.mean(0)
    ed = float(np.linalg.norm(landmarks[[0, 1]].mean(0) - landmarks[[2, 3]].mean(0)))
    h, w = shape[:2]
    x0, x1 = int(max(0, c[0] - 1.3 * ed)), int(min(w, c[0] + 1.3 * ed))
    y0, y1 = int(max(0, c[1] - 1.4 * ed)), int(min(h - 20, c[1] + 1.6 * ed))
    return slice(y0, y1), slice(x0, x1)


def enhancement_correlation(received: np.ndarray, raw: np.ndarray) -> float | None:
    """Correlation, inside the face, between (received - raw) and (enhanced raw - raw).

    Positive when the received frame carries the enhancer's change; around zero or
    negative (codec blur is the opposite of sharpening) for a passthrough frame.
    """
    res = FramePipeline(BicubicEngine()).process(raw, 0.0)
    if not res.enhanced:
        return None
    ys, xs = face_box(res.landmarks[0], raw.shape)
    d = res.frame[ys, xs].astype(np.float32) - raw[ys, xs]
    r = received[ys, xs].astype(np.float32) - raw[ys, xs]
    d -= d.mean()
    r -= r.mean()
    den = float(np.sqrt((d * d).sum() * (r * r).sum()))
    return float((d * r).sum() / den) if den > 0 else None
