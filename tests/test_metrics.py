"""Metrics against values computed independently (closed forms, a numpy SSIM, real faces)."""

from __future__ import annotations

import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import celeba_by_identity
from numpy.lib.stride_tricks import sliding_window_view

from enhancer.align import alignment_matrix, warp_crops
from enhancer.degrade import degrade
from enhancer.detect import detect_faces
from enhancer.imageio import read_image
from enhancer.metrics import flicker, hf_corr, hf_energy, identity_distance, landmark_distance, psnr, ssim


def aligned_faces(
    root: Path, identities: int, per_identity: int, size: int = 128
) -> dict[str, list[np.ndarray]]:
    """Aligned crops of the first ``identities`` CelebA identities that yield ``per_identity`` faces."""
    by_id = celeba_by_identity(root)
    out: dict[str, list[np.ndarray]] = {}
    for ident in sorted(by_id):
        crops = []
        for rel in sorted(by_id[ident]):
            img = read_image(root / "celeba" / rel)
            dets = detect_faces(img)
            if len(dets) == 1:
                crops.append(warp_crops(img, alignment_matrix(dets[0].landmarks, size)[None], size)[0])
            if len(crops) == per_identity:
                out[ident] = crops
                break
        if len(out) == identities:
            break
    return out


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> dict[str, list[np.ndarray]]:
    return aligned_faces(shared_data, identities=6, per_identity=2)


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Straight numpy transcription of Wang et al. (valid 11x11 Gaussian window, sigma 1.5)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    k = np.outer(g, g) / np.outer(g, g).sum()

    def y(img: np.ndarray) -> np.ndarray:
        f = img.astype(np.float64)
        return 0.299 * f[..., 2] + 0.587 * f[..., 1] + 0.114 * f[..., 0]

    x, z = y(a), y(b)

    def win_mean(v: np.ndarray) -> np.ndarray:
        return np.einsum("ijkl,kl->ij", sliding_window_view(v, (11, 11)), k)

    mx, mz = win_mean(x), win_mean(z)
    vx, vz, cxz = win_mean(x * x) - mx**2, win_mean(z * z) - mz**2, win_mean(x * z) - mx * mz
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float(np.mean((2 * mx * mz + c1) * (2 * cxz + c2) / ((mx**2 + mz**2 + c1) * (vx + vz + c2))))


def test_psnr_known_mse() -> None:
    a = np.zeros((32, 48, 3), np.uint8)
    b = a.copy()
    b[:16] = 10  # half the pixels off by 10 -> MSE 50
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50), abs=1e-9)
    assert psnr(a, a + 5) == pytest.approx(20 * math.log10(255 / 5), abs=1e-9)
    assert psnr(a, np.full_like(a, 255)) == pytest.approx(0.0, abs=1e-12)  # no uint8 wrap-around
    assert psnr(b, b) == math.inf
    with pytest.raises(ValueError):
        psnr(a, a[:-1])


def test_ssim_identical_and_flat_closed_form(faces: dict[str, list[np.ndarray]]) -> None:
    crop = next(iter(faces.values()))[0]
    assert ssim(crop, crop) == pytest.approx(1.0, abs=1e-9)
    # Flat images: variances and covariance vanish, SSIM is the luminance term alone.
    a, b = np.full((40, 40, 3), 100, np.uint8), np.full((40, 40, 3), 140, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 100 * 140 + c1) / (100**2 + 140**2 + c1), abs=1e-9)


