"""Quality metrics for evaluation: fidelity, structure, identity, geometry and temporal stability.

All functions are pure (arrays in, numbers out) and take uint8 BGR images as produced by
OpenCV/PyAV elsewhere in the project. The identity and landmark metrics use dlib models as an
independent *judge*: they must never be used inside a model or its loss, or the model could
learn to fool the judge instead of preserving the face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
from tqdm import tqdm

from .detect import face_descriptor, landmarks5

# Where dlib's HOG detector puts its box on a crop aligned to ``align.TEMPLATE5`` (mean over
# 49 CelebA faces, units of the crop side; std ~0.03). landmark_distance refines landmarks
# inside this fixed box instead of running the detector, which often misses tight crops.
ALIGNED_BOX = (0.16, 0.17, 0.87, 0.88)

MIN_LANDMARK_CROP = 32

SSIM_K1, SSIM_K2 = 0.01, 0.03
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("empty image")


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; ``inf`` if identical.

    Computed in float64 so uint8 differences do not wrap around.
    """
    _check_pair(a, b)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def luma(img: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma Y (float64, 0..255) of a BGR image; a 2-D image is returned as is."""
    x = img.astype(np.float64)
    if x.ndim == 2:
        return x
    if x.ndim == 3 and x.shape[2] == 1:
        return x[..., 0]
    return 0.114 * x[..., 0] + 0.587 * x[..., 1] + 0.299 * x[..., 2]


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> float:
    """Mean structural similarity (Wang et al., IEEE TIP 2004) on luma Y of BGR images.

    Standard settings: Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03. We use luma
    (not the per-channel mean) because it is what most face-restoration papers report and
    what the eye is most sensitive to. Statistics are only averaged where the whole window
    fits inside the image (the 5-px border is excluded), like the reference MATLAB code.
    """
    _check_pair(a, b)
    x, y = luma(a), luma(b)
    pad = SSIM_WINDOW // 2
    if min(x.shape) <= 2 * pad:
        raise ValueError(f"image too small for SSIM ({x.shape[1]}x{x.shape[0]}, need > {2 * pad} px)")

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA)[pad:-pad, pad:-pad]

    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    num = (2 * mx * my + c1) * (2 * sxy + c2)
    den = (mx * mx + my * my + c1) * (sxx + syy + c2)
    return float(np.mean(num / den))


def identity_distance(a_bgr: np.ndarray, b_bgr: np.ndarray) -> float:
    """Euclidean distance between dlib 128-D descriptors of two aligned face crops.

    Lower is better; dlib's own same-person threshold is 0.6. Inputs are crops aligned to
    ``align.TEMPLATE5`` (any size, typically 128x128), BGR uint8.
    """
    da = face_descriptor(cv2.cvtColor(a_bgr, cv2.COLOR_BGR2RGB))
    db = face_descriptor(cv2.cvtColor(b_bgr, cv2.COLOR_BGR2RGB))
    return float(np.linalg.norm(da - db))


def aligned_landmarks(crop_bgr: np.ndarray) -> np.ndarray | None:
    """dlib 5 landmarks (5x2, crop pixels) inside the fixed aligned-face box, or None if implausible.

    The shape predictor always returns *some* shape (its mean shape on a blank image), so
    failure is judged from the input and the result: a crop under 32 px or without contrast
    (luma std < 2 grey levels), points outside the crop, or eyes closer than 10 % of the crop
    side (a template-aligned face has them 30 % apart).
    """
    h, w = crop_bgr.shape[:2]
    if min(h, w) < MIN_LANDMARK_CROP or float(luma(crop_bgr).std()) < 2.0:
        return None
    box = np.array([ALIGNED_BOX[0] * w, ALIGNED_BOX[1] * h, ALIGNED_BOX[2] * w, ALIGNED_BOX[3] * h])
    gray = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2GRAY) if crop_bgr.ndim == 3 else crop_bgr
    try:
        lm = landmarks5(np.ascontiguousarray(gray), box)
    except RuntimeError:
        return None
    if not np.all(np.isfinite(lm)):
        return None
    if np.any(lm < 0) or np.any(lm[:, 0] >= w) or np.any(lm[:, 1] >= h):
        return None
    if _eye_distance(lm) < 0.1 * min(h, w):
        return None
    return lm


def _eye_distance(lm: np.ndarray) -> float:
    return float(np.linalg.norm((lm[0] + lm[1]) / 2 - (lm[2] + lm[3]) / 2))


def landmark_distance(a_bgr: np.ndarray, b_bgr: np.ndarray) -> float:
    """Mean distance between the 5 dlib landmarks of two aligned crops, in units of eye distance.

    ``a`` is the reference (its eye distance normalises the error). Returns ``nan`` when
    landmarks cannot be found plausibly on either crop, so callers can count failures
    instead of averaging garbage.
    """
    if a_bgr.shape[:2] != b_bgr.shape[:2]:
        raise ValueError(f"crops differ in size: {a_bgr.shape[:2]} vs {b_bgr.shape[:2]}")
    la, lb = aligned_landmarks(a_bgr), aligned_landmarks(b_bgr)
    if la is None or lb is None:
        return math.nan
    return float(np.linalg.norm(la - lb, axis=1).mean() / _eye_distance(la))


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img


def farneback_flow(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Dense flow (H, W, 2) such that ``dst[y, x] ~ src[y + f_y, x + f_x]``.

    Farneback with the parameters OpenCV's sample uses for video (pyramid 0.5 x 3 levels,
    window 15, 3 iterations, poly_n 5, sigma 1.2).
    """
    return cv2.calcOpticalFlowFarneback(_gray(dst), _gray(src), None, 0.5, 3, 15, 3, 5, 1.2, 0)


def warp_by_flow(img: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``img`` at (x + f_x, y + f_y); returns float32 image and a validity mask."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(img.astype(np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return warped, valid


def flicker(
    frames: Sequence[np.ndarray],
    reference: Sequence[np.ndarray] | None = None,
    progress: bool = False,
) -> float:
    """Temporal warping error: mean |frame_t - warp(frame_{t-1} -> t)| in grey levels (0..255).

    Motion is estimated with Farneback flow on the ``reference`` frames (the input video)
    when given, else on ``frames`` themselves. Using the input's motion is the point: an
    enhancer that adds frame-to-frame texture changes cannot hide them by also confusing the
    flow. Pixels whose source falls outside the frame are excluded. 0 for a static video;
    a real clip scores its residual flow error, so compare methods on the same clip.
    """
    frames = list(frames)
    ref = frames if reference is None else list(reference)
    if len(ref) != len(frames):
        raise ValueError(f"reference has {len(ref)} frames, output has {len(frames)}")
    if len(frames) < 2:
        raise ValueError("flicker needs at least two frames")
    errors = []
    for t in tqdm(range(1, len(frames)), desc="flicker", unit="frame", disable=not progress):
        if frames[t].shape != frames[t - 1].shape or ref[t].shape[:2] != frames[t].shape[:2]:
            raise ValueError(f"frame {t} differs in size from its neighbour or its reference")
        flow = farneback_flow(ref[t - 1], ref[t])
        warped, valid = warp_by_flow(frames[t - 1], flow)
        diff = np.abs(frames[t].astype(np.float32) - warped)
        if diff.ndim == 3:
            diff = diff.mean(axis=2)
        if valid.any():
            errors.append(float(diff[valid].mean()))
    return float(np.mean(errors)) if errors else math.nan


def identity_separability(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """How well two views' identity vectors (row i of ``a`` and ``b``: the same person) pick each
    other out: top-1 identification and ROC AUC of same- vs different-person cosine, after
    removing the mean vector (a constant offset says nothing about who anyone is), plus the
    spread across people relative to the vectors' norm (near 0: a collapsed encoder)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or len(a) < 2:
        raise ValueError(f"need two (N>=2, D) arrays of the same shape, got {a.shape} and {b.shape}")
    mu = np.concatenate([a, b]).mean(0)
    spread = float(np.linalg.norm(a.std(0)) / (np.linalg.norm(a, axis=1).mean() + 1e-12))
    a, b = a - mu, b - mu
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    s = a @ b.T
    same, diff = np.diag(s), s[~np.eye(len(s), dtype=bool)]
    auc = float((same[:, None] > diff[None, :]).mean() + 0.5 * (same[:, None] == diff[None, :]).mean())
    return {"top1": float((s.argmax(1) == np.arange(len(s))).mean()), "chance_top1": 1.0 / len(s), "auc": auc,
            "spread": spread, "people": len(s)}


# Detail metrics. PSNR and SSIM reward a blurry average over a sharp but slightly wrong guess, so a
# restorer that adds plausible detail can score worse than one that smooths; these two separate "how
# much fine detail" from "is it the right detail". Both look only at luma above HF_CUTOFF of the
# Nyquist frequency (radius > 0.125 cycles/pixel: about 16 px per cycle in a 128-px crop,
# eyelashes, hair, skin texture), after removing the mean and applying a 2-D Hann window so the
# crop's edges do not leak broadband energy into the band.
HF_CUTOFF = 0.25  # fraction of Nyquist (0.5 cycles/pixel)


def _hf_spectrum(img: np.ndarray) -> np.ndarray:
    """FFT coefficients of the windowed, mean-removed luma at normalised radius > HF_CUTOFF * 0.5."""
    y = luma(img)
    h, w = y.shape
    if min(h, w) < 8:
        raise ValueError(f"image too small for high-frequency metrics ({w}x{h}, need >= 8 px)")
    spec = np.fft.fft2((y - y.mean()) * np.outer(np.hanning(h), np.hanning(w)))
    radius = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    return spec[radius > HF_CUTOFF * 0.5]


def hf_energy(out: np.ndarray, truth: np.ndarray) -> float:
    """High-frequency luma energy of ``out`` relative to ``truth`` (sum of |FFT|^2 above 1/4 Nyquist).

    Why: how much fine detail a method puts back, right or wrong. 1.0 is the truth's amount, < 1
    over-smoothed (a blurred copy), > 1 over-sharpened or noisy. ``nan`` if the truth has none.
    """
    _check_pair(out, truth)
    e_out = float(np.sum(np.abs(_hf_spectrum(out)) ** 2))
    e_truth = float(np.sum(np.abs(_hf_spectrum(truth)) ** 2))
    return e_out / e_truth if e_truth > 0 else math.nan


def hf_corr(out: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation of the high-passed luma of ``out`` and ``truth`` (same band and window as
    ``hf_energy``).

    Why: whether the added detail is the *right* detail. Invented texture raises ``hf_energy`` but
    not this: 1.0 for the truth, between 0 and 1 for a blurred copy, ~0 for detail unrelated to the
    truth. The high-passed images have zero mean (DC is outside the band), so by Parseval this is
    the normalised inner product of the band's FFT coefficients. ``nan`` if either has no detail.
    """
    _check_pair(out, truth)
    a, b = _hf_spectrum(out), _hf_spectrum(truth)
    den = math.sqrt(float(np.sum(np.abs(a) ** 2)) * float(np.sum(np.abs(b) ** 2)))
    return float(np.real(np.vdot(b, a))) / den if den > 0 else math.nan
