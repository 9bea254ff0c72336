"""Entry point for `train` on a bare GPU machine: builds only the train subcommand's parser,
so modules that need PyAV/dlib/aiortc (absent there) are never imported."""

import argparse
import sys

from enhancer.commands import train

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="likeness")
    s = p.add_subparsers(dest="command", required=True)
    train.register(s)
    a = p.parse_args()
    sys.exit(a.func(a))
