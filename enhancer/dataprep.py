"""`likeness data prepare`: detect, align and crop a labelled face folder for training/eval.

Input is laid out like ``../shared/data/celeba``: identity sub-folders and a ``labels.csv``
with at least ``path,identity``. Output: ``<out>/<identity>/<stem>.png`` aligned S x S crops,
``<out>/labels.csv`` (path,identity,source) and ``<out>/skipped.csv`` (source,reason), plus
``report.json`` with the yield. Resumable: rows already processed (in either CSV) are skipped.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from .align import alignment_matrix, warp_crops
from .detect import detect_faces
from .errors import InputError
from .imageio import read_image
from .tracker import eye_distance


@dataclass(frozen=True)
class PrepareConfig:
    size: int = 128
    min_eye_distance: float = 20.0  # px in the source image
    max_side: int = 800
    workers: int = 2


def read_labels(src: Path) -> list[tuple[str, str]]:
    """Rows (relative path, identity) from ``src/labels.csv``; clear error if malformed."""
    f = src / "labels.csv"
    if not f.is_file():
        raise InputError(f"{src}: no labels.csv (expected columns path,identity)")
    with f.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"path", "identity"} <= set(reader.fieldnames):
            raise InputError(f"{f}: needs columns path,identity (has {reader.fieldnames})")
        return [(r["path"], r["identity"]) for r in reader]


def align_one(path: Path, size: int, min_eye_distance: float, max_side: int = 800):
    """Return (crop, None) or (None, reason) for one photo."""
    try:
        img = read_image(path)
    except InputError as e:
        return None, f"unreadable: {e}"
    dets = detect_faces(img, max_side=max_side)
    if not dets:
        dets = detect_faces(img, max_side=max_side, upsample=1)
    if not dets:
        return None, "no face"
    if len(dets) > 1:
        return None, f"several faces ({len(dets)})"
    lm = dets[0].landmarks
    if eye_distance(lm) < min_eye_distance:
        return None, f"face too small (eye distance {eye_distance(lm):.0f}px < {min_eye_distance:.0f}px)"
    return warp_crops(img, alignment_matrix(lm, size)[None], size)[0], None


def _work(args):
    src, rel, ident, out, cfg = args
    crop, reason = align_one(src / rel, cfg.size, cfg.min_eye_distance, cfg.max_side)
    if crop is None:
        return rel, ident, None, reason
    dst = Path(ident) / (Path(rel).stem + ".png")
    (out / dst).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / dst), crop)
    return rel, ident, str(dst), None


def prepare(src: Path, out: Path, cfg: PrepareConfig = PrepareConfig()) -> dict:
    """Align every labelled photo; returns and writes the yield report."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise InputError(f"{src}: not a directory")
    rows = read_labels(src)
    out.mkdir(parents=True, exist_ok=True)
    ok_f, skip_f = out / "labels.csv", out / "skipped.csv"
    done: set[str] = set()
    for f in (ok_f, skip_f):
        if f.exists():
            with f.open(newline="") as fh:
                done |= {r["source"] for r in csv.DictReader(fh)}
    new_ok = not ok_f.exists()
    new_skip = not skip_f.exists()
    todo = [(src, rel, ident, out, cfg) for rel, ident in rows if rel not in done]
    with ok_f.open("a", newline="") as fo, skip_f.open("a", newline="") as fs:
        wo, ws = csv.writer(fo), csv.writer(fs)
        if new_ok:
            wo.writerow(["path", "identity", "source"])
        if new_skip:
            ws.writerow(["source", "identity", "reason"])
        with ProcessPoolExecutor(cfg.workers) as pool:
            it = pool.map(_work, todo, chunksize=16)
            for rel, ident, dst, reason in tqdm(it, total=len(todo), desc="prepare", unit="img"):
                if dst:
                    wo.writerow([dst, ident, rel])
                    fo.flush()
                else:
                    ws.writerow([rel, ident, reason])
                    fs.flush()
    report = summarise(out, len(rows))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def summarise(out: Path, total: int) -> dict:
    with (out / "labels.csv").open(newline="") as fh:
        ok = list(csv.DictReader(fh))
    with (out / "skipped.csv").open(newline="") as fh:
        sk = list(csv.DictReader(fh))
    reasons = Counter(r["reason"].split(" (")[0].split(":")[0] for r in sk)
    return {
        "total": total,
        "aligned": len(ok),
        "skipped": len(sk),
        "yield": round(len(ok) / max(total, 1), 4),
        "identities": len({r["identity"] for r in ok}),
        "skip_reasons": dict(reasons),
    }
