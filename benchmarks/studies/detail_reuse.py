"""What a late frame should get: the last restored detail, or its raw face?

In a call the generator misses some frames' deadlines (``benchmarks/soak.py``: 20-46 % of
frames on two shared cores). Those frames used to go out raw, so the face alternated between
restored and smeared. ``enhancer.detail`` instead adds the last restored detail to the late
frame's own crop. This measures both on real talking-head clips (never used in training),
against restoring every frame: the generator runs on every k-th frame, and the k-1 frames
between get either the reused detail or their raw face. The reused detail on a frame
``a`` frames after its source is exactly what the bridge pastes when the generator is ``a``
frames behind.

Metrics, in the aligned 128x128 crop of each frame (the same alignment for every method,
weighted by the paste-back's feather mask), against the clean frame:
* PSNR of the face;
* temporal error: mean |(out_t - out_t-1) - (clean_t - clean_t-1)|, both frame pairs warped
  with frame t's alignment: how much the face changes between frames that the truth does not
  (flicker), in grey levels.

Input: each frame degraded whole with ``--preset`` (per clip one seed, so the codec and the
noise pattern do not change from frame to frame and add no flicker of their own); generic
mode (no identity: the question is temporal, not personal).

    python -m benchmarks.studies.detail_reuse [--frames 60] [--strides 2 3 4 6] [--engine auto]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.harness.clips import load_clip, videos_dir
from enhancer.align import alignment_matrix, feather_mask, warp_crops
from enhancer.commands.assemble import build_pipeline
from enhancer.degrade import degrade
from enhancer.detail import ReuseConfig
from enhancer.pipeline import FramePipeline

RESULTS = Path(__file__).resolve().parents[1] / "results"


def one_per_person(videos: Path) -> list[Path]:
    """The first clip of each identity in the manifest (the MEAD people have eight)."""
    seen: set[str] = set()
    out = []
    with open(videos / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["identity"] not in seen and (videos / row["path"]).is_file():
                seen.add(row["identity"])
                out.append(videos / row["path"])
    return out


# what the face metrics of this study (and of transfer_flicker) mean
FACE_METRICS = {"psnr": "feather-mask-weighted PSNR of the aligned 128 crop vs the clean frame",
                "temporal_error": "weighted mean |(out_t - out_t-1) - (clean_t - clean_t-1)|, grey levels"}


def write_result(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def masked_psnr(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> float:
    """PSNR of uint8 crops ``a`` vs ``b`` with per-pixel weights ``w`` (S, S)."""
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = float((d.mean(-1) * w).sum() / w.sum())
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def temporal_error(o1: np.ndarray, o0: np.ndarray, c1: np.ndarray, c0: np.ndarray, w: np.ndarray) -> float:
    """Weighted mean |(o1 - o0) - (c1 - c0)| in grey levels: change the truth does not have."""
    d = np.abs((o1.astype(np.float64) - o0) - (c1.astype(np.float64) - c0)).mean(-1)
    return float((d * w).sum() / w.sum())


def schedule(n: int, stride: int) -> list[int]:
    """Age in frames of the detail each frame gets: 0 = restored itself (every ``stride``-th)."""
    return [i % stride for i in range(n)]


def run_mode(pipe: FramePipeline, frames: list[np.ndarray], fps: float, stride: int, late: str) -> list:
    """Outputs of one method: generator on every ``stride``-th frame, the others ``late``
    ('reuse': stored detail; 'raw': the frame as it came)."""
    out = []
    for i, f in enumerate(frames):
        age = i % stride
        if age == 0:
            out.append(pipe.process(f, i / fps))
        elif late == "reuse":
            out.append(pipe.process_reusing(f, i / fps))
        else:
            pipe.tracker.update(f, i / fps)  # the tracker still sees every frame, as in the bridge
            out.append(None)
    return out


def measure(clean: list[np.ndarray], shown: list[np.ndarray], mats: list[np.ndarray | None],
            ages: list[int], w: np.ndarray) -> dict:
    size = w.shape[0]
    psnr: dict[int, list[float]] = {}
    per_frame: dict[int, float] = {}
    terr: list[float] = []
    for i, m in enumerate(mats):
        if m is None:
            continue
        o1, c1 = warp_crops(shown[i], m[None], size)[0], warp_crops(clean[i], m[None], size)[0]
        per_frame[i] = masked_psnr(o1, c1, w)
        psnr.setdefault(ages[i], []).append(per_frame[i])
        if i > 0:
            o0, c0 = warp_crops(shown[i - 1], m[None], size)[0], warp_crops(clean[i - 1], m[None], size)[0]
            terr.append(temporal_error(o1, o0, c1, c0, w))
    return {"psnr": psnr, "temporal": terr, "per_frame": per_frame}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=60, help="frames per clip, from its start")
    ap.add_argument("--strides", type=int, nargs="+", default=[2, 3, 4, 6])
    ap.add_argument("--preset", default="severe")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--max-age", type=float, default=1.0,
                    help="seconds detail may be reused (high by default, so that every age is measured)")
    ap.add_argument("--gate", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                    help="motion gate in grey levels (default: the product's; 'inf inf' turns it off)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    videos = args.videos or videos_dir()
    clips = one_per_person(videos)
    t_start = time.perf_counter()
    reuse = ReuseConfig(max_age_s=args.max_age)
    if args.gate is not None:
        reuse = dataclasses.replace(reuse, gate_lo=args.gate[0], gate_hi=args.gate[1])
    modes = [("fresh", 1, "reuse")] + [(f"{late}-{k}", k, late) for k in args.strides for late in ("reuse", "raw")]
    acc: dict[str, dict] = {name: {"psnr": {}, "temporal": [], "loss": []} for name, _, _ in modes}
    acc["input"] = {"psnr": {}, "temporal": [], "loss": []}
    size = 128
    w = feather_mask(size)
    w = w[..., 0] if w.ndim == 3 else w
    engine_name = None
    for ci, path in enumerate(tqdm(clips, desc="clips", unit="clip")):
        clean, fps = load_clip(path, args.frames)
        lq = [degrade(f, args.preset, seed=ci) for f in clean]
        ref_mats: list[np.ndarray | None] | None = None
        for name, stride, late in modes:
            # a fresh stream per method: own tracker, own detail
            pipe = build_pipeline(engine=args.engine, reuse=reuse)
            engine_name = pipe.engine.name
            res = run_mode(pipe, lq, fps, stride, late)
            if name == "fresh":
                ref_mats = [alignment_matrix(r.landmarks[0], size) if r.faces else None for r in res]
            shown = [lq[i] if r is None else r.frame for i, r in enumerate(res)]
            ages = schedule(len(lq), stride)
            m = measure(clean, shown, ref_mats, ages, w)
            if name == "fresh":
                fresh_psnr = m["per_frame"]
            # the tail is where ghosts show: frames not restored themselves, against restoring them
            acc[name]["loss"].extend(fresh_psnr[i] - v for i, v in m["per_frame"].items() if ages[i] > 0)
            for a, v in m["psnr"].items():
                acc[name]["psnr"].setdefault(a, []).extend(v)
            acc[name]["temporal"].extend(m["temporal"])
            pipe.close()
        m = measure(clean, lq, ref_mats, [0] * len(lq), w)
        acc["input"]["psnr"].setdefault(0, []).extend(m["psnr"].get(0, []))
        acc["input"]["temporal"].extend(m["temporal"])
    summary = {}
    for name, a in acc.items():
        every = [v for vs in a["psnr"].values() for v in vs]
        summary[name] = {
            "psnr": round(float(np.mean(every)), 3),
            "psnr_by_age": {str(k): round(float(np.mean(v)), 3) for k, v in sorted(a["psnr"].items())},
            "temporal_error": round(float(np.mean(a["temporal"])), 3),
            "loss_vs_fresh_db": ({"mean": round(float(np.mean(a["loss"])), 3),
                                  "p95": round(float(np.percentile(a["loss"], 95)), 3),
                                  "max": round(float(np.max(a["loss"])), 3),
                                  "share_over_1db": round(float(np.mean(np.array(a["loss"]) > 1.0)), 4)}
                                 if a["loss"] else None),
            "frames": len(every),
        }
    result = {
        "benchmark": "detail-reuse",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "config": {"frames_per_clip": args.frames, "strides": args.strides, "preset": args.preset,
                   "engine": engine_name, "clips": [p.name for p in clips], "identity": None,
                   "reuse": dataclasses.asdict(reuse)},
        "methods": summary,
        "definition": {**FACE_METRICS,
                       "psnr_by_age": "frames whose detail came from this many frames earlier (0: own)",
                       "loss_vs_fresh_db": "per frame not restored itself: PSNR restoring it minus PSNR shown",
                       "reuse-k / raw-k": "generator on every k-th frame; the others reuse detail / go out raw"},
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    out = args.out or RESULTS / f"detail-reuse-{datetime.now(UTC).date()}.json"
    write_result(result, out)
    for name, s in summary.items():
        print(f"{name:10s} psnr {s['psnr']:6.2f}  temporal {s['temporal_error']:5.2f}  by age {s['psnr_by_age']}  "
              f"loss vs fresh {s['loss_vs_fresh_db']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
