"""Pasting with the face's native detail vs replacing the face: what a viewer gets at the face's own size.

A webcam face at 640x480 is usually larger than the generator's 128-px crop. Replacing the face
with the upsampled crop (the pipeline's paste before 2026-12-07) discards the frame's detail
above the crop's resolution; the pipeline now pastes the restored change and keeps a share of
that native detail set by how clean the face arrives (``enhancer.align.NativeDetail``). Real
talking-head clips (one per person, letterboxed to 640x480), clean (a good webcam: what the
sending side sees) and degraded whole with each ``--presets`` (one seed per clip), go through the
product pipeline (generic mode, ``--engine``, default strength) twice: as it is (``pipeline``) and
with ``native=None`` (``replace``: the colour-matched crop blended over the face). The degraded
input itself is the third row.

Per frame, in the face's aligned crop from the *clean* frame's landmarks (one alignment for all):
feather-weighted PSNR against the clean frame at 128 px (as the other studies) and at the face's
native size (the crop side the frame really has, 128 / scale), and there the fine detail:
energy of the luma's high-pass (sigma 1 px) relative to the clean face's, and its correlation
with the clean face's high-pass (the face's real detail scores, invented or lost detail does not).

Also the pastes' time on one face of a 480p frame (the whole change, half the native detail,
replacing), interleaved with ``likeness bench``'s own timing code (``--timing-only``: just that).

    python -m benchmarks.studies.paste_fidelity [--first-clip 0] [--clips 5 | --others] [--frames 24]
        [--presets mild moderate severe] [--timing-only] [--weights W --methods pipeline]
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.studies.detail_reuse import RESULTS, masked_psnr, one_per_person, temporal_error, write_result
from benchmarks.studies.fit_strength import candidate_strength
from enhancer.align import alignment_matrix, feather_mask, paste_back, warp_crops
from enhancer.commands.assemble import build_pipeline
from enhancer.degrade import degrade
from enhancer.detect import detect_faces

SIZE = (640, 480)
CROP = 128


def face_scale(m: np.ndarray) -> float:
    """Crop pixels per frame pixel of an alignment matrix."""
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def native_side(m: np.ndarray, crop: int = CROP, cap: int = 512) -> int:
    """The crop side at which the face is sampled at the frame's own resolution (even, capped)."""
    return int(min(cap, 2 * round(crop / face_scale(m) / 2)))


def others(videos: Path) -> list[Path]:
    """The manifest's clips that ``one_per_person`` does not pick, in manifest order."""
    picked = set(one_per_person(videos))
    with open(videos / "manifest.csv", newline="") as f:
        return [videos / r["path"] for r in csv.DictReader(f) if (videos / r["path"]).is_file()
                and videos / r["path"] not in picked]


def high_pass(gray: np.ndarray) -> np.ndarray:
    g = gray.astype(np.float32)
    return g - cv2.GaussianBlur(g, (0, 0), 1.0)


