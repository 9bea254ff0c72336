"""Alignment and paste-back on real faces."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from enhancer.align import (
    TEMPLATE5,
    NativeDetail,
    alignment_matrix,
    estimate_similarity,
    feather_mask,
    invert_affine,
    keep_native,
    match_colour,
    paste_back,
    transform_points,
    warp_crops,
)
from enhancer.detect import detect_faces
from enhancer.imageio import read_image
from enhancer.metrics import aligned_landmarks, psnr

SIZE = 128


def _scale(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


@pytest.fixture(scope="module")
def unit_scale_face(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    """(photo, 5 landmarks) of the CelebA wild photo whose face needs the least resampling at 128."""
    with (shared_data / "celeba" / "labels.csv").open(newline="") as fh:
        wild = [r["path"] for r in csv.DictReader(fh) if r["kind"] == "wild"][:60:3]
    best = None
    for rel in wild:
        img = read_image(shared_data / "celeba" / rel)
        dets = detect_faces(img)
        if len(dets) != 1:
            continue
        off = abs(np.log(_scale(alignment_matrix(dets[0].landmarks, SIZE))))
        if best is None or off < best[0]:
            best = (off, img, dets[0].landmarks)
    assert best is not None, "no single-face photo found among the sampled CelebA wild images"
    assert best[0] < np.log(1.15), f"closest face still needs {np.exp(best[0]):.2f}x resampling"
    return best[1], best[2]


def test_similarity_recovers_known_transform(unit_scale_face: tuple[np.ndarray, np.ndarray]) -> None:
    _, lm = unit_scale_face
    a, s = np.deg2rad(17.0), 1.7
    known = np.array([[s * np.cos(a), -s * np.sin(a), 12.5], [s * np.sin(a), s * np.cos(a), -40.0]])
    np.testing.assert_allclose(estimate_similarity(lm, transform_points(known, lm)), known, atol=1e-9)
    m = alignment_matrix(lm, SIZE)
    np.testing.assert_allclose(invert_affine(m) @ np.vstack([m, [0, 0, 1]]), np.eye(3)[:2], atol=1e-9)
    with pytest.raises(ValueError):
        estimate_similarity(np.ones((5, 2)), TEMPLATE5)


def test_aligned_crop_puts_landmarks_on_template(unit_scale_face: tuple[np.ndarray, np.ndarray]) -> None:
    img, lm = unit_scale_face
    crop = warp_crops(img, alignment_matrix(lm, SIZE)[None], SIZE)[0]
    assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
    found = aligned_landmarks(crop)
    assert found is not None
    # dlib on the crop agrees with the template to a few percent of the crop side
    assert np.linalg.norm(found / SIZE - TEMPLATE5, axis=1).mean() < 0.04


def test_feather_mask_shape() -> None:
    m = feather_mask(SIZE)
    assert m.dtype == np.float32 and m.shape == (SIZE, SIZE)
    assert m.min() >= 0 and m.max() <= 1 + 1e-6
    assert m[SIZE // 2, SIZE // 2] == pytest.approx(1.0, abs=1e-5)
    assert m[0, 0] < 1e-3 and m[0, SIZE // 2] < 0.01  # no hard edge at the crop border


Face = tuple[np.ndarray, np.ndarray]


def test_paste_back_of_unchanged_crop_reproduces_frame(unit_scale_face: Face) -> None:
    img, lm = unit_scale_face
    m = alignment_matrix(lm, SIZE)
    crop = warp_crops(img, m[None], SIZE)
    out = paste_back(img, crop, m[None])
    h, w = img.shape[:2]
    alpha = cv2.warpAffine(feather_mask(SIZE), invert_affine(m), (w, h), flags=cv2.INTER_LINEAR)
    inside, outside = alpha > 0.999, alpha == 0
    assert inside.sum() > 0.15 * (SIZE / _scale(m)) ** 2  # the flat top of the mask is ~25 % of the crop
    # The only loss is two bilinear resamplings at ~unit scale.
    err = np.abs(out.astype(np.int16) - img)[inside]
    print(f"paste-back of unchanged crop: scale {_scale(m):.3f}, mean |err| {err.mean():.2f}, "
          f"PSNR inside mask {psnr(out[inside], img[inside]):.1f} dB")
    assert err.mean() < 2.5
    assert psnr(out[inside], img[inside]) > 35.0
    # ... and exactly that loss: the same double warp done by hand agrees to one grey level.
    twice = cv2.warpAffine(crop[0], invert_affine(m), (w, h), flags=cv2.INTER_LINEAR)
    assert np.abs(out.astype(np.int16) - twice)[inside].max() <= 1
    np.testing.assert_array_equal(out[outside], img[outside])


def reference_paste(frame: np.ndarray, crop: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Exact float blend over the whole frame (the definition paste_back approximates)."""
    h, w = frame.shape[:2]
    inv = invert_affine(m)
    face = cv2.warpAffine(crop, inv, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(feather_mask(crop.shape[0]), inv, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    f = frame.astype(np.float32)
    return np.clip(f + alpha * (face.astype(np.float32) - f), 0, 255).round().astype(np.uint8)


@pytest.mark.parametrize("size", [128, 512])
def test_paste_back_matches_float_blend(unit_scale_face: tuple[np.ndarray, np.ndarray], size: int) -> None:
    img, lm = unit_scale_face
    # rotate the frame so the face is tilted, and restore the crop into something visibly different
    h, w = img.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 23.0, 1.0)
    frame = cv2.warpAffine(img, rot, (w, h), borderMode=cv2.BORDER_REFLECT101)
    m = alignment_matrix(transform_points(rot, lm), size)
    crops = warp_crops(frame, m[None], size)
    restored = cv2.addWeighted(cv2.GaussianBlur(crops[0], (0, 0), 3), 1.0, crops[0], 0.0, 25)[None]
    out = paste_back(frame, restored, m[None])
    want = reference_paste(frame, restored[0], m)
    diff = np.abs(out.astype(np.int16) - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # with the originals only the colour-matched change is added: frame + warp(mask * (matched - original))
    matched = match_colour(restored, crops, feather_mask(size))
    out_c = paste_back(frame, restored, m[None], originals=crops)
    h, w = frame.shape[:2]
    change = (matched[0].astype(np.float32) - crops[0]) * feather_mask(size)[..., None]
    moved = cv2.warpAffine(change, invert_affine(m), (w, h), flags=cv2.INTER_LINEAR)
    want_c = np.clip(frame + moved, 0, 255).round().astype(np.uint8)
    diff_c = np.abs(out_c.astype(np.int16) - want_c)
    assert diff_c.max() <= 1 and (diff_c > 0).mean() < 0.001
    assert np.abs(out_c.astype(np.int16) - frame).max() > 20  # the change did arrive


def _high_pass_energy(img: np.ndarray, box: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = box
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)[y0:y1, x0:x1]
    return float(((g - cv2.GaussianBlur(g, (0, 0), 1.0)) ** 2).mean())


def test_pasting_the_change_keeps_a_large_face_native_detail(shared_data: Path) -> None:
    """A webcam-sized face (about 3x the crop's side in a 640x480 frame of a real clip): pasting the
    change of an unchanged crop gives the frame back exactly, while replacing the face with the
    upsampled crop loses most of its fine detail; with a real change, the frame's own detail stays."""
    from benchmarks.harness.clips import load_clip

    clip = shared_data / "videos" / "LivePortrait__assets__examples__driving__d6.mp4"
    frame = load_clip(clip, 1, (640, 480))[0][0]
    faces = detect_faces(frame)
    assert len(faces) == 1
    m = alignment_matrix(faces[0].landmarks, SIZE)
    assert _scale(m) < 0.5  # the face is over twice the crop's side in the frame
    crops = warp_crops(frame, m[None], SIZE)
    np.testing.assert_array_equal(paste_back(frame, crops, m[None], originals=crops), frame)
    inner = transform_points(invert_affine(m), np.array([[0.3, 0.3], [0.7, 0.7]]) * SIZE)
    box = (*np.floor(inner[0]).astype(int), *np.ceil(inner[1]).astype(int))
    native = _high_pass_energy(frame, box)
    replaced = _high_pass_energy(paste_back(frame, crops, m[None]), box)
    print(f"face scale {_scale(m):.2f}: fine-detail energy native {native:.2f}, replaced {replaced:.2f}")
    assert replaced < 0.6 * native
    # a real change (a brightened, smoothed crop): the frame's fine detail survives under it
    restored = cv2.GaussianBlur(crops[0], (0, 0), 1.5)[None]
    restored = np.clip(restored.astype(np.int16) + 15, 0, 255).astype(np.uint8)
    changed = paste_back(frame, restored, m[None], originals=crops)
    assert _high_pass_energy(changed, box) > 0.3 * native > _high_pass_energy(paste_back(frame, restored, m[None]), box)


def test_match_colour_moves_masked_mean(unit_scale_face: tuple[np.ndarray, np.ndarray]) -> None:
    img, lm = unit_scale_face
    m = alignment_matrix(lm, SIZE)
    crops = warp_crops(img, m[None], SIZE)
    tinted = np.clip(crops.astype(np.int16) + np.array([-12, 5, 20]), 0, 255).astype(np.uint8)
    mask = feather_mask(SIZE)
    out = match_colour(tinted, crops, mask)
    w = mask[..., None]
    f = tinted.astype(np.float32)
    shift = ((crops * w).sum((1, 2)) - (f * w).sum((1, 2))) / w.sum()
    want = np.clip(f + shift[:, None, None, :], 0, 255).round().astype(np.uint8)
    np.testing.assert_array_equal(out, want)
    mean_out = (out * w).sum((1, 2)) / w.sum()
    mean_ref = (crops * w).sum((1, 2)) / w.sum()
    assert np.abs(mean_out - mean_ref).max() < 1.0


def test_keep_native_ramps_with_the_arriving_detail() -> None:
    cfg = NativeDetail(none=3.5, full=4.5)
    np.testing.assert_allclose(keep_native(np.array([2.0, 3.5, 4.0, 4.5, 7.0]), cfg), [0, 0, 0.5, 1, 1])


def test_keep_native_is_a_dial_from_replacing_to_the_whole_change(shared_data: Path) -> None:
    """0 is the replacing paste (to a grey level), 1 the change alone, and a share between lies between."""
    from benchmarks.harness.clips import load_clip

    frame = load_clip(shared_data / "videos" / "LivePortrait__assets__examples__driving__d6.mp4", 1, (640, 480))[0][0]
    m = alignment_matrix(detect_faces(frame)[0].landmarks, SIZE)[None]
    crops = warp_crops(frame, m, SIZE)
    restored = np.clip(cv2.GaussianBlur(crops[0], (0, 0), 2.0).astype(np.int16) + 20, 0, 255).astype(np.uint8)[None]
    replaced = paste_back(frame, match_colour(restored, crops, feather_mask(SIZE)), m)
    none = paste_back(frame, restored, m, crops, np.zeros(1, np.float32))
    whole = paste_back(frame, restored, m, crops, np.ones(1, np.float32))
    half = paste_back(frame, restored, m, crops, np.full(1, 0.5, np.float32))
    assert np.abs(none.astype(np.int16) - replaced).max() <= 1
    np.testing.assert_array_equal(whole, paste_back(frame, restored, m, crops))
    mid = (none.astype(np.float32) + whole) / 2
    assert np.abs(half - mid).max() <= 1.0
    assert np.abs(whole.astype(np.int16) - none).max() > 10  # the native detail is a visible difference