def test_ssim_matches_numpy_reference_on_real_faces(faces: dict[str, list[np.ndarray]]) -> None:
    crops = [c for cs in faces.values() for c in cs][:4]
    for i, crop in enumerate(crops):
        bad = degrade(crop, "moderate", seed=i)
        got, want = ssim(crop, bad), reference_ssim(crop, bad)
        assert got == pytest.approx(want, abs=1e-6)
        assert 0.2 < got < 0.99
        # Constant shift: structure term is exactly 1, so SSIM < 1 only from the luminance term.
        low = (crop.astype(np.int16) * 200 // 255).astype(np.uint8)
        shifted = low + 30
        s = ssim(low, shifted)
        assert s == pytest.approx(reference_ssim(low, shifted), abs=1e-6)
        assert 0.9 < s < 1.0


def test_identity_distance_same_photo_vs_different_people(faces: dict[str, list[np.ndarray]]) -> None:
    ids = list(faces)
    assert len(ids) >= 5, "need several CelebA identities with detectable faces"
    crop = faces[ids[0]][0]
    assert identity_distance(crop, crop) == pytest.approx(0.0, abs=1e-6)
    jpeg = cv2.imdecode(cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 75])[1], cv2.IMREAD_COLOR)
    assert identity_distance(crop, jpeg) < 0.2
    different = [identity_distance(faces[ids[i]][0], faces[ids[i + 1]][0]) for i in range(len(ids) - 1)]
    same = [identity_distance(faces[i][0], faces[i][1]) for i in ids]
    print(f"identity distance: same person {np.mean(same):.3f}, different people {np.mean(different):.3f}")
    assert np.mean(different) > 0.5
    assert np.mean(same) < np.mean(different)


def test_landmark_distance(faces: dict[str, list[np.ndarray]]) -> None:
    crop = next(iter(faces.values()))[0]
    assert landmark_distance(crop, crop) == 0.0
    # Shift the face 3 px right: landmarks follow, error ~ 3 px / eye distance (~38 px at 128).
    move = np.float32([[1, 0, 3], [0, 1, 0]])
    shifted = cv2.warpAffine(crop, move, (128, 128), borderMode=cv2.BORDER_REFLECT101)
    d = landmark_distance(crop, shifted)
    assert 0.5 * 3 / 38.4 < d < 2.0 * 3 / 38.4
    assert landmark_distance(crop, degrade(crop, "mild", seed=0)) < d
    assert math.isnan(landmark_distance(crop, np.full_like(crop, 128)))  # blank: no face to measure
    assert math.isnan(landmark_distance(crop[:20, :20], crop[:20, :20]))  # too small


def clip_frames(root: Path, name: str, n: int) -> list[np.ndarray]:
    with av.open(str(root / "videos" / name)) as c:
        out = []
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="bgr24"))
            if len(out) == n:
                return out
    return out


def test_flicker(shared_data: Path) -> None:
    clip = "dreamtalk__data__style_clip__video__W009_front_neutral_level1_001.mp4"
    frames = clip_frames(shared_data, clip, 12)
    assert flicker([frames[0]] * 5) < 1e-3  # static video
    # A camera pan (2 px per frame) is motion, not flicker: flow compensation must remove it.
    base = frames[0]
    pan = [np.ascontiguousarray(base[8:-8, 8 + 2 * t:216 + 2 * t]) for t in range(8)]
    naive = np.mean([np.abs(pan[t].astype(float) - pan[t - 1]).mean() for t in range(1, 8)])
    assert flicker(pan) < 0.25 * naive
    # Per-frame noise on a real clip is flicker; measured with the clean clip's motion.
    rng = np.random.default_rng(0)
    noisy = [np.clip(f + rng.normal(0, 6, f.shape), 0, 255).astype(np.uint8) for f in frames]
    clean = flicker(frames)
    assert flicker(frames, reference=frames) == pytest.approx(clean)
    assert flicker(noisy, reference=frames) > clean + 3.0
    with pytest.raises(ValueError):
        flicker(frames[:1])


def test_identity_separability_tells_informative_from_collapsed_vectors() -> None:
    from enhancer.metrics import identity_separability

    rng = np.random.default_rng(0)
    people = rng.standard_normal((20, 32))
    offset = np.full(32, 50.0)  # a large shared offset, as a collapsing encoder has
    a = offset + people + 0.1 * rng.standard_normal((20, 32))
    b = offset + people + 0.1 * rng.standard_normal((20, 32))
    good = identity_separability(a, b)
    assert good["top1"] == 1.0 and good["auc"] > 0.99 and good["spread"] > 0.01  # ~sqrt(32) / (50 sqrt(32))
    noise = identity_separability(offset + rng.standard_normal((20, 32)), offset + rng.standard_normal((20, 32)))
    assert noise["top1"] < 0.5 and 0.3 < noise["auc"] < 0.7
    same = identity_separability(np.ones((5, 4)), np.ones((5, 4)))  # fully collapsed: chance, no spread
    assert same["auc"] == 0.5 and same["spread"] == 0.0
    with pytest.raises(ValueError):
        identity_separability(a, b[:3])


