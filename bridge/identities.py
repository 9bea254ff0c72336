"""Thin adapter between the bridge and the identity store / enrolment code.

The identity store and enrolment live elsewhere in the project and are still being
written; the bridge only touches them through these functions, so re-pointing them is a
one-file change.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from enhancer.errors import ModelError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class EnrollUnavailable(RuntimeError):
    """Enrolment code is not installed in this build."""


def likeness_home() -> Path:
    """$LIKENESS_HOME, or ~/.likeness."""
    return Path(os.environ.get("LIKENESS_HOME") or Path.home() / ".likeness")


def identities_dir() -> Path:
    return likeness_home() / "identities"


def valid_name(name: str | None) -> bool:
    return bool(name) and bool(NAME_RE.match(name or "")) and ".." not in (name or "")


def list_identities() -> list[str]:
    """Names of enrolled identities: $LIKENESS_HOME/identities/*.safetensors."""
    d = identities_dir()
    if not d.is_dir():
        return []
    return sorted(p.stem for p in d.glob("*.safetensors") if p.is_file() and valid_name(p.stem))


def identity_path(name: str) -> Path:
    if not valid_name(name):
        raise ModelError(f"invalid identity name {name!r} (letters, digits, '_', '-', '.'; max 64)")
    return identities_dir() / f"{name}.safetensors"


def load_identity(name: str | None) -> np.ndarray | None:
    """The identity vector for ``name`` (None for no identity).

    Reads the tensor named 'identity' (else the first tensor) and flattens it; re-point to
    the identity store's loader once it exists.
    """
    if not name:
        return None
    path = identity_path(name)
    if not path.is_file():
        raise ModelError(f"unknown identity {name!r}: {path} does not exist (enroll it first)")
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except Exception as e:
        raise ModelError(f"{path}: unreadable identity file ({type(e).__name__}: {e})") from None
    if not tensors:
        raise ModelError(f"{path}: identity file holds no tensors")
    vec = tensors.get("identity", next(iter(tensors.values())))
    return np.asarray(vec, dtype=np.float32).reshape(-1)


def enroll_function() -> Callable[[str, list[np.ndarray]], Any]:
    """``enhancer.enroll.enroll_from_images``, looked up lazily so the bridge works without it."""
    try:
        mod = importlib.import_module("enhancer.enroll")
    except ModuleNotFoundError as e:
        if e.name in ("enhancer.enroll", "enhancer"):
            raise EnrollUnavailable("enrolment is not available in this build (no enhancer.enroll module)") from None
        raise
    fn = getattr(mod, "enroll_from_images", None)
    if not callable(fn):
        raise EnrollUnavailable("enrolment is not available in this build (enhancer.enroll has no enroll_from_images)")
    return fn


def report_to_json(report: Any) -> Any:
    """Make whatever the enrolment returns JSON-able (dataclasses, numpy, paths)."""
    import dataclasses

    if dataclasses.is_dataclass(report) and not isinstance(report, type):
        report = dataclasses.asdict(report)
    if isinstance(report, dict):
        return {str(k): report_to_json(v) for k, v in report.items()}
    if isinstance(report, list | tuple):
        return [report_to_json(v) for v in report]
    if isinstance(report, np.generic):
        return report.item()
    if isinstance(report, np.ndarray):
        return report.tolist() if report.size <= 64 else f"<array {report.shape}>"
    if isinstance(report, Path):
        return str(report)
    if report is None or isinstance(report, str | int | float | bool):
        return report
    return str(report)
