"""Degradation presets on real face crops: ordered by severity, deterministic, shape-preserving."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from enhancer.align import alignment_matrix, warp_crops
from enhancer.degrade import (
    CALL_FRAME_SIDE,
    PRESETS,
    Degradation,
    codec_roundtrip,
    degrade,
    degrade_call,
    degrade_small,
)
from enhancer.detect import detect_faces
from enhancer.imageio import read_image
from enhancer.metrics import psnr

ORDER = ["mild", "moderate", "severe"]


@pytest.fixture(scope="module")
def crops(shared_data: Path) -> list[np.ndarray]:
    """Aligned 128 crops of six different CelebA identities."""
    with (shared_data / "celeba" / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "crops"]
    out, used = [], set()
    for r in rows:
        if r["identity"] in used:
            continue
        img = read_image(shared_data / "celeba" / r["path"])
        dets = detect_faces(img)
        if len(dets) == 1:
            out.append(warp_crops(img, alignment_matrix(dets[0].landmarks, 128)[None], 128)[0])
            used.add(r["identity"])
        if len(out) == 6:
            break
    assert len(out) == 6
    return out


def test_presets_listed_in_order() -> None:
    assert list(PRESETS) == ORDER


@pytest.mark.parametrize("seed", [0, 1])
def test_psnr_falls_with_severity(crops: list[np.ndarray], seed: int) -> None:
    table = np.array([[psnr(c, degrade(c, p, seed=seed)) for p in ORDER] for c in crops])
    print(f"\nPSNR dB (rows: crops; cols: {ORDER}), seed {seed}:\n{np.round(table, 2)}")
    assert np.all(np.diff(table, axis=1) < 0), "every crop: mild > moderate > severe"
    assert np.all(table[:, 0] < 40), "even mild must visibly degrade"


def test_deterministic_given_seed(crops: list[np.ndarray]) -> None:
    for c in crops[:3]:
        a, b = degrade(c, "severe", seed=7), degrade(c, "severe", seed=7)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, degrade(c, "severe", seed=8))
        # a Generator passed in is consumed in the same order as a seed
        np.testing.assert_array_equal(a, degrade(c, "severe", seed=np.random.default_rng(7)))


def test_odd_sized_whole_image_keeps_shape(shared_data: Path) -> None:
    with (shared_data / "celeba" / "labels.csv").open(newline="") as fh:
        rel = next(r["path"] for r in csv.DictReader(fh) if r["kind"] == "wild")
    img = read_image(shared_data / "celeba" / rel)[:213, :199]
    out = degrade(img, "moderate", seed=0)
    assert out.shape == img.shape and out.dtype == np.uint8
    small = degrade_small(img, "moderate", seed=0)
    assert small.shape == (round(213 * 0.35), round(199 * 0.35), 3)
    with pytest.raises(ValueError, match="unknown preset"):
        degrade(img, "apocalyptic")


@pytest.mark.parametrize("codec,low_q,high_q", [("h264", 10, 45), ("vp8", 8, 60)])
def test_codec_quantiser_controls_loss(crops: list[np.ndarray], codec: str, low_q: int, high_q: int) -> None:
    c = crops[0]
    fine, coarse = codec_roundtrip(c, codec, low_q), codec_roundtrip(c, codec, high_q)
    assert fine.shape == c.shape
    assert psnr(c, fine) > 35.0
    assert psnr(c, coarse) < psnr(c, fine) - 5.0


def test_call_degradation_is_the_frames_degradation_seen_through_the_crop(crops: list[np.ndarray]) -> None:
    """``degrade_call`` claims to be what degrading the whole 640x480 frame does to a face that is
    1/face_scale times the crop's side in it. Checked against exactly that: the face (brought up to
    its size in the frame) placed in a frame of the call's short side, the frame degraded with
    ``degrade``, the face cut out and brought back to the crop's size. Without the codec and noise
    (random draws) the two agree away from the borders."""
    spec = Degradation(blur_sigma=1.3, scale=0.25, noise_sigma=0.0, h264_qp=38, vp8_q=52, codec="none")
    f = 0.4  # 320-px face, at a whole multiple of 1/scale in the frame: the downscale's grid lines up
    for c in crops[:3]:
        n = round(128 / f)
        face = cv2.resize(c, (n, n), interpolation=cv2.INTER_CUBIC)
        top, left = (CALL_FRAME_SIDE - n) // 2, (640 - n) // 2
        frame = cv2.copyMakeBorder(face, top, CALL_FRAME_SIDE - n - top, left, 640 - n - left, cv2.BORDER_REFLECT_101)
        seen = cv2.resize(degrade(frame, spec)[top:top + n, left:left + n], (128, 128), interpolation=cv2.INTER_AREA)
        call = degrade_call(c, spec, face_scale=f)
        inner = (slice(32, 96), slice(32, 96))
        diff = np.abs(call[inner].astype(np.float32) - seen[inner].astype(np.float32))
        assert call.shape == c.shape and call.dtype == np.uint8
        assert diff.mean() < 0.25, diff.mean()
        # and it is not the preset applied to the crop: the frame's blur is 3.75 x 0.4 = 1.5x stronger
        # while its downscale, 0.25 of the frame, is 0.625 of the crop (1.5-2.0 grey levels apart here)
        assert np.abs(call[inner].astype(np.float32) - degrade(c, spec)[inner].astype(np.float32)).mean() > 1.0


def test_call_degradation_deterministic_and_ordered(crops: list[np.ndarray]) -> None:
    for c in crops[:2]:
        np.testing.assert_array_equal(degrade_call(c, "severe", 3), degrade_call(c, "severe", 3))
    table = np.array([[psnr(c, degrade_call(c, p, seed=1, face_scale=0.45)) for p in ORDER] for c in crops])
    assert np.all(np.diff(table, axis=1) < 0), table
