"""dlib's models are locked one by one, so a background detection does not hold up landmarks."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from enhancer.detect import _models, detect_faces, landmarks5
from enhancer.imageio import read_image


def test_landmarks_run_while_the_detector_is_busy_in_another_thread(shared_data: Path) -> None:
    img = read_image(next(p for p in sorted((shared_data / "celeba").rglob("*.jpg"))))
    faces = detect_faces(img)
    box = faces[0].box if faces else np.array([40, 60, 140, 170], np.float32)
    done = threading.Event()
    result: list[np.ndarray] = []

    def refine() -> None:
        result.append(landmarks5(img, box))
        done.set()

    with _models.hog_lock:  # as a background HOG detection holds it
        worker = threading.Thread(target=refine, daemon=True)
        worker.start()
        finished = done.wait(10.0)
    worker.join(10.0)
    assert finished, "landmark refinement waited for the HOG detector's lock"
    assert result and result[0].shape == (5, 2)
