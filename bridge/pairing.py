"""Pairing the browser extension with a bridge: the code a person confirms once, and the guard on ``/ext/``.

Why a code and not CORS: the extension hands *any* web page the enhanced camera, so its
signalling must not be reachable from web pages. The extension's service worker fetches
from its own origin (``chrome-extension://...``, allowed by its host permissions, so no CORS
and no Private Network Access preflight is involved) and sends the pairing code on every
request (``X-Likeness-Pairing``). The bridge never answers CORS, so a page cannot send that
header at all (its preflight fails), and a request that carries a web origin is refused
outright. The code is printed by ``likeness serve`` (a new one each run unless configured).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .errors import json_error

PAIRING_HEADER = "X-Likeness-Pairing"
EXT_PREFIX = "/ext/"
# no 0/O, 1/I/L: a person types the code from a terminal into the popup
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
MIN_CODE_CHARS = 8

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
