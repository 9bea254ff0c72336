"""`likeness degrade IMG --preset severe [--seed N] -o OUT.png`: see what a bad call does to a face.

Applies the same degradation presets used to make training pairs (``enhancer.degrade``), so
the output is what the model learns to undo; deterministic for a given seed.
"""

from __future__ import annotations

from pathlib import Path

from ..degrade import PRESETS


def register(sub) -> None:
    p = sub.add_parser("degrade", help="apply a video-call degradation preset to an image")
    p.add_argument("image", type=Path, help="input image (gray and RGBA are converted)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output image (.png or .jpg)")
    p.add_argument("--preset", choices=list(PRESETS), default="moderate", help="degradation strength")
    p.add_argument("--seed", type=int, default=0, help="seed for noise, codec choice and shift")
    p.add_argument("--frame", type=int, default=0, help="frame index when IMG is a video (default 0)")
    p.set_defaults(func=_degrade)


def _degrade(args) -> int:
    from ..degrade import degrade
    from .faces import check_output, read_input_image, warn_damage, write_output

    check_output(args.out)
    img, damage = read_input_image(args.image, args.frame)
    write_output(args.out, degrade(img, args.preset, seed=args.seed))
    warn_damage(args.image, damage)
    print(f"{args.preset} (seed {args.seed}) -> {args.out}")
    return 0
