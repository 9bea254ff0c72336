"""`likeness data prepare SRC --size 128 --out DIR`."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prep = dsub.add_parser("prepare", help="detect, align and crop a labelled face folder (resumable)")
    prep.add_argument("src", type=Path, help="folder with identity sub-folders and labels.csv (path,identity)")
    prep.add_argument("--out", type=Path, required=True, help="output folder for aligned crops")
    prep.add_argument("--size", type=int, default=128, choices=[128, 256, 512], help="crop size S")
    prep.add_argument("--workers", type=int, default=2)
    prep.set_defaults(func=_prepare)


def _prepare(args) -> int:
    from ..dataprep import PrepareConfig, prepare

    report = prepare(args.src, args.out, PrepareConfig(size=args.size, workers=max(1, args.workers)))
    print(json.dumps(report, indent=2))
    return 0
