"""Shared test fixtures. Kept small: each test module builds what it needs from real data."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path | None:
    """``$LIKENESS_DATA`` if set, else ``../shared/data`` beside the repo root (as in CI)."""
    env = os.environ.get("LIKENESS_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "celeba" / "labels.csv").is_file() and (c / "videos").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data set (celeba/, videos/); skips the test when it is absent."""
    root = find_shared_data()
    if root is None:
        pytest.skip("real data not found: set LIKENESS_DATA or place shared/data beside the repo")
    return root


def celeba_by_identity(root: Path, kind: str = "crops") -> dict[str, list[str]]:
    """CelebA photo paths (relative to ``root/celeba``) of one ``kind`` per identity, in labels.csv order."""
    by_id: dict[str, list[str]] = {}
    with (root / "celeba" / "labels.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            if r["kind"] == kind:
                by_id.setdefault(r["identity"], []).append(r["path"])
    return by_id