@pytest.fixture(scope="module")
def face_crops(shared_data: Path) -> list[np.ndarray]:
    """A few real CelebA face crops at the eval's 128x128 (resized, not aligned: texture is what counts)."""
    paths = [ps[0] for ps in list(celeba_by_identity(shared_data).values())[:3]]
    return [cv2.resize(read_image(shared_data / "celeba" / p), (128, 128), interpolation=cv2.INTER_AREA)
            for p in paths]


def test_hf_metrics_truth_blur_and_sharpen(face_crops: list[np.ndarray]) -> None:
    for crop in face_crops:
        assert hf_energy(crop, crop) == pytest.approx(1.0, abs=1e-6)
        assert hf_corr(crop, crop) == pytest.approx(1.0, abs=1e-6)
        blurred = cv2.GaussianBlur(crop, (0, 0), 2.0)
        assert hf_energy(blurred, crop) < 0.5  # Gaussian sigma 2 keeps < 30 % amplitude past 0.125 c/px
        assert 0 < hf_corr(blurred, crop) < 1
        mild = cv2.GaussianBlur(crop, (0, 0), 1.0)  # less blur: more of the band kept, better aligned
        assert hf_energy(blurred, crop) < hf_energy(mild, crop) < 1
        assert hf_corr(blurred, crop) < hf_corr(mild, crop) < 1
        sharpened = cv2.addWeighted(crop, 2.0, cv2.GaussianBlur(crop, (0, 0), 1.5), -1.0, 0)  # unsharp mask
        assert hf_energy(sharpened, crop) > 1
        assert hf_energy(crop, blurred) == pytest.approx(1 / hf_energy(blurred, crop))
    with pytest.raises(ValueError):
        hf_energy(face_crops[0], face_crops[0][:-1])


def test_hf_corr_of_independent_noise_is_near_zero(face_crops: list[np.ndarray]) -> None:
    rng = np.random.default_rng(0)
    for crop in face_crops:
        noise = rng.integers(0, 256, crop.shape, dtype=np.uint8)
        assert abs(hf_corr(noise, crop)) < 0.1
        assert hf_energy(noise, crop) > 1  # lots of detail, none of it right
    flat = np.full((64, 64, 3), 90, np.uint8)
    assert math.isnan(hf_energy(face_crops[0][:64, :64], flat)) and math.isnan(hf_corr(flat, flat))


def test_hf_corr_is_the_pixel_pearson_of_the_high_passed_luma(face_crops: list[np.ndarray]) -> None:
    """Independent transcription: window, FFT mask at 1/4 Nyquist, back to pixels, np.corrcoef."""

    def high_pass(img: np.ndarray) -> np.ndarray:
        f = img.astype(np.float64)
        y = 0.299 * f[..., 2] + 0.587 * f[..., 1] + 0.114 * f[..., 0]
        y = (y - y.mean()) * np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
        fy, fx = np.meshgrid(np.fft.fftfreq(y.shape[0]), np.fft.fftfreq(y.shape[1]), indexing="ij")
        return np.fft.ifft2(np.fft.fft2(y) * (np.sqrt(fx**2 + fy**2) > 0.125)).real

    a, b = face_crops[0], degrade(face_crops[0], "moderate", seed=0)
    ha, hb = high_pass(a), high_pass(b)
    assert hf_corr(b, a) == pytest.approx(float(np.corrcoef(ha.ravel(), hb.ravel())[0, 1]), abs=1e-9)
    assert hf_energy(b, a) == pytest.approx(float((hb**2).sum() / (ha**2).sum()), rel=1e-9)
