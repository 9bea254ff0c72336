"""`likeness enroll NAME --photos P [P ...] | --video FILE | --camera [INDEX]`.

Prints a verdict per image (accepted, or rejected with the reason) as it goes, then where
the identity was stored. Never replaces an existing identity unless ``--force``: it is the
user's data. Identities are stored locally only (see ``enhancer.identity_store``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..enroll import Candidate, EnrollConfig


def register(sub) -> None:
    d = EnrollConfig()
    p = sub.add_parser("enroll", help="enroll a person's identity from photos, a video or a camera",
                       description="Check candidate images, compute the identity with the model's encoder "
                                   "and store it under $LIKENESS_HOME/identities (local only).")
    p.add_argument("name", help="identity name: 1-64 letters, digits, '_', '-', '.'")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--photos", nargs="+", type=Path, metavar="P", help="photos of the person (alone, frontal)")
    src.add_argument("--video", type=Path, metavar="FILE", help="a clip of the person (frames are sampled)")
    src.add_argument("--camera", nargs="?", type=int, const=0, metavar="INDEX",
                     help="capture from a camera (default index 0)")
    p.add_argument("--min-accepted", type=int, default=d.min_accepted,
                   help=f"fewest usable images to enroll (default {d.min_accepted})")
    p.add_argument("--keep-photos", action="store_true",
                   help="also store the aligned reference crops in the identity file (off by default)")
    p.add_argument("--no-reference-detail", action="store_true",
                   help="store no face crops at all: the identity keeps only the encoder's output, and the "
                        "face gets no detail from your references (by default 128-px aligned crops are "
                        "stored for it)")
    p.add_argument("--weights", type=Path, default=None, help="model weights (default: the packaged student)")
    p.add_argument("--force", action="store_true", help="replace an existing identity of the same name")
    t = p.add_argument_group("checks")
    t.add_argument("--min-eye-distance", type=float, default=d.min_eye_distance,
                   help=f"px between eye centres (default {d.min_eye_distance:g})")
    t.add_argument("--min-sharpness", type=float, default=d.min_sharpness,
                   help=f"Laplacian variance of the aligned 128-px crop (default {d.min_sharpness:g})")
    t.add_argument("--max-yaw", type=float, default=d.max_yaw,
                   help=f"nose offset from the eye midline / eye distance (default {d.max_yaw:g})")
    t.add_argument("--max-roll", type=float, default=d.max_roll, help=f"degrees (default {d.max_roll:g})")
    t.add_argument("--samples", type=int, default=d.video_samples,
                   help=f"frames examined from a video or camera (default {d.video_samples})")
    p.set_defaults(func=_enroll)


def _line(c: Candidate) -> str:
    if not c.accepted:
        return f"  rejected  {c.source}: {c.reason}"
    return (f"  accepted  {c.source}  (eye distance {c.eye_distance:.0f} px, sharpness {c.sharpness:.0f}, "
            f"yaw {c.yaw:+.2f}, roll {c.roll:+.0f} deg)")


def _enroll(args: argparse.Namespace) -> int:
    from ..enroll import enroll_from_camera, enroll_from_paths, enroll_from_video

    cfg = EnrollConfig(min_eye_distance=args.min_eye_distance, min_sharpness=args.min_sharpness,
                       max_yaw=args.max_yaw, max_roll=args.max_roll, min_accepted=args.min_accepted,
                       video_samples=args.samples, reference_detail=not args.no_reference_detail)
    kw = {"config": cfg, "weights": args.weights, "keep_photos": args.keep_photos, "force": args.force,
          "on_candidate": lambda c: print(_line(c), flush=True)}
    # verdicts are printed as they come, so a failed enrolment has already shown its reasons
    if args.photos:
        report = enroll_from_paths(args.name, args.photos, **kw)
    elif args.video:
        report = enroll_from_video(args.name, args.video, **kw)
    else:
        def prompt() -> None:
            print(f"capturing from camera {args.camera} for {cfg.camera_seconds:g} s: look at the camera "
                  "and turn your head a little", flush=True)

        report = enroll_from_camera(args.name, args.camera, on_open=prompt, **kw)
    used = [i["source"] for i in report["images"] if i["used"]]
    print(f"{report['accepted']} of {report['examined']} {report['source']} accepted; "
          f"{report['n_refs']} used as references: {', '.join(used)}")
    kept = " (with the reference photos)" if report["photos_kept"] else ""
    print(f"stored identity '{report['name']}'{kept} -> {report['path']}")
    return 0
