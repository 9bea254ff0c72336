"""`likeness eval` on real held-out photos: the JSON keys others build on, and ``--ref-pool``
keeping the test photos fixed while the number of references changes (a fair few-shot curve)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from test_cli_foundation import assert_one_line_error, run_cli

from enhancer.evaluate import METHODS, EvalConfig, evaluate


def _run(shared_data: Path, **kw) -> dict:
    cfg = EvalConfig(data=str(shared_data / "celeba"), model="student", limit_identities=3, max_tests=2, **kw)
    return evaluate(cfg)


@pytest.fixture(scope="module")
def runs(shared_data: Path) -> dict[str, dict]:
    return {"refs1_pool4": _run(shared_data, refs=1, ref_pool=4), "refs2_pool4": _run(shared_data, refs=2, ref_pool=4),
            "refs1": _run(shared_data, refs=1)}


def test_json_has_the_documented_keys_and_sane_values(runs: dict[str, dict]) -> None:
    r = runs["refs1_pool4"]
    assert {"config", "counts", "methods", "win_rate", "wall_time_s"} <= set(r)
    assert r["counts"]["identities"] == 3 and r["counts"]["test_images"] == 6
    assert {"photos", "identities_too_few_photos"} <= set(r["counts"]["skipped"])
    for m in METHODS:
        assert {"psnr", "ssim", "id_distance", "landmark_distance"} <= set(r["methods"][m])
        assert 10 < r["methods"][m]["psnr"] < 60 and 0 < r["methods"][m]["ssim"] <= 1
        assert 0 < r["methods"][m]["id_distance"] < 1.5
    for k in ("personalized_vs_generic", "personalized_vs_wrong_identity"):
        assert 0 <= r["win_rate"][k] <= 1 and math.isfinite(r["win_rate"][k])
    assert r["config"]["ref_pool"] == 4 and r["config"]["identities_mode"] == "val"


def test_ref_pool_keeps_the_same_test_photos(runs: dict[str, dict]) -> None:
    """Bicubic does not depend on the references, so the same test photos give the same bicubic
    numbers; without the pool, 1 reference shifts which photos are tested."""
    a, b, free = runs["refs1_pool4"], runs["refs2_pool4"], runs["refs1"]
    assert [p["identity"] for p in a["per_identity"]] == [p["identity"] for p in b["per_identity"]]
    assert a["methods"]["bicubic"] == b["methods"]["bicubic"]
    assert a["methods"]["bicubic"]["psnr"] != free["methods"]["bicubic"]["psnr"]


def test_bad_ref_pool_is_a_one_line_error(shared_data: Path, tmp_path: Path) -> None:
    r = run_cli("eval", "--data", shared_data / "celeba", "--json", tmp_path / "x.json", "--refs", "4",
                "--ref-pool", "2")
    assert_one_line_error(r, "--ref-pool")
    assert not (tmp_path / "x.json").exists()
