"""The page's watch mode for a room on another bridge: ``POST /api/view`` pulls that room's participant
here over WHEP and re-serves them in a room of this bridge, restored on this side of the link when
the switch is on (``remote_view``); ``DELETE /api/view/{id}`` stops it.

The bridge dials out only to the URL the page (behind the same token as everything else) gives it,
and only over http(s). A bridge that gathers loopback ICE candidates only (bound to 127.0.0.1 with
the default ``--loopback-ice``) cannot reach another machine's media, so it says so up front.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from enhancer.errors import LikenessError

from .errors import HttpError
from .ice import is_loopback_host
from .rooms import BRIDGE_KEY

MAX_URL = 2048


def view_request(body: Any, loopback: str) -> tuple[str, str | None, bool]:
    """(whep, token, restore) of a JSON ``{"whep": URL, "token": optional, "restore": optional bool}``
    body, checked; ``loopback``: the bridge's ICE mode (``BridgeConfig.loopback``)."""
    if not isinstance(body, dict) or not isinstance(body.get("whep"), str):
        raise HttpError(400, 'body must be JSON {"whep": URL, "token": optional, "restore": true|false}')
    whep, token, restore = body["whep"].strip(), body.get("token") or None, body.get("restore", True)
    parts = urlsplit(whep)
    if len(whep) > MAX_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError(400, "whep must be an http(s) URL of a room, e.g. http://host:8765/whep/main")
    if token is not None and not isinstance(token, str):
        raise HttpError(400, "token must be a string")
    if not isinstance(restore, bool):
        raise HttpError(400, "restore must be true or false")
    if loopback == "only" and not is_loopback_host(parts.hostname):
        raise HttpError(400, "this bridge gathers loopback ICE candidates only, so it cannot receive media from "
                             f"{parts.hostname}: start it with --loopback-ice add (or on a non-loopback --host)")
    return whep, token, restore


async def api_view_post(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    try:
        body = await request.json()
    except Exception:
        body = None
    whep, token, restore = view_request(body, bridge.config.loopback)
    if bridge.remote_views.build is None:
        raise HttpError(501, "this bridge does not restore remote streams")
    try:
        view = await bridge.remote_views.open(whep, token, restore)
    except LikenessError as e:  # unreachable, refused, no media, no video: the other side's doing
        raise HttpError(502, str(e)) from None
    return web.json_response(view.describe(), status=201, headers={"Location": f"/api/view/{view.id}"})


async def api_view_delete(request: web.Request) -> web.Response:
    if not await request.app[BRIDGE_KEY].remote_views.close(request.match_info["view"]):
        raise HttpError(404, "no such view")
    return web.Response(status=204)


def add_view_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/api/view", api_view_post)
    router.add_delete("/api/view/{view}", api_view_delete)
