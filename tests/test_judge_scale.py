"""benchmarks/studies/judge_scale.py measures the judge's scale on the eval's own photos;
benchmarks/studies/intervals.py adds the eval's intervals to stored results from their per-identity records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.studies.judge_scale import judge_scale
from enhancer.evaluate import EvalConfig
from enhancer.stats import eval_intervals

ROOT = Path(__file__).resolve().parents[1]


def test_judge_scale_orders_its_reference_points(shared_data: Path) -> None:
    cfg = EvalConfig(data=str(shared_data / "celeba"), model="student", refs=2, limit_identities=3, max_tests=2)
    r = judge_scale(cfg, sigmas=(1.0, 4.0))
    d, p = r["id_distance"], r["blur_psnr"]
    assert r["counts"] == {"identities": 3, "test_images": 6}
    assert p["blur_1"] > p["blur_4"] > 15  # more blur, lower PSNR ...
    assert d["blur_1"] < d["blur_4"]  # ... and further from the person
    assert d["same_person_other_photo"] < d["other_person"]


def test_intervals_script_adds_the_evals_own_intervals(tmp_path: Path) -> None:
    per = [{"identity": str(i), "tests": 3, "win_vs_generic": i % 4, "win_vs_wrong": 3,
            "id_distance": {"generic": 0.6, "personalized": 0.6 - 0.01 * (i % 4)}} for i in range(12)]
    r = {"methods": {"generic": {"id_distance": 0.6}, "personalized": {"id_distance": 0.585}},
         "win_rate": {"personalized_vs_generic": 0.5}, "per_identity": per}
    f = tmp_path / "r.json"
    f.write_text(json.dumps(r))
    out = subprocess.run([sys.executable, "-m", "benchmarks.studies.intervals", str(f), "--write"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "win vs generic 50.0%" in out.stdout
    assert json.loads(f.read_text())["ci95"] == eval_intervals(per)
