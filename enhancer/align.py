"""Similarity alignment of faces to a canonical 5-point template, and seamless paste-back.

All maths here is pure (arrays in, arrays out). The template is in unit coordinates of the
crop and was measured once as the mean dlib 5-point layout of ~300 CelebA faces aligned by
their eye centres, then symmetrised: eyes at 40 % height, nose tip at 63 %, so an S x S crop
holds brows to chin with a small margin at every S (128, 256, 512).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

# dlib 5-point order: image-right eye outer, inner; image-left eye outer, inner; nose base.
TEMPLATE5 = np.array(
    [[0.710, 0.397], [0.590, 0.404], [0.290, 0.397], [0.410, 0.404], [0.500, 0.630]],
    dtype=np.float64,
)


def estimate_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Umeyama (1991) closed form; returns a 2x3 float64 matrix. Reflections are excluded.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    if var_s < 1e-12:
        raise ValueError("degenerate landmarks (all points coincide)")
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    r = u @ d @ vt
    scale = np.trace(np.diag(sig) @ d) / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]])


def alignment_matrix(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix taking frame pixels to an S x S aligned crop."""
    return estimate_similarity(landmarks, TEMPLATE5 * size)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    a = np.vstack([m, [0.0, 0.0, 1.0]])
    return np.linalg.inv(a)[:2]


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to Nx2 points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp_crops(frame: np.ndarray, matrices: np.ndarray, size: int) -> np.ndarray:
    """Cut F aligned S x S crops out of a frame; returns (F, S, S, C) uint8."""
    if len(matrices) == 0:
        return np.zeros((0, size, size, frame.shape[2]), dtype=frame.dtype)
    return np.stack(
        [
            cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if _scale(m) < 0.8 else cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT101)
            for m in matrices
        ]
    )


