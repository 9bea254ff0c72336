"""benchmarks/studies/identity_headroom.py must restore exactly what `likeness eval` restores (same people,
photos, degradation seeds and noise), so its oracle rows are comparable with the eval's."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.studies.identity_headroom import METHODS, headroom
from enhancer.evaluate import EvalConfig, evaluate


def test_headroom_matches_eval_and_reports_every_method(shared_data: Path) -> None:
    cfg = EvalConfig(data=str(shared_data / "celeba"), model="student", refs=2, limit_identities=2, max_tests=2)
    h, e = headroom(cfg, guidance=(1.0, 2.0)), evaluate(cfg)
    assert h["counts"]["test_images"] == e["counts"]["test_images"] == 4
    for m in ("generic", "personalized"):
        assert h["id_distance"][m] == pytest.approx(e["methods"][m]["id_distance"], abs=1e-9)
    assert h["id_distance"]["bicubic"] == pytest.approx(e["methods"]["bicubic"]["id_distance"], abs=1e-9)
    assert set(h["win_rate_vs_generic"]) == {*METHODS[1:], "guided_1", "guided_2"}
    # guidance at 1 is the personalised output itself; at 2 it is something else
    assert h["id_distance"]["guided_1"] == pytest.approx(h["id_distance"]["personalized"], abs=1e-9)
    assert h["id_distance"]["guided_2"] != pytest.approx(h["id_distance"]["personalized"], abs=1e-6)
    assert h["win_rate_vs_generic"]["personalized"] == pytest.approx(e["win_rate"]["personalized_vs_generic"])