def detail_scores(out: np.ndarray, clean: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """(energy ratio, correlation) of the weighted luma high-passes of ``out`` and ``clean``."""
    ho = high_pass(cv2.cvtColor(out, cv2.COLOR_BGR2GRAY))
    hc = high_pass(cv2.cvtColor(clean, cv2.COLOR_BGR2GRAY))
    sw = float(w.sum())
    eo, ec = float((ho * ho * w).sum() / sw), float((hc * hc * w).sum() / sw)
    corr = float((ho * hc * w).sum() / sw) / max(np.sqrt(eo * ec), 1e-9)
    return eo / max(ec, 1e-9), corr


def _replacing_paste(frame: np.ndarray, crops: np.ndarray, matrices: np.ndarray,
                     originals: np.ndarray) -> np.ndarray:
    """Replacing (the colour-matched crop blended over the face), for the timing."""
    return paste_back(frame, crops, matrices, originals, np.zeros(len(crops), np.float32))


def score(shown: np.ndarray, clean: np.ndarray, m: np.ndarray, w128: np.ndarray) -> dict[str, float]:
    side = native_side(m)
    mn = m * (side / CROP)
    wn = feather_mask(side)
    c128, cn = warp_crops(clean, m[None], CROP)[0], warp_crops(clean, mn[None], side)[0]
    o128, on = warp_crops(shown, m[None], CROP)[0], warp_crops(shown, mn[None], side)[0]
    energy, corr = detail_scores(on, cn, wn)
    return {"psnr_128": masked_psnr(o128, c128, w128), "psnr_native": masked_psnr(on, cn, wn),
            "hf_energy_native": energy, "hf_corr_native": corr}


def paste_timing(frame: np.ndarray) -> dict[str, dict]:
    """Median (and spread) ms of each paste for one face of ``frame`` with a visibly changed crop."""
    from benchmarks.bench.config import BenchConfig
    from benchmarks.bench.timing import summarize, time_interleaved

    m = alignment_matrix(detect_faces(frame)[0].landmarks, CROP)[None]
    crops = warp_crops(frame, m, CROP)
    restored = cv2.GaussianBlur(crops[0], (0, 0), 1.0)[None]
    half = np.full(1, 0.5, np.float32)
    times = time_interleaved({"change": lambda: paste_back(frame, restored, m, crops),
                              "half_native": lambda: paste_back(frame, restored, m, crops, half),
                              "replace": lambda: _replacing_paste(frame, restored, m, crops)},
                             BenchConfig(runs=400, max_s=10.0))
    return {k: summarize(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=None)
    ap.add_argument("--first-clip", type=int, default=0, help="index of the first clip (one per person, "
                    "in manifest order)")
    ap.add_argument("--clips", type=int, default=5, help="how many clips from there")
    ap.add_argument("--others", action="store_true",
                    help="instead: every clip of the manifest that one_per_person leaves out (the MEAD people's "
                         "other clips)")
    ap.add_argument("--frames", type=int, default=24, help="frames per clip (every --every-th from the start)")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--start", type=int, default=0,
                    help="first frame (later frames of clips whose start was spent on an earlier judge)")
    ap.add_argument("--presets", nargs="+", default=["mild", "moderate", "severe"])
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--weights", default=None, help="a student to run instead of the packaged one (a candidate)")
    ap.add_argument("--strength-fade", default=None, metavar="FROM,TO",
                    help="the default strength with this fade (StrengthConfig.fade; a candidate)")
    ap.add_argument("--strength-line", default=None, metavar="INTERCEPT,SLOPE",
                    help="the default strength with this line (a candidate's own, from fit_strength --weights)")
    ap.add_argument("--methods", nargs="+", default=["pipeline", "replace"], choices=["pipeline", "replace"],
                    help="which pastes to run (the input is always scored)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--timing-only", action="store_true", help="only the two pastes' time")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    clips = one_per_person(args.videos or videos_dir())
    timing = paste_timing(load_clip(clips[0], 1, SIZE)[0][0])
    print("paste ms (median):", {k: v["median"] for k, v in timing.items()})
    if args.timing_only:
        out = args.out or RESULTS / f"paste-timing-{datetime.now(UTC).date()}.json"
        write_result({"benchmark": "paste-timing", "date": datetime.now(UTC).isoformat(timespec="seconds"),
                      "machine": {"cpu": platform.processor() or platform.machine(),
                                  "python": platform.python_version()},
                      "frame": f"{clips[0].name}, first frame at 640x480, one face, crop {CROP}",
                      "paste_ms": timing}, out)
        print(f"wrote {out}")
        return
    conditions = ["clean", *args.presets]
    strength = candidate_strength(args.strength_line, args.strength_fade, args.weights)
    w128 = feather_mask(CROP)
    rows: dict[str, dict[str, dict[str, list[float]]]] = {c: {m: {} for m in ("input", *args.methods)}
                                                          for c in conditions}
    used, scales = [], []
    if args.others:
        chosen = others(args.videos or videos_dir())
    else:
        chosen = clips[args.first_clip: args.first_clip + args.clips]
    for ci, path in enumerate(tqdm(chosen, desc="clips"), start=0 if args.others else args.first_clip):
        frames, fps = load_clip(path, args.start + args.frames * args.every, SIZE)
        frames = frames[args.start:: args.every]
        if not frames:
            continue
        mats = []
        for f in frames:
            faces = detect_faces(f)
            mats.append(alignment_matrix(faces[0].landmarks, CROP) if faces else None)
        if not any(m is not None for m in mats):
            continue
        used.append(path.name)
        scales += [face_scale(m) for m in mats if m is not None]
        for cond in conditions:
            lq = frames if cond == "clean" else [degrade(f, cond, seed=ci) for f in frames]
            shown = {"input": lq}
            for method in args.methods:
                pipe = build_pipeline(identity=None, engine=args.engine, weights=args.weights, strength=strength)
                if method == "replace":
                    pipe.native = None  # the restored crop replaces the face
                shown[method] = [pipe.process(f, i * args.every / fps).frame for i, f in enumerate(lq)]
                pipe.close()
            for method, imgs in shown.items():
                for img, clean, m in zip(imgs, frames, mats, strict=True):
                    if m is None:
                        continue
                    for k, v in score(img, clean, m, w128).items():
                        rows[cond][method].setdefault(k, []).append(v)
                if args.every == 1:  # consecutive frames: change the clean clip does not have, 128 crop
                    rows[cond][method].setdefault("temporal_error", []).extend(
                        temporal_error(*(warp_crops(x, m[None], CROP)[0] for x in (imgs[i], imgs[i - 1], frames[i],
                                                                                     frames[i - 1])), w128)
                        for i, m in enumerate(mats) if i and m is not None)
    summary = {c: {m: {k: round(float(np.mean(v)), 4) for k, v in d.items()} | {"frames": len(d.get("psnr_128", []))}
                   for m, d in per.items()} for c, per in rows.items()}
    result = {
        "benchmark": "paste-fidelity",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "config": {"first_clip": args.first_clip, "clips": used,
                   "frames_per_clip": args.frames, "every": args.every, "start": args.start, "presets": args.presets,
                   "engine": args.engine, "weights": args.weights or "packaged", "strength": vars(strength),
                   "size": list(SIZE),
                   "mode": "generic (no identity), default strength"},
        "face_scale": {"median": round(float(np.median(scales)), 3), "min": round(float(np.min(scales)), 3),
                       "max": round(float(np.max(scales)), 3),
                       "meaning": "crop pixels per frame pixel at 128 (below 1: the face is larger than the crop)"},
        "conditions": summary,
        "paste_ms": timing,
        "definition": {
            "psnr_128": "feather-weighted PSNR of the aligned 128 crop (clean frame's landmarks) vs the clean frame",
            "psnr_native": "the same at the face's native size in the frame (crop side 128 / scale, at most 512)",
            "hf_energy_native": "luma high-pass (x - Gaussian sigma 1) energy in the native crop / the clean face's",
            "hf_corr_native": "weighted correlation of that high-pass with the clean face's",
            "temporal_error": "with --every 1: weighted mean |(out_t - out_t-1) - (clean_t - clean_t-1)| in the "
                              "128 crop of frame t's landmarks, grey levels",
            "input": "the frame as it arrives (degraded), no restoration",
            "pipeline": "product pipeline as it is (the change pasted, native detail kept by NativeDetail)",
            "replace": "product pipeline with native=None (the colour-matched crop blended over the face)"},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = args.out or RESULTS / f"paste-fidelity-{datetime.now(UTC).date()}.json"
    write_result(result, out)
    for c, per in summary.items():
        for m, s in per.items():
            print(f"{c:9s} {m:8s} psnr128 {s['psnr_128']:6.2f}  native {s['psnr_native']:6.2f}  "
                  f"hfE {s['hf_energy_native']:.3f}  hfC {s['hf_corr_native']:.3f}"
                  + (f"  temporal {s['temporal_error']:.3f}" if "temporal_error" in s else ""))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
