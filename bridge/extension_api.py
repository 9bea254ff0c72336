"""The browser extension's endpoints (``/ext/``): pair, publish the camera, read its stats, leave.

The extension's service worker is the only client (``pairing`` guards the prefix). The
page that wants the camera never talks to the bridge: its camera is published here on the
existing publish path (``Bridge.publish`` with the echo, as the bridge page's
``/api/offer``), with the identity the person picked in the extension's popup, and the
enhanced video comes back on the same connection. Sessions go to one room,
``EXTENSION_ROOM``, so they show in ``/api/stats`` and can be watched like any publisher.
"""

from __future__ import annotations

from aiohttp import web

from .errors import HttpError
from .http_api import api_offer_body, identity_param
from .identities import list_identities
from .rooms import BRIDGE_KEY

EXTENSION_ROOM = "extension"


async def ext_hello(request: web.Request) -> web.Response:
    """Pairing check and what the popup shows: the identities and the bridge's default."""
    bridge = request.app[BRIDGE_KEY]
    return web.json_response({"bridge": "likeness", "identities": list_identities(),
                              "default": bridge.config.identity, "room": EXTENSION_ROOM})


async def ext_offer(request: web.Request) -> web.Response:
    """The page's camera offer (relayed by the service worker) in, the answer out; enhanced video returns."""
    bridge = request.app[BRIDGE_KEY]
    sdp = await api_offer_body(request)
    session = await bridge.publish(EXTENSION_ROOM, sdp, identity_param(request), echo=True)
    return web.json_response({"sdp": session.pc.localDescription.sdp, "type": "answer", "id": session.id,
                              "identity": session.identity, "codec": session.codec})


def _own_session(request: web.Request) -> str:
    sid = request.match_info["session"]
    s = request.app[BRIDGE_KEY].sessions.get(sid)
    if s is None or s.room != EXTENSION_ROOM:
        raise HttpError(404, "no such session")
    return sid


async def ext_stats(request: web.Request) -> web.Response:
    """One extension session's stats (fps, enhanced share, identity, the bridge's processing time)."""
    bridge = request.app[BRIDGE_KEY]
    return web.json_response(bridge.sessions[_own_session(request)].describe())


async def ext_leave(request: web.Request) -> web.Response:
    """The page stopped its camera (or the extension reconnects): close the session now, not at its watchdog."""
    await request.app[BRIDGE_KEY].close_session(_own_session(request))
    return web.json_response({"closed": True})


def add_extension_routes(router: web.UrlDispatcher) -> None:
    """The ``/ext/`` routes (guarded by ``pairing.pairing_middleware``)."""
    router.add_get("/ext/hello", ext_hello)
    router.add_post("/ext/offer", ext_offer)
    router.add_get("/ext/session/{session}", ext_stats)
    router.add_delete("/ext/session/{session}", ext_leave)
