"""`likeness bench`: latency per stage, end to end and through WebRTC, against baselines.

The measuring code lives in ``benchmarks.bench`` (importable without the CLI, and run by the
lead's benchmark scripts too); this module only maps options onto ``BenchConfig``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..degrade import PRESETS
from ..errors import InputError


def _csv_ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{what} must be positive integers, got {text!r}")
    return values


def register(sub) -> None:
    p = sub.add_parser("bench", help="latency benchmark: per stage, end to end, through WebRTC, against baselines")
    p.add_argument("--quick", action="store_true",
                   help="under a minute, first run included: fewer runs, 1 student step, crop 128 and 480p "
                        "only, a short WebRTC call")
    p.add_argument("--engines", default="",
                   help="comma-separated engines, each optionally with a precision (torch:bf16, onnxruntime:int8); "
                        "default: every engine available here, onnxruntime:int8 at the student's own config, and "
                        "torch:bf16 where the CPU has bf16 instructions")
    p.add_argument("--steps", help="student DDIM steps to time, comma-separated (default 1,2,4; --quick 1); "
                                   "the teacher always runs its default steps too")
    p.add_argument("--crops", help="crop sides for the sampler, comma-separated (default 128,256; --quick 128)")
    p.add_argument("--source", type=Path,
                   help="video clip for the pipeline and WebRTC parts (default: the shared d13 clip if present, "
                        "else a synthetic panning face)")
    p.add_argument("--camera", choices=["none", *PRESETS], default="mild",
                   help="degrade every source frame with this preset first, as a poor webcam would (default mild: "
                        "the generator has work to do; on a clean face the pipeline skips it); none: as it is")
    p.add_argument("--skip-webrtc", action="store_true", help="leave out the WebRTC loopback call")
    p.add_argument("--webrtc-seconds", type=float, help="seconds measured per WebRTC run (default 10; --quick 3)")
    p.add_argument("--codec", choices=["vp8", "h264"], default="vp8", help="WebRTC video codec (default vp8)")
    p.add_argument("--json", type=Path, help="JSON report path (default <out>/bench-<date>.json)")
    p.add_argument("--out", type=Path, help="folder for the report and plots (default benchmarks/results/<date>/)")
    p.add_argument("--runs", type=int,
                   help="timed runs per micro config and frames per pipeline config (for tests; overrides presets)")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    # before torch loads (benchmarks.bench.run sets it too): passive OpenMP waits, see there
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from benchmarks.bench.config import BenchConfig
    from benchmarks.bench.run import bench

    if args.source is not None and not args.source.is_file():
        raise InputError(f"{args.source}: no such video file")
    if args.runs is not None and args.runs < 1:
        raise InputError("--runs must be at least 1")
    if args.webrtc_seconds is not None and args.webrtc_seconds <= 0:
        raise InputError("--webrtc-seconds must be positive")
    cfg = BenchConfig.make(
        args.quick, args.runs,
        engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()) or None,
        steps=_csv_ints(args.steps, "--steps"),
        crops=_csv_ints(args.crops, "--crops"),
        source=str(args.source) if args.source else None,
        camera=args.camera,
        skip_webrtc=True if args.skip_webrtc else None,
        webrtc_seconds=args.webrtc_seconds,
        codec=args.codec,
        plots=False if args.no_plots else None,
    )
    bench(cfg, args.json, args.out)
    return 0
