"""Pairing the browser extension with a bridge: the code a person confirms once, and the guard on ``/ext/``.

Why a code and not CORS: the extension hands *any* web page the enhanced camera, so its
signalling must not be reachable from web pages. The extension's service worker fetches
from its own origin (``chrome-extension://...``, allowed by its host permissions, so no CORS
and no Private Network Access preflight is involved) and sends the pairing code on every
request (``X-Likeness-Pairing``). The bridge never answers CORS, so a page cannot send that
header at all (its preflight fails), and a request that carries a web origin is refused
outright. The code is printed by ``likeness serve``.

Why it is kept on disk: the promise is a code the person confirms once. ``serve`` makes it the
first time, keeps it in ``<likeness home>/pairing-code`` (mode 0600, beside ``identities/``) and
reuses it on every later run, so a restart never breaks a paired extension; only
``serve --new-pairing-code`` replaces it (old extensions then get 403 and must pair again).
``--pairing-code`` / ``$LIKENESS_PAIRING_CODE`` override it for one run without writing anything.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from enhancer.errors import LikenessError

from .errors import json_error

PAIRING_HEADER = "X-Likeness-Pairing"
EXT_PREFIX = "/ext/"
# no 0/O, 1/I/L: a person types the code from a terminal into the popup
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MIN_CODE_CHARS = 8
PAIRING_FILE = "pairing-code"
MAX_FILE_BYTES = 256  # a code and a newline; anything bigger is not ours

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_pairing_code() -> str:
    """A fresh code, ``XXXX-XXXX`` (about 40 bits; only local processes can even try one)."""
    chars = "".join(secrets.choice(ALPHABET) for _ in range(8))
    return f"{chars[:4]}-{chars[4:]}"


def normalize_code(code: str) -> str:
    """What is compared: case, spaces and dashes do not matter to a person typing the code."""
    return "".join(ch for ch in code.upper() if ch not in " -\t")


def check_code(code: str) -> str | None:
    """Why a configured code is unusable, or None when it is fine."""
    norm = normalize_code(code)
    if len(norm) < MIN_CODE_CHARS:
        return f"pairing code too short: use at least {MIN_CODE_CHARS} letters or digits"
    if not norm.isascii() or not norm.isalnum():
        return "pairing code must be letters and digits (dashes and spaces are ignored)"
    return None


@dataclass(frozen=True)
class PairingCode:
    """The code ``serve`` uses, and a note for the person on whether to (re-)pair."""

    code: str
    note: str


def pairing_code_path(home: Path | None = None) -> Path:
    """``<home>/pairing-code``, beside the identities: per user, private, found again next run."""
    if home is None:
        from enhancer.identity_store import likeness_home  # numpy & co.: only when needed

        home = likeness_home()
    return Path(home) / PAIRING_FILE


def read_pairing_code(path: Path) -> str | None:
    """The stored code, None when there is none yet; a corrupt or unreadable file is an error,
    never silently replaced (that would unpair the person's extension without telling them)."""
    fix = "fix or delete it, or run `likeness serve --new-pairing-code`"
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise LikenessError(f"cannot read pairing code file {path}: {e.strerror or e}; {fix}") from None
    try:
        code = data.decode("ascii").strip()
    except UnicodeDecodeError:
        code = ""
    why = "too big" if len(data) > MAX_FILE_BYTES else check_code(code)
    if why is not None:
        raise LikenessError(f"corrupt pairing code file {path} ({why}); {fix}")
    return code


def write_pairing_code(path: Path, code: str) -> None:
    """Store ``code`` atomically with mode 0600: a temp file in the same folder, then
    ``os.replace``, so a crash or a reader never sees half a code or a world-readable one."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)  # like the identity store's home
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{PAIRING_FILE}.", suffix=".tmp")
    except OSError as e:
        raise LikenessError(f"cannot write pairing code file {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(code + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LikenessError(f"cannot write pairing code file {path}: {e.strerror or e}") from None


def serve_pairing_code(override: str | None = None, *, rotate: bool = False,
                       home: Path | None = None) -> PairingCode:
    """The code ``likeness serve`` runs with: ``override`` as given (checked later by
    ``check_config``, never written), else the stored one, made on first use or on ``rotate``."""
    if override is not None:
        if rotate:
            raise LikenessError("--new-pairing-code and --pairing-code (or $LIKENESS_PAIRING_CODE) "
                                "exclude each other")
        return PairingCode(override, "given for this run, not saved")
    path = pairing_code_path(home)
    code = None if rotate else read_pairing_code(path)
    if code is not None:
        return PairingCode(code, f"from {path}; paired extensions stay paired")
    code = new_pairing_code()
    write_pairing_code(path, code)
    return PairingCode(code, f"new, saved in {path}: type it into the extension's popup"
                       + (" (the old code no longer works)" if rotate else ""))


def _refusal(request: web.Request, code: str) -> web.Response | None:
    """The 401/403 for an ``/ext/`` request that is not from the paired extension; None when it may pass."""
    origin = request.headers.get("Origin", "")
    if origin and not origin.startswith("chrome-extension://"):
        return json_error(403, "extension endpoints do not answer web pages")
    given = request.headers.get(PAIRING_HEADER, "")
    if not given:
        return json_error(401, "missing pairing code: pair the extension with the code `likeness serve` printed")
    if not hmac.compare_digest(normalize_code(given).encode(), normalize_code(code).encode()):
        return json_error(403, "wrong pairing code")
    return None


def pairing_middleware(code: str) -> Any:
    """Guard every ``/ext/`` request with the pairing code; everything else passes untouched."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(EXT_PREFIX) and (refused := _refusal(request, code)) is not None:
            return refused
        return await handler(request)

    return guard
