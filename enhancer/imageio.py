"""Image and video reading with clear errors instead of tracebacks.

OpenCV returns ``None`` for anything it cannot read; we turn every failure mode
(missing, empty, corrupt, unusual channel layouts, absurd sizes) into an ``InputError``
so the CLI can report one line and exit non-zero.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .errors import InputError

MAX_PIXELS = 64_000_000  # refuse images that would need GBs of RAM to process
MIN_SIDE = 16


def to_bgr(img: np.ndarray, source: str = "image") -> np.ndarray:
    """Return a 3-channel uint8 BGR array from gray, BGRA or 16-bit input."""
    if img is None or img.size == 0:
        raise InputError(f"{source}: empty image")
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        raise InputError(f"{source}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return np.ascontiguousarray(img)
    raise InputError(f"{source}: unsupported image shape {img.shape}")


def read_image(path: str | Path, min_side: int = MIN_SIDE) -> np.ndarray:
    """Read an image file as BGR uint8, or raise ``InputError`` saying why not."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, expected an image file")
    size = p.stat().st_size
    if size == 0:
        raise InputError(f"{p}: file is empty")
    data = np.fromfile(str(p), dtype=np.uint8)
    header_ok = cv2.haveImageReader(str(p)) if hasattr(cv2, "haveImageReader") else True
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if header_ok else None
    if img is None:
        raise InputError(f"{p}: not a readable image (corrupt, truncated or unsupported format)")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise InputError(f"{p}: image too large ({img.shape[1]}x{img.shape[0]}, max {MAX_PIXELS} pixels)")
    if min(img.shape[:2]) < min_side:
        raise InputError(f"{p}: image too small ({img.shape[1]}x{img.shape[0]}, need >= {min_side} px)")
    return to_bgr(img, str(p))


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write an image, creating parent folders; raise ``InputError`` if the format is unknown."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        ok, buf = cv2.imencode(p.suffix or ".png", img)
    except cv2.error:
        ok = False
    if not ok:
        raise InputError(f"{p}: cannot encode image with extension '{p.suffix}'")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(p)
