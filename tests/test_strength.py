"""Adaptive strength: sharper crops keep less of the generator's change, and the pipeline applies
it per face, smoothed per track, between the input and the full output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engines.realdata import degraded_crops
from enhancer.degrade import degrade
from enhancer.pipeline import FramePipeline
from enhancer.strength import DEFAULT_STRENGTH, StrengthConfig, blend, laplacian_variance, strength
from enhancer.weights import WEIGHTS_DIR, read_metadata

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module")
def clean(shared_data: Path) -> np.ndarray:
    """Real aligned CelebA crops, only lightly touched (mild preset, the sharpest a call gets)."""
    return degraded_crops(4, root=shared_data, preset="mild")


def test_more_degraded_crops_get_more_strength(clean: np.ndarray) -> None:
    severe = np.stack([degrade(c, "severe", i) for i, c in enumerate(clean)])
    assert (laplacian_variance(severe) < laplacian_variance(clean)).all()
    w_clean, w_severe = strength(clean, DEFAULT_STRENGTH), strength(severe, DEFAULT_STRENGTH)
    assert (w_severe > w_clean).all()
    assert ((w_clean >= DEFAULT_STRENGTH.lo) & (w_severe <= DEFAULT_STRENGTH.hi)).all()
    flat = np.full((1, 128, 128, 3), 128, np.uint8)  # no detail at all: full strength, clipped
    assert strength(flat, DEFAULT_STRENGTH)[0] == DEFAULT_STRENGTH.hi


def test_blend_ends_and_middle(clean: np.ndarray) -> None:
    lq, out = clean[:2], 255 - clean[:2]
    assert np.array_equal(blend(lq, out, np.zeros(2)), lq)
    assert np.array_equal(blend(lq, out, np.ones(2)), out)
    mid = blend(lq, out, np.array([0.5, 0.5])).astype(int)
    assert np.abs(mid - 127.5).max() <= 1  # lq + (255 - 2 lq) / 2


def test_fit_is_for_the_packaged_student_and_matches_its_record() -> None:
    """A retrained student must be refitted (benchmarks/fit_strength.py): the fit names its model."""
    weights = WEIGHTS_DIR / "student.safetensors"
    if not weights.is_file():
        pytest.skip("no packaged student")
    assert DEFAULT_STRENGTH.fitted_for == read_metadata(weights)["model_id"]
    fits = sorted(RESULTS.glob("strength-*.json"))
    assert fits, "benchmarks/results/strength-*.json missing"
    rec = json.loads(fits[-1].read_text())
    assert rec["model_id"] == DEFAULT_STRENGTH.fitted_for
    assert (rec["fit"]["intercept"], rec["fit"]["slope"]) == (DEFAULT_STRENGTH.intercept, DEFAULT_STRENGTH.slope)
    for preset, r in rec["check_sample"].items():  # on held-back training identities: never worse than the input
        assert r["psnr_adaptive"] >= r["psnr_input"], preset


class Inverting:
    """An engine whose output is far from its input, so the blend is visible in every pixel."""

    size = 128
    null_identity = None

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        return 255 - crops


def test_pipeline_applies_smoothed_strength_per_track(shared_data: Path) -> None:
    from enhancer.imageio import read_image

    img = read_image(sorted((shared_data / "celeba").rglob("*.jpg"))[0])
    full = FramePipeline(Inverting())
    half = FramePipeline(Inverting(), strength=StrengthConfig(intercept=0.5, slope=0.0))
    a, b = full.process(img, 0.0), half.process(img, 0.0)
    if not a.faces:
        pytest.skip("no face found in the first CelebA photo")
    changed_full = np.abs(a.frame.astype(int) - img).sum()
    changed_half = np.abs(b.frame.astype(int) - img).sum()
    assert 0.3 < changed_half / changed_full < 0.7
    assert list(half._weights.values()) == [pytest.approx(0.5)]
    # a sudden change of the raw weight reaches the output gradually, not in one frame
    half.strength = StrengthConfig(intercept=1.0, slope=0.0)
    half.process(img, 1 / 30)
    w = next(iter(half._weights.values()))
    assert 0.5 < w < 1.0


def test_strength_option_values_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from enhancer.cli import main
    from enhancer.strength import parse_strength

    assert parse_strength("auto") == DEFAULT_STRENGTH and parse_strength("FULL") is None
    fixed = parse_strength("0.25")
    assert fixed is not None and strength(np.zeros((2, 128, 128, 3), np.uint8), fixed).tolist() == [0.25, 0.25]
    for bad in ("1.5", "-0.1", "strong"):
        with pytest.raises(ValueError):
            parse_strength(bad)
    with pytest.raises(SystemExit) as e:
        main(["enhance", "in.png", "-o", "out.png", "--strength", "strong"])
    assert e.value.code == 2 and "strength must be auto, full or a number" in capsys.readouterr().err
