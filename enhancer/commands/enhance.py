"""`likeness enhance INPUT -o OUTPUT` (images and videos) and `likeness demo`."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _pipeline_args(p) -> None:
    p.add_argument("--identity", help="enrolled identity name (default: generic mode)")
    p.add_argument("--engine", default="auto", help="auto | torch | onnxruntime | tensorrt | bicubic (no model)")
    p.add_argument("--steps", type=int, help="sampler steps (default: the student's own)")
    p.add_argument("--weights", type=Path, help="weights file (default: the packaged student)")
    add_strength_arg(p)


def strength_type(text: str):
    """argparse type for --strength: a clear one-line usage error on a bad value."""
    import argparse

    from ..strength import parse_strength

    try:
        return parse_strength(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_strength_arg(p) -> None:
    p.add_argument("--strength", type=strength_type, default="auto", metavar="auto|full|0-1",
                   help="how much of the generator's change to keep: auto (less on sharp faces; default), "
                        "full, or a fixed fraction")


def add_late_frames_arg(p) -> None:
    p.add_argument("--late-frames", choices=["reuse", "raw"], default="reuse",
                   help="a frame the generator cannot finish by its deadline gets the last restored detail "
                        "(reuse; default) or goes out as it came (raw)")


def late_frames_config(choice: str):
    """CLI choice -> ``ReuseConfig`` for the bridge factory (None: late frames go out raw)."""
    from ..detail import ReuseConfig

    return ReuseConfig() if choice == "reuse" else None


def register(sub) -> None:
    e = sub.add_parser("enhance", help="enhance faces in an image or video file")
    e.add_argument("input", type=Path)
    e.add_argument("-o", "--output", type=Path, required=True)
    _pipeline_args(e)
    e.set_defaults(func=_enhance)

    d = sub.add_parser("demo", help="run the whole pipeline on a built-in face photo; no camera or files needed")
    d.add_argument("--out", type=Path, default=Path("demo-output"),
                   help="folder for before_after.png, face_zoom.png (the face enlarged) and timings.json")
    d.add_argument("--preset", default="moderate", choices=["mild", "moderate", "severe"],
                   help="call quality to simulate (at 'severe' the sample photo's face is too small for HOG)")
    d.add_argument("--runs", type=int, default=30, help="timed pipeline runs for the summary")
    _pipeline_args(d)
    d.set_defaults(func=_demo)


def _build(args):
    from .assemble import build_pipeline

    return build_pipeline(args.identity, args.engine, args.steps, str(args.weights) if args.weights else None,
                          strength=args.strength)


def _enhance(args) -> int:
    from ..enhance import enhance_image, enhance_video, is_image
    from ..errors import InputError

    if not args.input.exists():
        raise InputError(f"{args.input}: no such file")
    if args.output.resolve() == args.input.resolve():
        raise InputError("output must differ from input (the original is never overwritten)")
    pipe = _build(args)
    if is_image(args.input):
        r = enhance_image(pipe, args.input, args.output)
    else:
        r = enhance_video(pipe, args.input, args.output)
    print(json.dumps(r))
    print(f"wrote {args.output}")
    return 0


def demo_image_path() -> Path:
    """A real face photo that ships inside a dependency (matplotlib's sample data)."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def _demo(args) -> int:
    from .. import demo_figure as fig
    from ..degrade import degrade
    from ..imageio import read_image, write_image

    src = demo_image_path()
    clean = read_image(src)
    degraded = degrade(clean, args.preset, seed=0)
    pipe = _build(args)
    first = pipe.process(degraded)
    if first.faces == 0:
        from ..errors import InputError

        raise InputError(f"no face found in the demo image after '{args.preset}' degradation; try a milder --preset")
    totals = {}
    for _ in range(args.runs):
        r = pipe.process(degraded)
        for k, v in r.timings_ms.items():
            totals.setdefault(k, []).append(v)
    quality = f"{args.preset} call quality"
    row = fig.frames_row([clean, degraded, r.frame], ["original", quality, "Likeness"])
    box = fig.face_box(fig.largest_face(first.landmarks), degraded.shape)
    strip = fig.zoom_strip([degraded, r.frame, clean], [quality, "Likeness", "original"], box)
    args.out.mkdir(parents=True, exist_ok=True)
    write_image(args.out / "before_after.png", fig.before_after(row, strip))
    write_image(args.out / "face_zoom.png", strip)
    summary = {"source": str(src), "frame": list(clean.shape[:2]), "faces": r.faces,
               "engine": getattr(pipe.engine, "describe", lambda: {"engine": pipe.engine.name})(),
               "identity": args.identity or "generic (null identity)", "runs": args.runs,
               "timings_ms_median": {k: round(statistics.median(v), 2) for k, v in totals.items()},
               "face_box": list(box)}
    (args.out / "timings.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'before_after.png'}")
    print(f"wrote {args.out / 'face_zoom.png'}")
    return 0