def _scale(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


@cache
def feather_mask(size: int, margin: float = 0.06, blur: float = 0.07) -> np.ndarray:
    """Soft (S, S) float32 mask: 1 over the face, falling smoothly to 0 at the crop border.

    A rounded rectangle blurred by a Gaussian, so the pasted crop has no hard edge and the
    crop's reflected border padding never reaches the frame.
    """
    m = np.zeros((size, size), np.float32)
    inset = int(round(size * (margin + blur)))
    radius = int(round(size * 0.18))
    cv2.rectangle(m, (inset + radius, inset), (size - 1 - inset - radius, size - 1 - inset), 1.0, -1)
    cv2.rectangle(m, (inset, inset + radius), (size - 1 - inset, size - 1 - inset - radius), 1.0, -1)
    for cx in (inset + radius, size - 1 - inset - radius):
        for cy in (inset + radius, size - 1 - inset - radius):
            cv2.circle(m, (cx, cy), radius, 1.0, -1)
    sigma = size * blur / 2.0
    m = cv2.GaussianBlur(m, (0, 0), sigma)
    m.setflags(write=False)
    return m


def match_colour(restored: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift the restored crops' per-channel mean to the reference crops' inside the mask.

    Generators drift in colour a little; matching the low-frequency colour to the live frame
    is what makes the seam invisible. Works on (..., S, S, 3) uint8; returns uint8.

    Speed: mask-weighted sums use OpenCV's multiply + sumElems (numpy's float reductions over
    a 512x512x3 crop took ~10x longer) and the shift is applied with a 256-entry lookup table
    per crop, which is exactly ``clip(round(x + shift))``.
    """
    shape = restored.shape
    w3 = cv2.merge([mask.astype(np.float32)] * 3)
    wsum = np.float32(cv2.sumElems(mask)[0])
    flat_r = restored.reshape(-1, shape[-3], shape[-2], 3)
    flat_t = reference.reshape(-1, shape[-3], shape[-2], 3)
    levels = np.arange(256, dtype=np.float32)[:, None]
    out = np.empty_like(flat_r)
    for i, (crop, ref) in enumerate(zip(flat_r, flat_t, strict=True)):
        mu_r = np.array(cv2.sumElems(cv2.multiply(crop, w3, dtype=cv2.CV_32F))[:3], np.float32) / wsum
        mu_t = np.array(cv2.sumElems(cv2.multiply(ref, w3, dtype=cv2.CV_32F))[:3], np.float32) / wsum
        lut = np.clip(levels + (mu_t - mu_r)[None, :], 0, 255).round().astype(np.uint8)
        out[i] = cv2.LUT(crop, lut[:, None, :])
    return out.reshape(shape)


@cache
def _mask_u8(size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The feather mask in 0..255 and the crop-space box (x0, y0, x1, y1) where it is nonzero.

    Outside the box the float mask is < 0.5/255, so blending there cannot change a uint8 pixel;
    skipping it shrinks the warped region.
    """
    m = np.round(feather_mask(size) * 255.0).astype(np.uint8)
    ys, xs = np.nonzero(m)
    box = (max(int(xs.min()) - 1, 0), max(int(ys.min()) - 1, 0),
           min(int(xs.max()) + 2, size), min(int(ys.max()) + 2, size))
    m.setflags(write=False)
    return m, box


@dataclass(frozen=True)
class NativeDetail:
    """How much of the frame's own detail above the crop's resolution a pasted face keeps, from
    the arriving crop's fine detail (ln Laplacian variance, ``enhancer.strength.log_detail``): none
    at or below ``none``, all at or above ``full``, linear between.

    Why: a face larger than the crop (a webcam face is often 200-350 px, the crop 128) that
    arrives clean has real detail the crop cannot hold, and replacing it with the upsampled crop
    halves its fine detail; a face that arrives damaged has codec and noise debris there instead,
    which the generator's output should replace. Bounds chosen on five clips and judged on five
    others (docs/visible-restoration.md).
    """

    none: float = 3.5
    full: float = 4.5


DEFAULT_NATIVE = NativeDetail()


def keep_native(log_detail: np.ndarray, cfg: NativeDetail) -> np.ndarray:
    """(F,) share of native detail to keep (``paste_back``'s ``keep_native``) for crops of this detail."""
    span = max(cfg.full - cfg.none, 1e-6)
    return np.clip((np.asarray(log_detail, np.float64) - cfg.none) / span, 0.0, 1.0).astype(np.float32)


def paste_back(
    frame: np.ndarray,
    crops: np.ndarray,
    matrices: np.ndarray,
    originals: np.ndarray | None = None,
    keep_native: np.ndarray | None = None,
) -> np.ndarray:
    """Composite F restored crops back into a copy of the frame with feathered masks.

    Without ``originals`` the crops replace the face (a feathered blend). With ``originals``
    (the crops as cut from this frame) each restored crop is first colour-matched to its
    original, and ``keep_native`` (F,) in [0, 1] (default 1) says how much of the frame's own
    detail *above the crop's resolution* stays: 1 pastes only the change,
    ``frame + warp(mask * (restored - original))``, so a crop the generator left unchanged gives
    the frame back exactly and a face larger than the crop keeps its native detail; 0 replaces
    the face with the upsampled crop. In general
    ``frame * (1 - (1 - k) * warp(mask)) + warp(mask * (restored - k * original))``.

    Only the bounding box of each face's mask support is warped, so cost scales with face size,
    not frame size. Speed (this runs on every frame): replacing warps the crop and its uint8
    mask as one BGRA image (OpenCV's 4-channel bilinear path is the fastest) and blends with
    ``cv2.blendLinear``, within one grey level of an exact float blend; the change is warped as
    float32 with the mask already applied.
    """
    out = frame.copy()
    if len(crops) == 0:
        return out
    size = crops.shape[1]
    if originals is not None:
        crops = match_colour(crops, originals, feather_mask(size))
    mask, (sx0, sy0, sx1, sy1) = _mask_u8(size)
    h, w = frame.shape[:2]
    corners = np.array([[sx0, sy0], [sx1, sy0], [sx0, sy1], [sx1, sy1]], dtype=np.float64)
    for i, (crop, m) in enumerate(zip(crops, matrices, strict=True)):
        inv = invert_affine(m)
        pts = transform_points(inv, corners)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        shifted = inv.copy()
        shifted[:, 2] -= (x0, y0)
        if originals is not None:
            k = 1.0 if keep_native is None else float(keep_native[i])
            out[y0:y1, x0:x1] = _add_change(out[y0:y1, x0:x1], crop, originals[i], shifted, k)
            continue
        bgra = cv2.warpAffine(cv2.merge([crop, mask]), shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = bgra[..., 3].astype(np.float32)
        alpha *= 1.0 / 255.0
        face = cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR)
        out[y0:y1, x0:x1] = cv2.blendLinear(face, out[y0:y1, x0:x1], alpha, 1.0 - alpha)
    return out


def _add_change(region: np.ndarray, restored: np.ndarray, original: np.ndarray, m: np.ndarray,
                keep: float) -> np.ndarray:
    """``region`` (uint8) with the crop's masked change warped in by ``m``, keeping ``keep`` of
    the region's detail above the crop's resolution (see ``paste_back``)."""
    size = (region.shape[1], region.shape[0])
    mask = _mask_f32(restored.shape[0])
    if keep >= 1.0:
        change = cv2.subtract(restored, original, dtype=cv2.CV_32F)
        change *= mask
        moved = cv2.warpAffine(change, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return cv2.add(region, moved, dtype=cv2.CV_8U)  # saturating, rounded to nearest
    change = cv2.addWeighted(restored, 1.0, original, -keep, 0.0, dtype=cv2.CV_32F)
    change *= mask
    moved = cv2.warpAffine(change, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    alpha = cv2.warpAffine(mask[..., 0], m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0)
    scale = 1.0 - (1.0 - keep) * alpha
    kept = cv2.multiply(region, cv2.merge([scale] * 3), dtype=cv2.CV_32F)
    return cv2.add(kept, moved, dtype=cv2.CV_8U)


@cache
def _mask_f32(size: int) -> np.ndarray:
    """The feather mask as (S, S, 3) float32, to weight a crop's change."""
    m = np.ascontiguousarray(np.repeat(feather_mask(size).astype(np.float32).reshape(size, size, 1), 3, axis=2))
    m.setflags(write=False)
    return m
