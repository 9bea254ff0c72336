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
    """The identity store's home ($LIKENESS_HOME, else its default); ~/.likeness if the store is absent."""
    try:
        from enhancer.identity_store import likeness_home as store_home
    except ImportError:
        return Path(os.environ.get("LIKENESS_HOME") or Path.home() / ".likeness")
    return store_home()


def identities_dir() -> Path:
    return likeness_home() / "identities"


def valid_name(name: str | None) -> bool:
    return bool(name) and bool(NAME_RE.fullmatch(name or "")) and ".." not in (name or "")


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
    """The stored identity tensor for ``name`` (None for no identity), validated by the identity store.

    Which encoder made it is checked by the engine that uses it (``IdentityStore.load``);
    without the store module, the tensor named 'identity' (else the first) is read as is.
    """
    if not name:
        return None
    path = identity_path(name)
    try:
        from enhancer.identity_store import IdentityStore
    except ImportError:
        IdentityStore = None  # noqa: N806
    if IdentityStore is not None:
        return IdentityStore(likeness_home()).read(name).identity
    if not path.is_file():
        raise ModelError(f"unknown identity {name!r}: {path} does not exist (enroll it first)")
    try:
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
    except Exception as e:
        raise ModelError(f"{path}: unreadable identity file ({type(e).__name__}: {e})") from None
    if not tensors:
        raise ModelError(f"{path}: identity file holds no tensors")
    return np.asarray(tensors.get("identity", next(iter(tensors.values()))), dtype=np.float32)


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


def merge_verdicts(uploads: list[dict[str, Any]], report: Any) -> list[dict[str, Any]]:
    """One verdict per uploaded file: the bridge's decode check, then the enrolment's own verdict.

    ``report['images']`` (enhancer.enroll's per-image list) covers only the decoded uploads,
    in order.
    """
    verdicts = list(report.get("images") or []) if isinstance(report, dict) else []
    out, k = [], 0
    for up in uploads:
        entry = dict(up)
        if up.get("decoded"):
            v = verdicts[k] if k < len(verdicts) and isinstance(verdicts[k], dict) else None
            k += 1
            if v is not None:
                entry["accepted"] = bool(v.get("accepted"))
                entry["reason"] = v.get("reason") or ""
                entry["used"] = bool(v.get("used", False))
        out.append(entry)
    return out


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
