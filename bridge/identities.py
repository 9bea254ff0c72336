"""The bridge's one door to the identity store and enrolment.

Names, the identities folder and stored identities are the store's (``enhancer.identity_store``):
one name rule and one home, so an identity ``likeness enroll`` made is one the page can list and
pick, and a name the store refuses is refused at the bridge's door too. Enrolment is looked up
lazily, so a build without it answers the page with 501 instead of failing to start.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from enhancer.errors import InputError, ModelError
from enhancer.identity_store import SUFFIX, IdentityStore, shared_bytes, validate_name


class EnrollUnavailable(RuntimeError):
    """Enrolment code is not installed in this build."""


def identities_dir() -> Path:
    """The store's identities folder under ``likeness_home()``."""
    return IdentityStore().dir


def valid_name(name: str | None) -> bool:
    """Whether the identity store accepts ``name`` (``validate_name``), as a yes or no for request checks."""
    try:
        validate_name(name or "")
    except InputError:
        return False
    return True


def list_identities() -> list[str]:
    """Names of enrolled identities: the store's files with valid names, unread (the page asks every call)."""
    d = identities_dir()
    if not d.is_dir():
        return []
    return sorted(name for p in d.glob(f"*{SUFFIX}") if p.is_file() and valid_name(name := p.name[: -len(SUFFIX)]))


def _usable(name: str) -> str:
    """``name`` if the store accepts it, else a ``ModelError``: like every other reason a call cannot use it."""
    if not valid_name(name):
        raise ModelError(f"invalid identity name {name!r} (letters, digits, '_', '-', '.'; max 64)")
    return name


def identity_path(name: str) -> Path:
    """Where the store keeps ``name``, always inside its identities folder."""
    return IdentityStore().path(_usable(name))


def load_identity(name: str | None) -> np.ndarray | None:
    """The stored identity tensor for ``name`` (None for no identity), validated by the identity store.

    Which encoder made it is checked by the engine that uses it (``IdentityStore.load``).
    """
    if not name:
        return None
    return IdentityStore().read(_usable(name)).identity


def shared_identity_bytes(name: str) -> bytes:
    """The stored identity ``name`` as its publisher shares it with its room's viewers: the store's
    file format without the kept photos (``identity_store.shared_bytes``)."""
    return shared_bytes(IdentityStore().read(_usable(name)))


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
