"""The shipped student improves faces, on real held-out people: a small fixed-seed run of the
evaluation (12 validation identities, severe, 4 references) must show it beats bicubic by a
clear margin, puts detail back, and that personalisation helps identity (closer to the person
than the generic mode, and than someone else's references). Margins sit well below what the
full evaluation measures (docs/results.md), so only a real regression fails them."""

from __future__ import annotations

from pathlib import Path

import pytest

from enhancer.evaluate import EvalConfig, evaluate


@pytest.fixture(scope="module")
def result(shared_data: Path) -> dict:
    return evaluate(EvalConfig(data=str(shared_data / "celeba"), model="student", preset="severe", refs=4,
                               limit_identities=12, max_tests=2, seed=0, strength="adaptive"))


def test_student_beats_bicubic_and_puts_detail_back(result: dict) -> None:
    m = result["methods"]
    assert m["personalized"]["psnr"] > m["bicubic"]["psnr"] + 0.5
    assert m["generic"]["psnr"] > m["bicubic"]["psnr"] + 0.5
    assert m["personalized"]["hf_energy"] > 2 * m["bicubic"]["hf_energy"]
    assert m["personalized"]["hf_corr"] > m["bicubic"]["hf_corr"] + 0.1


def test_personalisation_brings_the_face_closer_to_the_person(result: dict) -> None:
    m = result["methods"]
    assert m["personalized"]["id_distance"] < m["generic"]["id_distance"] - 0.01
    assert m["personalized"]["id_distance"] < m["wrong_identity"]["id_distance"] - 0.01
    assert result["win_rate"]["personalized_vs_generic"] >= 0.6
