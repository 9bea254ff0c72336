"""benchmarks/studies/video_fewshot.py never writes a candidate's numbers over the quoted results."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_other_weights_need_their_own_output_folder(tmp_path: Path) -> None:
    quoted = sorted((ROOT / "benchmarks" / "results" / "eval").glob("video-*.json"))
    before = {p: p.stat().st_mtime_ns for p in quoted}
    r = subprocess.run([sys.executable, "-m", "benchmarks.studies.video_fewshot",
                        "--weights", str(tmp_path / "w.safetensors")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--weights needs --out" in r.stderr and "Traceback" not in r.stderr
    assert {p: p.stat().st_mtime_ns for p in quoted} == before
