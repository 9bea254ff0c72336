"""`data prepare` on a small real folder: yields, skip reasons, resumability."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from enhancer.cli import main
from enhancer.dataprep import PrepareConfig, prepare

N_REAL = 4


def write_labels(folder: Path, rows: list[tuple[str, str]]) -> None:
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "identity"])
        w.writerows(rows)


@pytest.fixture()
def folder(shared_data: Path, tmp_path: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A labelled folder: 4 real CelebA photos (2 identities), a truncated JPEG, a flat image
    and a face-free crop of a real video frame (ceiling above the speaker's head)."""
    src = tmp_path / "src"
    with (shared_data / "celeba" / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kind"] == "crops"]
    ids = sorted({r["identity"] for r in rows})[:2]
    real = [r for ident in ids for r in [r for r in rows if r["identity"] == ident][: N_REAL // 2]]
    labels = []
    for r in real:
        dst = src / r["path"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / "celeba" / r["path"], dst)  # temp dir only, never the repo
        labels.append((r["path"], r["identity"]))
    bad = src / "bad"
    bad.mkdir()
    data = (shared_data / "celeba" / real[0]["path"]).read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 5])
    cv2.imwrite(str(bad / "flat.png"), np.full((200, 200, 3), 140, np.uint8))
    with av.open(str(shared_data / "videos" / "LivePortrait__assets__examples__driving__d13.mp4")) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="bgr24")
    cv2.imwrite(str(bad / "ceiling.png"), frame[:350])
    labels += [("bad/truncated.jpg", "x"), ("bad/flat.png", "x"), ("bad/ceiling.png", "x")]
    write_labels(src, labels)
    return src, labels


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_prepare_reports_skips_and_resumes(folder: tuple[Path, list[tuple[str, str]]], tmp_path: Path) -> None:
    src, labels = folder
    out = tmp_path / "out"
    cfg = PrepareConfig(size=128, workers=1)

    # first pass on a subset, as if interrupted
    write_labels(src, labels[:2])
    first = prepare(src, out, cfg)
    assert first["aligned"] == 2 and first["skipped"] == 0
    early = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    assert len(early) == 2

    # full run: only the rest is processed
    write_labels(src, labels)
    report = prepare(src, out, cfg)
    print("\nreport:", json.dumps(report))
    assert report["total"] == len(labels)
    assert report["aligned"] == N_REAL and report["skipped"] == 3
    assert report["identities"] == 2
    assert {p: p.stat().st_mtime_ns for p in early} == early, "resumed run rewrote finished crops"
    skipped = {r["source"]: r["reason"] for r in read_csv(out / "skipped.csv")}
    assert skipped["bad/truncated.jpg"].startswith("unreadable")
    assert skipped["bad/flat.png"] == "no face"
    assert skipped["bad/ceiling.png"] == "no face"
    ok = read_csv(out / "labels.csv")
    assert sorted(r["source"] for r in ok) == sorted(p for p, _ in labels[:N_REAL])
    for r in ok:
        crop = cv2.imread(str(out / r["path"]))
        assert crop is not None and crop.shape == (128, 128, 3)
    assert json.loads((out / "report.json").read_text()) == report

    # second full run (through the CLI): nothing new
    snapshot = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*") if p.is_file()}
    assert main(["data", "prepare", str(src), "--out", str(out), "--workers", "1"]) == 0
    for p, (mtime, content) in snapshot.items():
        assert p.read_bytes() == content
        if p.suffix == ".png":
            assert p.stat().st_mtime_ns == mtime
    assert len(read_csv(out / "labels.csv")) == N_REAL
    assert len(read_csv(out / "skipped.csv")) == 3
