"""What every request passes through: the bearer-token guard, then client errors as answers.

Safety: a bridge on a non-loopback bind needs a token (``config.check_config``), which then
guards every endpoint under /api, /whip and /whep; the page and its static files stay open
so it can ask for the token. Errors a client caused answer as the endpoint's clients read
them: JSON ``{"error": ...}`` under /api and /ext (the page, the extension), one line of text elsewhere (WHIP/WHEP).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .errors import HttpError, json_error, text_response
from .sdp import SdpError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GUARDED = ("/api/", "/whip/", "/whep/")


def _unauthorized(request: web.Request, token: str) -> web.Response | None:
    """The 401 for a guarded request without the right bearer token; None when it may pass."""
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    msg = "missing bearer token" if not given else "wrong bearer token"
    return web.Response(status=401, text=msg + "\n", content_type="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="likeness"'})


def auth_middleware(token: str | None) -> Any:
    """The app's one middleware: guard with ``token`` (None: no guard), answer client errors."""

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token and request.path.startswith(GUARDED) and (refused := _unauthorized(request, token)) is not None:
            return refused
        try:
            return await handler(request)
        except (HttpError, SdpError) as e:
            status, message = (e.status, e.message) if isinstance(e, HttpError) else (400, str(e))
            if request.path.startswith(("/api/", "/ext/")):  # the page and the extension read JSON
                return json_error(status, message)
            return text_response(status, message)

    return auth
