"""`likeness train` refuses bad arguments with one line and writes no run folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli_foundation import assert_one_line_error, run_cli


@pytest.mark.parametrize(("extra", "words"), [
    (["--gt-weight", "-1"], ["--gt-weight", ">= 0"]),
    (["--id-output", "-0.5"], ["--id-output", ">= 0"]),
    (["--id-margin", "-1"], ["--id-margin", ">= 0"]),
    (["--id-output-weights", "severe=x"], ["--id-output-weights", "severe=x"]),
    ([], ["training pack not found"]),
])
def test_distill_bad_arguments(tmp_path: Path, extra: list[str], words: list[str]) -> None:
    run = tmp_path / "run"
    r = run_cli("train", "distill", "--pack", tmp_path / "missing.npz", "--teacher", tmp_path / "t.safetensors",
                "--minutes", "1", "--run-dir", run, *extra)
    assert_one_line_error(r, *words)
    assert not run.exists()
