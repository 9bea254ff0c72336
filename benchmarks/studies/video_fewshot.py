"""Few-shot curve on the talking-head clips: enrol on one stretch of video, restore another.

Why: CelebA here has at most 8 photos per person, so `likeness eval` on it cannot give 8
references *and* a test photo. The clips can, and they are the product's own situation (enrol
from a short webcam capture, then be restored in a call). No clip was ever used for training.

Per identity in ``videos/manifest.csv``: 8 reference frames spread over the enrolment stretch and
4 test frames from elsewhere. With several clips (one per emotion), the references come from the
neutral clip and each test frame from another clip (another expression); with one clip, references
come from its first 40 % and tests from its last 40 %. Only frames that align are written, named
so that `likeness eval --ordered --ref-pool 8` takes the references first and tests after; so
1, 4 and 8 references restore the very same test frames.

    python -m benchmarks.studies.video_fewshot [--videos ../shared/data/videos] [--model student]
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from enhancer.dataprep import align_one
from enhancer.evaluate import EvalConfig, evaluate, write_json

RESULTS = Path(__file__).resolve().parents[1] / "results" / "eval"
N_REFS, N_TESTS = 8, 4


def frames_at(path: Path, fractions: list[float]) -> list[np.ndarray]:
    """Frames at these fractions of the clip's length, read in one sequential pass."""
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    want = {min(n - 1, max(0, round(f * (n - 1)))) for f in fractions}
    out, i = [], 0
    while want and i <= max(want):
        ok, frame = cap.read()
        if not ok:
            break
        if i in want:
            out.append(frame)
        i += 1
    cap.release()
    return out


def spread(lo: float, hi: float, n: int) -> list[float]:
    return list(np.linspace(lo, hi, n))


def keep_aligned(frames: list[np.ndarray], folder: Path, prefix: str, limit: int) -> int:
    """Write up to ``limit`` frames that align (a failed one would shift the ordered split)."""
    kept = 0
    for f in frames:
        if kept == limit:
            break
        p = folder / f"{prefix}_{kept:02d}.png"
        cv2.imwrite(str(p), f)
        if align_one(p, 128, 20.0)[0] is None:
            p.unlink()
        else:
            kept += 1
    return kept


def build(videos: Path, out: Path) -> list[str]:
    """Write ``out/<identity>/{a,b}_NN.png`` + labels.csv; returns the identities kept."""
    clips: dict[str, list[str]] = defaultdict(list)
    with (videos / "manifest.csv").open(newline="") as fh:
        for r in csv.DictReader(fh):
            clips[r["identity"]].append(r["path"])
    rows, kept = [], []
    for ident, paths in tqdm(sorted(clips.items()), desc="frames", unit="id"):
        paths = sorted(paths)
        folder = out / ident
        folder.mkdir(parents=True)
        if len(paths) > 1:
            enrol = next((p for p in paths if "neutral" in p), paths[0])
            refs = frames_at(videos / enrol, spread(0.05, 0.95, 2 * N_REFS))
            tests = [f for p in paths if p != enrol for f in frames_at(videos / p, [0.5, 0.3, 0.7])[:1]]
        else:
            refs = frames_at(videos / paths[0], spread(0.0, 0.4, 2 * N_REFS))
            tests = frames_at(videos / paths[0], spread(0.6, 1.0, 2 * N_TESTS))
        if keep_aligned(refs, folder, "a", N_REFS) < N_REFS or keep_aligned(tests, folder, "b", N_TESTS) < 1:
            continue
        kept.append(ident)
        rows += [(f"{ident}/{p.name}", ident) for p in sorted(folder.glob("*.png"))]
    with (out / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "identity"])
        w.writerows(rows)
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=Path("../shared/data/videos"))
    ap.add_argument("--model", default="student", choices=["student", "teacher"])
    ap.add_argument("--preset", default="severe")
    ap.add_argument("--refs", default="1,4,8")
    ap.add_argument("--weights", type=Path, help="other weights than the packaged ones (e.g. a candidate run)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON (default: the quoted results)")
    args = ap.parse_args()
    if args.weights is not None and args.out == RESULTS:
        ap.error("--weights needs --out: the default folder holds the packaged model's quoted results")
    with tempfile.TemporaryDirectory() as tmp:
        kept = build(args.videos, Path(tmp))
        print(f"{len(kept)} identities with {N_REFS} aligned enrolment frames: {', '.join(kept)}")
        for k in map(int, args.refs.split(",")):
            cfg = EvalConfig(data=tmp, refs=k, ref_pool=N_REFS, ordered=True, preset=args.preset, model=args.model,
                             identities="all", max_tests=N_TESTS,
                             weights=str(args.weights) if args.weights else None)
            r = evaluate(cfg)
            r["config"]["data"] = f"{args.videos} (frames, see benchmarks/studies/video_fewshot.py)"
            path = args.out / f"video-{args.model}-{args.preset}-refs{k}.json"
            write_json(path, r)
            print(json.dumps({"refs": k, "win_rate": r["win_rate"], "counts": r["counts"],
                              "id_distance": {m: r["methods"][m]["id_distance"] for m in r["methods"]}}))


if __name__ == "__main__":
    main()
