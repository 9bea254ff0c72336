"""Reference detail transfer (enhancer/detail_transfer.py) on constructed crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from enhancer.detail_transfer import TransferConfig, match_weights, prepare_references, transfer_detail
from enhancer.metrics import hf_corr, psnr


def _face_like(seed: int) -> np.ndarray:
    """A 128x128 crop with structure at every scale: smooth shading plus fine texture."""
    rng = np.random.default_rng(seed)
    coarse = cv2.resize(rng.uniform(60, 200, (8, 8, 3)).astype(np.float32), (128, 128), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 25, (128, 128, 3)).astype(np.float32), (0, 0), 0.7)
    return np.clip(coarse + fine, 0, 255).astype(np.uint8)


def test_zero_gain_returns_the_crop_untouched() -> None:
    crop = _face_like(0)
    cfg = TransferConfig(alpha=0.0)
    assert transfer_detail(crop, prepare_references(crop[None], cfg), cfg) is crop


def test_a_matching_reference_brings_back_the_truths_detail() -> None:
    truth = _face_like(1)
    blurred = cv2.GaussianBlur(truth, (0, 0), 1.5)  # what a restorer that averages returns
    cfg = TransferConfig()
    out = transfer_detail(blurred, prepare_references(truth[None], cfg), cfg)
    assert hf_corr(out, truth) > hf_corr(blurred, truth) + 0.2
    assert psnr(truth, out) > psnr(truth, blurred)


def test_a_reference_that_does_not_match_is_not_used() -> None:
    truth, stranger = _face_like(2), _face_like(3)
    cfg = TransferConfig()
    refs = prepare_references(np.stack([truth, stranger]), cfg)
    w = match_weights(cv2.GaussianBlur(truth, (0, 0), 1.5), refs, cfg)
    assert w.shape == (2, 128, 128)
    assert float(w.sum(0).max()) < 1.0  # the null keeps a share everywhere
    assert float(w[0].mean()) > 0.4 and float(w[1].mean()) < float(w[0].mean()) / 3
    alone = transfer_detail(truth, prepare_references(stranger[None], cfg), cfg)
    assert np.abs(alone.astype(int) - truth.astype(int)).mean() < 1.0


def test_references_of_another_size_are_refused() -> None:
    cfg = TransferConfig()
    with pytest.raises(ValueError, match="differ in size"):
        transfer_detail(_face_like(4), prepare_references(_face_like(5)[None, :64, :64], cfg), cfg)
    with pytest.raises(ValueError):
        TransferConfig(alpha=-1.0)
