"""The `likeness` console script: subcommands registered from ``enhancer.commands``.

Every user-facing failure is a ``LikenessError`` printed as one line with a non-zero exit;
only genuine bugs produce a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Before torch is imported: with OpenMP's default active waiting, torch's CPU threads spin
# against the video encoder and other processes; measured 2,267 ms vs 27.6 ms per face on a
# loaded 2-core machine (engines/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import LikenessError

# Command modules, each exposing register(subparsers). Only commands that work are listed.
COMMAND_MODULES = [
    "enhancer.commands.data",
    "enhancer.commands.faces",
    "enhancer.commands.degrade",
    "enhancer.commands.train",
    "enhancer.commands.evaluate",
    "enhancer.commands.enhance",
    "enhancer.commands.serve",
    "enhancer.commands.extension",
    "enhancer.commands.call",
    "enhancer.commands.view",
    "enhancer.commands.enroll",
    "enhancer.commands.identities",
    "enhancer.commands.engines",
    "enhancer.commands.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="likeness", description="Real-time personalised face enhancement.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except LikenessError as e:
        print(f"likeness: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("likeness: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
