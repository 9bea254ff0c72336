"""`likeness eval` on real held-out photos: the JSON keys others build on, and ``--ref-pool``
keeping the test photos fixed while the number of references changes (a fair few-shot curve),
``ordered`` taking references and tests by file name (enrol on one clip, test on another), and
``trained`` evaluating exactly the people the weights were not held out from; the detail metrics
(hf_energy, hf_corr) and their perception-distortion plot."""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import celeba_by_identity
from test_cli_foundation import assert_one_line_error, run_cli

from enhancer.dataprep import align_one
from enhancer.degrade import degrade
from enhancer.errors import InputError
from enhancer.evaluate import METHODS, EvalConfig, _seed_of, _select_identities, evaluate, reference_set, summary_table
from enhancer.metrics import psnr
from enhancer.plots import write_perception_distortion_plot
from enhancer.weights import load_restorer


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
    for k, key in (("personalized_vs_generic", "win_personalized_vs_generic"),
                   ("personalized_vs_wrong_identity", "win_personalized_vs_wrong_identity")):
        lo, hi = r["ci95"][key]
        assert 0 <= lo <= r["win_rate"][k] <= hi <= 1
    gap = r["methods"]["generic"]["id_distance"] - r["methods"]["personalized"]["id_distance"]
    lo, hi = r["ci95"]["id_gap_generic_minus_personalized"]
    assert lo - 1e-4 <= gap <= hi + 1e-4


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


def test_ordered_split_tests_the_photos_named_after_the_references(shared_data: Path, tmp_path: Path) -> None:
    """``ordered``: references are the first photos by name and the test photo the next one, so the
    bicubic PSNR must be exactly that photo's (a seeded shuffle would pick others)."""
    by_id = celeba_by_identity(shared_data)
    expected, lines = [], []
    for ident in [i for i in sorted(by_id) if len(by_id[i]) >= 6][:3]:
        crops = [(p, align_one(shared_data / "celeba" / p, 128, 20.0)[0]) for p in by_id[ident]]
        good = [(p, c) for p, c in crops if c is not None][:3]
        for k, (p, _) in enumerate(good):  # names order them: refs z_0, z_1 first, test z_2
            dst = tmp_path / ident / f"z_{k}{Path(p).suffix}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shared_data / "celeba" / p, dst)
            lines.append((f"{ident}/{dst.name}", ident))
        test = good[2][1]
        expected.append(psnr(test, degrade(test, "severe", _seed_of(0, ident, 0))))
    with (tmp_path / "labels.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "identity"), *lines])
    r = evaluate(EvalConfig(data=str(tmp_path), model="student", refs=1, ref_pool=2, ordered=True, max_tests=1,
                            identities="all"))
    assert r["counts"]["test_images"] == 3
    assert r["methods"]["bicubic"]["psnr"] == pytest.approx(float(np.mean(expected)), abs=1e-9)


def test_trained_identities_are_exactly_the_ones_not_held_out(shared_data: Path) -> None:
    """``trained`` (is a shortfall a generalisation gap or a fitting limit?) must pick every person
    in DIR the weights did not hold out and none they did; ``val`` the reverse."""
    val = [str(v) for v in load_restorer(None, kind="student")[1]["extra"]["val_identities"]]
    rows = [(p, i) for i, ps in celeba_by_identity(shared_data).items() for p in ps]
    present = {i for _, i in rows}
    cfg = EvalConfig(data=str(shared_data / "celeba"))
    trained, mode = _select_identities(rows, replace(cfg, identities="trained"), val)
    assert mode == "trained" and set(trained) == present - set(val) and len(trained) == len(set(trained))
    held, mode = _select_identities(rows, cfg, val)
    assert mode == "val" and set(held) == present & set(val) and len(held) >= 50
    with pytest.raises(InputError, match="held-out"):
        _select_identities(rows, replace(cfg, identities="trained"), [])
    r = _run(shared_data, refs=1, identities="trained")  # and evaluate() honours it end to end
    assert r["config"]["identities_mode"] == "trained" and not {p["identity"] for p in r["per_identity"]} & set(val)


def test_reference_set_adds_mirror_images_only_when_asked() -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    assert reference_set(crops, False) is crops
    both = reference_set(crops, True)
    assert both.shape == (6, 8, 8, 3) and np.array_equal(both[:3], crops)
    assert np.array_equal(both[3:, :, 0], crops[:, :, -1]) and not np.array_equal(both[3:], crops)


def test_detail_metrics_per_method_and_their_plot(runs: dict[str, dict], tmp_path: Path) -> None:
    """Bicubic of a severe degradation is a blurred truth: less detail than it (hf_energy < 1), still
    aligned with it (hf_corr > 0); every method reports both, with intervals around the mean."""
    r = runs["refs1_pool4"]
    for m in METHODS:
        d = r["methods"][m]
        assert d["hf_energy"] > 0 and -1 <= d["hf_corr"] <= 1
        for k in ("hf_energy", "hf_corr"):
            lo, hi = r["ci95"][f"{k}_{m}"]
            assert lo - 1e-4 <= d[k] <= hi + 1e-4
            assert all(k in p and m in p[k] for p in r["per_identity"])
    assert r["methods"]["bicubic"]["hf_energy"] < 1 and r["methods"]["bicubic"]["hf_corr"] > 0
    assert "HF corr" in summary_table(r).splitlines()[0]
    out = tmp_path / "pd.png"
    write_perception_distortion_plot(out, r)
    img = cv2.imread(str(out))
    assert img is not None and img.shape[0] > 100 and img.shape[1] > 100


def test_plot_into_a_missing_folder_is_a_one_line_error(shared_data: Path, tmp_path: Path) -> None:
    r = run_cli("eval", "--data", shared_data / "celeba", "--json", tmp_path / "x.json",
                "--plot", tmp_path / "nope" / "pd.png")
    assert_one_line_error(r, "--plot", "does not exist")
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--detail-transfer", "-1"], "--detail-transfer must be >= 0"),
    (["--transfer-gate", "3,2"], "FULL must be below NONE"),
    (["--transfer-gate", "a"], "two numbers"),
])
def test_eval_refuses_bad_transfer_options_in_one_line(argv: list[str], needle: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from enhancer.cli import main

    assert main(["eval", "--data", str(tmp_path), "--json", str(tmp_path / "r.json"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
