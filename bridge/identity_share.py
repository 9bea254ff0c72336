"""A publisher's identity offered to the viewers of its room, only by the publisher's consent.

Why: after a poor link only the receiver can undo the codec's damage, and it restores the other
person far better towards their identity than generically (``likeness view``). An identity is
biometric data, so the bridge hands it on under these rules:

* opt-in only: ``?share_identity=1`` on the publisher's WHIP POST (or the page's offer) shares the
  identity the bridge enhances it with; a publisher that enhances itself (``likeness call
  --share-identity``) uploads its own with ``PUT {its Location}/identity`` (the store's file format,
  validated here like a stored file, kept photos stripped; the aligned 128-px reference crops of
  the detail transfer do go with it, so sharing shares those face crops);
* only to viewers of the same room: ``GET /whep/{room}/{viewer}/identity[?publisher=ID]``, the
  viewer's own WHEP session proving it watches that room, behind the same token as watching
  (``middleware`` guards /whep/); the WHEP answer advertises it in a ``Link`` header
  (``client.IDENTITY_REL``);
* in memory only, on the publisher's session: dropped when the publisher leaves (404 after) or
  withdraws it (``DELETE {its Location}/identity``).
"""

from __future__ import annotations

from aiohttp import web

from enhancer.errors import ModelError
from enhancer.identity_store import MAX_FILE_BYTES, parse_identity, shared_bytes

from .errors import HttpError
from .http_api import read_body, room_param
from .rooms import BRIDGE_KEY
from .session import Session

IDENTITY_TYPE = "application/octet-stream"


def _session(request: web.Request, role: str) -> Session:
    """The path's session, if it is a ``role`` of the path's room; else 404 (no hint which part was wrong)."""
    room, sid = room_param(request), request.match_info["session"]
    s = request.app[BRIDGE_KEY].sessions.get(sid)
    if s is None or s.room != room or s.role != role:
        raise HttpError(404, f"no such {'viewer' if role == 'viewer' else 'publisher'} session in room {room!r}")
    return s


async def identity_get(request: web.Request) -> web.Response:
    """A viewer fetches the identity its participant shares (bytes in the store's format), else 404."""
    viewer = _session(request, "viewer")
    pub = request.app[BRIDGE_KEY].shared_identity(viewer, request.query.get("publisher") or None)
    if pub is None or pub.shared_identity is None:
        raise HttpError(404, "this participant shares no identity")
    return web.Response(body=pub.shared_identity, content_type=IDENTITY_TYPE,
                        headers={"Cache-Control": "no-store", "X-Likeness-Publisher": pub.id})


async def identity_put(request: web.Request) -> web.Response:
    """A publisher shares its own identity with its room's viewers (its consent); 400 if it is not one."""
    pub = _session(request, "publisher")
    body = await read_body(request, IDENTITY_TYPE, MAX_FILE_BYTES, "identity")
    try:
        stored = parse_identity(body, "shared identity")
    except ModelError as e:
        raise HttpError(400, str(e)) from None
    pub.shared_identity = shared_bytes(stored)
    return web.Response(status=204)


async def identity_delete(request: web.Request) -> web.Response:
    """A publisher withdraws its consent: viewers get 404 from now on."""
    _session(request, "publisher").shared_identity = None
    return web.Response(status=204)


def add_identity_share_routes(r: web.UrlDispatcher) -> None:
    r.add_get("/whep/{room}/{session}/identity", identity_get)
    r.add_put("/whip/{room}/{session}/identity", identity_put)
    r.add_delete("/whip/{room}/{session}/identity", identity_delete)
