"""What C libraries print on fd 2, captured so the CLI can report it in its own words."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def captured_c_stderr() -> Iterator[list[str]]:
    """Capture what C libraries (libjpeg, libpng) print on fd 2 while decoding.

    They write warnings such as 'Corrupt JPEG data' straight to the process's stderr, which
    would break the CLI's one-line error contract; we collect them and report them ourselves.
    """
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines += [ln.strip() for ln in tmp.read().decode("utf-8", "replace").splitlines() if ln.strip()]
