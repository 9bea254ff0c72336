"""Does reference detail transfer flicker? The personalised pipeline with and without it on real
talking-head clips (people never trained on).

Each clip's person is enrolled from frames of the clip's second half (every 10th frame, the
enrolment's own checks and selection), so the references are the person's but not the frames
measured; the first ``--frames`` frames are degraded whole with ``--preset`` (one seed per clip)
and restored by the product pipeline with that identity, once without transfer and once per
``--alpha``. Metrics per method, in the aligned 128 crop (feather-weighted, as
``detail_reuse``): PSNR against the clean frame and the temporal error (change between frames the
truth does not have, grey levels); with ``--identity`` also the dlib distance of the restored crop
to the clean one (dlib only judges). ``--start`` measures later frames (a split not tuned on),
never those of the enrolment half.

    python -m benchmarks.studies.transfer_flicker [--start 0] [--frames 60] [--alpha 1 2] [--identity] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.studies.detail_reuse import FACE_METRICS, RESULTS, measure, one_per_person, write_result
from enhancer.align import alignment_matrix, feather_mask, warp_crops
from enhancer.commands.assemble import build_pipeline
from enhancer.degrade import degrade
from enhancer.detail_transfer import DEFAULT_TRANSFER
from enhancer.enroll import EnrollConfig, EnrollmentError, enroll_from_images
from enhancer.metrics import identity_distance


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=Path, default=None)
    ap.add_argument("--frames", type=int, default=60, help="frames per clip measured, from --start")
    ap.add_argument("--start", type=int, default=0,
                    help="first frame measured (never one of the clip's second half, where it is enrolled from)")
    ap.add_argument("--identity", action="store_true", help="also the dlib distance to the clean face per frame")
    ap.add_argument("--alpha", type=float, nargs="+", default=[DEFAULT_TRANSFER.alpha])
    ap.add_argument("--mids", type=float, nargs="+", default=None,
                    help="for each alpha, the learned transfer moving these shares of the mid band "
                         "(TransferConfig.mid; default: the product's)")
    ap.add_argument("--mid-none", type=float, default=None, help="TransferConfig.mid_none for the --mids methods")
    ap.add_argument("--gate", type=float, nargs=2, metavar=("FULL", "NONE"), default=None,
                    help="the transfer's gate in ln Laplacian variance (default: DEFAULT_TRANSFER's)")
    ap.add_argument("--weighting", choices=["learned", "hand"], default=None,
                    help="where the detail goes (default: DEFAULT_TRANSFER's)")
    ap.add_argument("--preset", default="severe")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--weights", default=None, help="a student in place of the packaged one (run 11)")
    ap.add_argument("--limit-clips", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    clips = one_per_person(args.videos or videos_dir())[: args.limit_clips]
    t0 = time.perf_counter()
    size = 128
    w = feather_mask(size)
    w = w[..., 0] if w.ndim == 3 else w
    tcfg = DEFAULT_TRANSFER if args.gate is None else replace(DEFAULT_TRANSFER, detail_full=args.gate[0],
                                                                    detail_none=args.gate[1])
    if args.weighting is not None:
        learned = args.weighting == "learned"
        tcfg = replace(tcfg, learned=learned, mid=tcfg.mid if learned else 0.0)
    # without --mids, the product's mid band (share and ramp); with them, exactly what is asked
    mids, mid_none = (args.mids, args.mid_none) if args.mids is not None else ([tcfg.mid], tcfg.mid_none)
    methods = [("none", None)] + [
        (f"alpha-{a:g}" + (f"-mid{b:g}" if b else ""), replace(tcfg, alpha=a, mid=b, mid_none=mid_none))
        for a in args.alpha for b in mids]
    acc: dict[str, dict[str, list[float]]] = {m: {"psnr": [], "temporal": [], "id_distance": []} for m, _ in methods}
    used, skipped = [], {}
    with tempfile.TemporaryDirectory() as home:
        for ci, path in enumerate(tqdm(clips, desc="clips", unit="clip")):
            frames, fps = load_clip(path, max(6 * args.frames, 300))
            if len(frames) < 2 * args.frames:
                skipped[path.name] = f"{len(frames)} frames"
                continue
            name = f"clip{ci}"
            try:
                enroll_from_images(name, frames[len(frames) // 2::10], home=home,
                                   config=EnrollConfig(reference_detail=True))
            except EnrollmentError as e:
                skipped[path.name] = str(e).splitlines()[0]
                continue
            clean = frames[args.start: min(args.start + args.frames, len(frames) // 2)]
            if len(clean) < 2:
                skipped[path.name] = f"{len(frames)} frames: none before the enrolment half from {args.start}"
                continue
            lq = [degrade(f, args.preset, seed=ci) for f in clean]
            mats = None
            for method, transfer in methods:
                pipe = build_pipeline(identity=name, engine=args.engine, weights=args.weights, home=home,
                                      transfer=transfer)
                res = [pipe.process(f, i / fps) for i, f in enumerate(lq)]
                pipe.close()
                if mats is None:  # one alignment for every method, from the first
                    mats = [alignment_matrix(r.landmarks[0], size) if r.faces else None for r in res]
                m = measure(clean, [r.frame for r in res], mats, [0] * len(lq), w)
                acc[method]["psnr"].extend(m["per_frame"].values())
                acc[method]["temporal"].extend(m["temporal"])
                if args.identity:
                    acc[method]["id_distance"].extend(
                        identity_distance(warp_crops(r.frame, k[None], size)[0], warp_crops(c, k[None], size)[0])
                        for r, c, k in zip(res, clean, mats, strict=True) if k is not None)
            used.append(path.name)
    summary = {m: {"psnr": round(float(np.mean(a["psnr"])), 3),
                   "temporal_error": round(float(np.mean(a["temporal"])), 3), "frames": len(a["psnr"]),
                   **({"id_distance": round(float(np.mean(a["id_distance"])), 4)} if args.identity else {})}
               for m, a in acc.items()}
    base = summary["none"]["temporal_error"]
    for s in summary.values():
        s["temporal_vs_none"] = round(s["temporal_error"] / base - 1, 4)
    result = {
        "benchmark": "transfer-flicker",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
        "config": {"start": args.start,
                   "frames_per_clip": args.frames, "alphas": args.alpha, "mids": mids,
                   "preset": args.preset, "engine": args.engine, "weights": args.weights,
                   "clips": used, "skipped": skipped, "transfer": dataclasses.asdict(tcfg)},
        "methods": summary,
        "definition": {**FACE_METRICS,
                       "id_distance": "dlib descriptor distance of the restored aligned crop to the clean one",
                       "temporal_vs_none": "relative change of the temporal error against no transfer"},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    out = args.out or RESULTS / f"transfer-flicker-{datetime.now(UTC).date()}.json"
    write_result(result, out)
    for m, s in summary.items():
        change = 100 * s["temporal_vs_none"]
        ident = f"  id {s['id_distance']:.4f}" if args.identity else ""
        print(f"{m:10s} psnr {s['psnr']:6.2f}  temporal {s['temporal_error']:5.2f} ({change:+.1f} %){ident}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
