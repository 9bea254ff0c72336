"""Reference detail transfer (enhancer/detail_transfer.py) on constructed crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.synthetic import face_like

from enhancer.detail_transfer import TransferConfig, match_weights, prepare_references, transfer_detail, transfer_gain
from enhancer.metrics import hf_corr, psnr


def test_zero_gain_returns_the_crop_untouched() -> None:
    crop = face_like(0)
    cfg = TransferConfig(alpha=0.0)
    assert transfer_detail(crop, crop, prepare_references(crop[None], cfg)) is crop


def test_a_matching_reference_brings_back_the_truths_detail() -> None:
    truth = face_like(1)
    blurred = cv2.GaussianBlur(truth, (0, 0), 1.5)  # what a restorer that averages returns
    cfg = TransferConfig()
    degraded = cv2.GaussianBlur(truth, (0, 0), 3.0)  # what arrived: no detail left, full gain
    out = transfer_detail(blurred, degraded, prepare_references(truth[None], cfg))
    assert hf_corr(out, truth) > hf_corr(blurred, truth) + 0.2
    assert psnr(truth, out) > psnr(truth, blurred)


def test_the_gain_follows_how_much_detail_the_face_arrived_with() -> None:
    """Full gain for a face that arrived smeared, none for one that arrived sharp: adding the
    references' detail to a face that has its own makes it worse (mild crops lost 0.7 dB)."""
    truth = face_like(6)
    cfg = TransferConfig(alpha=2.0)
    assert transfer_gain(cv2.GaussianBlur(truth, (0, 0), 3.0), cfg) == pytest.approx(2.0)
    assert transfer_gain(truth, cfg) == 0.0
    middle = [transfer_gain(cv2.GaussianBlur(truth, (0, 0), s), cfg) for s in (0.8, 1.0, 1.2, 1.5, 2.0)]
    assert any(0 < g < 2 for g in middle) and middle == sorted(middle)
    refs = prepare_references(face_like(7)[None], cfg)
    assert transfer_detail(truth, truth, refs) is truth  # arrived sharp: untouched


def test_a_reference_that_does_not_match_is_not_used() -> None:
    truth, stranger = face_like(2), face_like(3)
    cfg = TransferConfig()
    refs = prepare_references(np.stack([truth, stranger]), cfg)
    w = match_weights(cv2.GaussianBlur(truth, (0, 0), 1.5), refs)
    assert w.shape == (2, 128, 128)
    assert float(w.sum(0).max()) < 1.0  # the null keeps a share everywhere
    assert float(w[0].mean()) > 0.4 and float(w[1].mean()) < float(w[0].mean()) / 3
    alone = transfer_detail(truth, cv2.GaussianBlur(truth, (0, 0), 3.0), prepare_references(stranger[None], cfg))
    assert np.abs(alone.astype(int) - truth.astype(int)).mean() < 1.0


def test_references_of_another_size_are_refused() -> None:
    cfg = TransferConfig()
    with pytest.raises(ValueError, match="differ in size"):
        transfer_detail(face_like(4), face_like(4), prepare_references(face_like(5)[None, :64, :64], cfg))
    with pytest.raises(ValueError):
        TransferConfig(alpha=-1.0)


def test_pipeline_adds_the_enrolled_persons_detail_to_their_face_only(shared_data) -> None:
    """A real degraded photo through the frame pipeline (bicubic engine, so only the transfer differs):
    with an identity the face changes and the rest of the frame does not; without one, the
    reference detail is not used."""
    from conftest import celeba_by_identity

    from engines.bicubic import BicubicEngine
    from enhancer.dataprep import align_one
    from enhancer.identity_store import IDENTITY_SHAPE
    from enhancer.pipeline import FramePipeline

    paths = next(v for v in celeba_by_identity(shared_data, "wild").values() if len(v) >= 4)
    root = shared_data / "celeba"
    refs = np.stack([c for c in (align_one(root / p, 128, 20.0)[0] for p in paths[1:4]) if c is not None])
    frame = cv2.GaussianBlur(cv2.imread(str(root / paths[0])), (0, 0), 2.5)  # a face that arrives smeared
    # a gate wide open (its bounds have their own test): this checks where the detail goes
    prepared = prepare_references(refs, TransferConfig(alpha=2.0, detail_full=6.0, detail_none=9.0))
    ident = np.zeros(IDENTITY_SHAPE, np.float32)

    def run(identity, detail) -> tuple[np.ndarray, int]:
        r = FramePipeline(BicubicEngine(), identity, reference_detail=detail).process(frame)
        return r.frame, r.faces

    plain, faces = run(ident, None)
    assert faces == 1
    with_detail, _ = run(ident, prepared)
    changed = np.abs(with_detail.astype(int) - plain.astype(int)).max(-1) > 0
    assert changed.mean() > 0.01  # the face got detail
    ys, xs = np.nonzero(changed)
    h, w = frame.shape[:2]
    assert (ys.max() - ys.min()) < 0.9 * h and (xs.max() - xs.min()) < 0.9 * w  # only around the face
    no_identity, _ = run(None, prepared)
    assert np.array_equal(no_identity, run(None, None)[0])


def test_an_identity_enrolled_from_video_takes_the_video_dial() -> None:
    """``video_alpha`` applies to identities whose stored source is a clip or a webcam, and only to them."""
    from enhancer.commands.assemble import reference_detail
    from enhancer.identity_store import CAMERA_SOURCE, VIDEO_SOURCE

    crops = np.stack([face_like(s) for s in range(2)])
    cfg = TransferConfig(alpha=5.0, video_alpha=2.0)
    alphas = {src: reference_detail(crops, 128, cfg, "p", src).cfg.alpha
              for src in ("images", "photos", VIDEO_SOURCE, CAMERA_SOURCE, "")}
    assert alphas == {"images": 5.0, "photos": 5.0, VIDEO_SOURCE: 2.0, CAMERA_SOURCE: 2.0, "": 5.0}
    assert reference_detail(crops, 128, TransferConfig(alpha=5.0), "p", VIDEO_SOURCE).cfg.alpha == 5.0
    assert reference_detail(crops, 128, TransferConfig(alpha=5.0, video_alpha=0.0), "p", CAMERA_SOURCE) is None
    with pytest.raises(ValueError):
        TransferConfig(video_alpha=-1.0)
