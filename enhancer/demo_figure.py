"""The picture `likeness demo` writes: full frames, then the face enlarged from each.

Why: in a full frame the face is a small part of each panel, so what the model does to it
(eyes, skin, edges, codec blocks) cannot be judged there. The zoomed strip cuts the same
square around the face out of every frame and enlarges it the same way (cubic), so the
panels differ only in what each frame holds, never in where or how much they were zoomed.

Pure functions: images (BGR uint8) in, new images out; nothing is drawn in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .align import alignment_matrix, invert_affine, transform_points

ZOOM_SIDE = 320  # px: each zoomed face is a ZOOM_SIDE x ZOOM_SIDE square
LABEL_BAND = 40  # px: a black band under each zoomed face holds its label
MAX_WIDTH = 1600  # px: before_after.png is scaled down to fit this
FACE_FRACTION = 0.8  # zoomed square: this fraction of the aligned crop's side (its feathered inside)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels, x1/y1 exclusive


def face_box(landmarks: np.ndarray, frame_shape: tuple[int, ...], fraction: float = FACE_FRACTION) -> Box:
    """Axis-aligned square on the face, from the region the pipeline's alignment cuts for it.

    Centred where the aligned crop (``enhancer.align``) is centred, ``fraction`` of its side:
    the part of the crop that the feathered paste-back actually replaces. Shifted (then, if
    need be, shrunk) to lie inside the frame.
    """
    inv = invert_affine(alignment_matrix(np.asarray(landmarks, np.float64), 1))
    cx, cy = transform_points(inv, np.array([[0.5, 0.5]]))[0]
    crop_side = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))
    h, w = frame_shape[:2]
    side = max(2, min(int(round(crop_side * fraction)), h, w))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return x0, y0, x0 + side, y0 + side


def largest_face(landmarks: Sequence[np.ndarray]) -> np.ndarray:
    """The 5-point landmarks with the widest spread (the main face in the picture)."""
    return max(landmarks, key=lambda lm: float(np.ptp(np.asarray(lm)[:, 0])))


def zoom(frame: np.ndarray, box: Box, side: int = ZOOM_SIDE) -> np.ndarray:
    """The square ``box`` of ``frame`` resized to ``side`` x ``side`` with cubic interpolation."""
    x0, y0, x1, y1 = box
    return cv2.resize(frame[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_CUBIC)


def with_label_band(img: np.ndarray, label: str, band: int = LABEL_BAND) -> np.ndarray:
    """``img`` with a black band below it holding ``label`` (so the text covers no face)."""
    strip = np.zeros((band, img.shape[1], 3), np.uint8)
    cv2.putText(strip, label, (10, band - 13), _FONT, 0.8, _WHITE, 2, cv2.LINE_AA)
    return np.vstack([img, strip])


def zoom_strip(frames: Sequence[np.ndarray], labels: Sequence[str], box: Box, side: int = ZOOM_SIDE) -> np.ndarray:
    """One labelled zoom of ``box`` per frame, side by side: (side + LABEL_BAND, n * side, 3)."""
    return np.hstack([with_label_band(zoom(f, box, side), t) for f, t in zip(frames, labels, strict=True)])


def frames_row(frames: Sequence[np.ndarray], labels: Sequence[str]) -> np.ndarray:
    """Full frames side by side, each labelled in its bottom-left corner."""
    row = np.hstack(frames)
    h = row.shape[0]
    x = 0
    for f, t in zip(frames, labels, strict=True):
        cv2.putText(row, t, (x + 10, h - 15), _FONT, 0.8, _WHITE, 2)
        x += f.shape[1]
    return row


def fit_width(img: np.ndarray, max_width: int = MAX_WIDTH) -> np.ndarray:
    """``img`` scaled down (area interpolation) to at most ``max_width`` px wide; unchanged if it fits."""
    if img.shape[1] <= max_width:
        return img
    h = int(round(img.shape[0] * max_width / img.shape[1]))
    return cv2.resize(img, (max_width, h), interpolation=cv2.INTER_AREA)


def stack_centred(top: np.ndarray, bottom: np.ndarray, gap: int = 12) -> np.ndarray:
    """``top`` above ``bottom``, the narrower one centred on a black canvas, ``gap`` px apart."""
    w = max(top.shape[1], bottom.shape[1])

    def pad(img: np.ndarray) -> np.ndarray:
        left = (w - img.shape[1]) // 2
        return cv2.copyMakeBorder(img, 0, 0, left, w - img.shape[1] - left, cv2.BORDER_CONSTANT, value=0)

    return np.vstack([pad(top), np.zeros((gap, w, 3), np.uint8), pad(bottom)])


def before_after(row: np.ndarray, strip: np.ndarray, max_width: int = MAX_WIDTH) -> np.ndarray:
    """The demo picture: the full-frame row above the zoomed strip, at most ``max_width`` px wide."""
    return fit_width(stack_centred(row, strip), max_width)
