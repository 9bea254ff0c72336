"""Degradations that look like what a low-bitrate video call delivers.

Pipeline per image: Gaussian blur (camera/defocus) -> downscale (the call's resolution
ladder) -> sensor noise -> a real codec round trip through PyAV (H.264 via libx264 or VP8
via libvpx, at a fixed quantiser) -> upscale back to the input size (what the receiver's
renderer does). The codec encodes two frames, a slightly shifted copy then the image, and we
keep the second: inter-predicted frames carry the smearing and blockiness that calls show.

Presets (exact parameters; ``scale`` is output/input side, ``qp`` the codec quantiser on
its own scale -- x264 QP 0-51, VP8 quantiser index 0-63):

| preset   | blur sigma (px @128) | scale | noise sigma (/255) | H.264 QP | VP8 q |
|----------|----------------------|-------|--------------------|----------|-------|
| mild     | 0.5                  | 0.50  | 2                  | 28       | 34    |
| moderate | 0.9                  | 0.35  | 4                  | 34       | 44    |
| severe   | 1.3                  | 0.25  | 6                  | 38       | 52    |

The codec is drawn per image (H.264 or VP8, 50/50) from the seeded generator, so a preset
is deterministic given a seed. Blur and noise are specified for a 128-px face crop and scale
with the image so a whole frame degrades consistently with its crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import cv2
import numpy as np


@dataclass(frozen=True)
class Degradation:
    blur_sigma: float
    scale: float
    noise_sigma: float
    h264_qp: int
    vp8_q: int
    codec: str = "random"  # "h264", "vp8", "random" or "none"


PRESETS: dict[str, Degradation] = {
    "mild": Degradation(blur_sigma=0.5, scale=0.50, noise_sigma=2.0, h264_qp=28, vp8_q=34),
    "moderate": Degradation(blur_sigma=0.9, scale=0.35, noise_sigma=4.0, h264_qp=34, vp8_q=44),
    "severe": Degradation(blur_sigma=1.3, scale=0.25, noise_sigma=6.0, h264_qp=38, vp8_q=52),
}


def _even(n: int) -> int:
    return max(16, n + (n % 2))


def codec_roundtrip(img_bgr: np.ndarray, codec: str, q: int, shift: tuple[int, int] = (1, 0)) -> np.ndarray:
    """Encode a shifted copy and then the image as a 2-frame stream; decode the second frame.

    The image is padded to even dimensions (>= 16) for 4:2:0 chroma and cropped back.
    PyAV is imported here, not at module level, so the presets (and training from a pack) work
    on a machine without it, such as a bare GPU box.
    """
    import av

    h, w = img_bgr.shape[:2]
    H, W = _even(h), _even(w)
    pad = cv2.copyMakeBorder(img_bgr, 0, H - h, 0, W - w, cv2.BORDER_REPLICATE)
    m = np.float32([[1, 0, shift[0]], [0, 1, shift[1]]])
    first = cv2.warpAffine(pad, m, (W, H), borderMode=cv2.BORDER_REPLICATE)
    if codec == "h264":
        ctx = av.CodecContext.create("libx264", "w")
        ctx.options = {"qp": str(q), "preset": "ultrafast", "tune": "zerolatency", "threads": "1"}
    elif codec == "vp8":
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.options = {"qmin": str(q), "qmax": str(q), "deadline": "realtime", "cpu-used": "8",
                       "threads": "1", "lag-in-frames": "0"}
        ctx.bit_rate = 10_000_000
    else:
        raise ValueError(f"unknown codec {codec!r}")
    ctx.width, ctx.height, ctx.pix_fmt = W, H, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.framerate = Fraction(30, 1)
    packets = []
    for i, im in enumerate((first, pad)):
        fr = av.VideoFrame.from_ndarray(im, format="bgr24").reformat(format="yuv420p")
        fr.pts = i
        packets += ctx.encode(fr)
    packets += ctx.encode(None)
    dec = av.CodecContext.create("h264" if codec == "h264" else "vp8", "r")
    frames = []
    for p in packets:
        frames += dec.decode(p)
    frames += dec.decode(None)
    out = frames[-1].to_ndarray(format="bgr24")
    return np.ascontiguousarray(out[:h, :w])


def degrade(img_bgr: np.ndarray, spec: Degradation | str, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Degrade a BGR uint8 image (a face crop or a whole frame); same size out."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown preset {spec!r}; choose from {', '.join(PRESETS)}")
        spec = PRESETS[spec]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = img_bgr.shape[:2]
    unit = min(h, w) / 128.0
    x = img_bgr
    if spec.blur_sigma > 0:
        x = cv2.GaussianBlur(x, (0, 0), spec.blur_sigma * unit)
    sw, sh = max(8, round(w * spec.scale)), max(8, round(h * spec.scale))
    x = cv2.resize(x, (sw, sh), interpolation=cv2.INTER_AREA)
    if spec.noise_sigma > 0:
        noise = rng.normal(0.0, spec.noise_sigma, x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)
    codec = spec.codec if spec.codec != "random" else ("h264" if rng.random() < 0.5 else "vp8")
    if codec != "none":
        q = spec.h264_qp if codec == "h264" else spec.vp8_q
        shift = (int(rng.integers(-2, 3)), int(rng.integers(-2, 3)))
        x = codec_roundtrip(x, codec, q, shift)
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_CUBIC)


# crop pixels per frame pixel of a webcam face (the tracker's crop is this much smaller than the face
# in the frame): 0.32-0.47 medians on the talking-head clips at 640x480; drawn per image
CALL_FACE_SCALES = (0.3, 0.65)
CALL_FRAME_SIDE = 480  # the frame's short side: the unit a whole frame's degradation scales with
CALL_PREFIX = "call-"  # a pack variant "call-severe" is ``degrade_call`` with the severe preset


def degrade_call(crop_bgr: np.ndarray, spec: Degradation | str, seed: int | np.random.Generator = 0,
                 face_scale: float | None = None) -> np.ndarray:
    """An aligned face crop degraded as a call degrades the whole frame it sits in; same size out.

    Why: the presets applied to the crop itself (``degrade``) are not what a call delivers. A
    call blurs, downscales and encodes the 640x480 frame, where the face is 1/``face_scale`` times
    the crop's side, and the tracker then samples the crop from that: relative to the crop the blur
    is ``frame side / 128 * face_scale`` times the preset's, the downscale ``scale / face_scale``
    (milder), and the codec's blocks are larger. The crop is brought up to the face's size in the
    frame, degraded there with the frame's unit, and brought back down."""
    if isinstance(spec, str):
        spec = PRESETS[spec]
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    f = float(rng.uniform(*CALL_FACE_SCALES)) if face_scale is None else face_scale
    h, w = crop_bgr.shape[:2]
    nh, nw = round(h / f), round(w / f)
    native = cv2.resize(crop_bgr, (nw, nh), interpolation=cv2.INTER_CUBIC)
    # the frame's unit, not the native face's: degrade() scales blur and noise by the image's side
    frame_unit = CALL_FRAME_SIDE / min(nh, nw)
    at_face = Degradation(spec.blur_sigma * frame_unit, spec.scale, spec.noise_sigma, spec.h264_qp, spec.vp8_q,
                          spec.codec)
    return cv2.resize(degrade(native, at_face, rng), (w, h), interpolation=cv2.INTER_AREA)


def degrade_small(img_bgr: np.ndarray, spec: Degradation | str, seed: int | np.random.Generator = 0) -> np.ndarray:
    """Like :func:`degrade` but returns the low-resolution image before the final upscale."""
    if isinstance(spec, str):
        spec = PRESETS[spec]
    h, w = img_bgr.shape[:2]
    full = degrade(img_bgr, spec, seed)
    sw, sh = max(8, round(w * spec.scale)), max(8, round(h * spec.scale))
    return cv2.resize(full, (sw, sh), interpolation=cv2.INTER_AREA)
