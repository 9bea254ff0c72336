"""The HTTP endpoints of a call: WHIP/WHEP (RFC 9725) and the page's JSON API.

Each handler reads and checks its request here, then asks the rooms (``app[BRIDGE_KEY]``);
what a client got wrong is an ``HttpError``, which ``middleware`` turns into the answer.
Non-trickle ICE: answers carry all candidates, so PATCH on a session is 405.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .client import ENHANCED_HEADER, IDENTITY_REL
from .errors import HttpError, text_response
from .ice import ice_server
from .identities import list_identities, valid_name
from .rooms import BRIDGE_KEY
from .sdp import MAX_SDP_BYTES
from .session import Session

ROOM_RE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")

# ------------------------------------------------------------------------ reading a request


def _valid_room(room: str) -> bool:
    return bool(room) and len(room) <= 64 and set(room) <= ROOM_RE_CHARS


def room_param(request: web.Request) -> str:
    """The path's ``{room}``, checked."""
    room = request.match_info["room"]
    if not _valid_room(room):
        raise HttpError(400, "room name must be 1-64 characters of letters, digits, '_', '-', '.'")
    return room


async def read_body(request: web.Request, content_type: str, limit: int, what: str) -> bytes:
    """The whole body of a ``content_type`` request, refused (415, 413) otherwise or over ``limit`` bytes."""
    if request.content_type != content_type:
        raise HttpError(415, f"Content-Type must be {content_type}")
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, f"{what} larger than {limit} bytes")
    # read(n) returns what has arrived, up to n bytes, not the whole body: one call took the
    # first TCP segments of a browser's 25 KB WHEP offer now and then, and the truncated offer
    # failed as "malformed SDP", "no DTLS fingerprint" or an answer with m-lines missing
    body = bytearray()
    while chunk := await request.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            raise HttpError(413, f"{what} larger than {limit} bytes")
    return bytes(body)


async def _read_sdp(request: web.Request) -> str:
    body = await read_body(request, "application/sdp", MAX_SDP_BYTES, "SDP")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "malformed SDP: not UTF-8 text") from None


def identity_param(request: web.Request) -> str | None:
    """The ``?identity=`` of a publish request (checked; None when absent)."""
    ident = request.query.get("identity") or None
    if ident is not None and not valid_name(ident):
        raise HttpError(400, f"invalid identity name {ident!r}")
    return ident


def _flag(request: web.Request, param: str, header: str | None = None) -> bool:
    """A yes/no of a request: the ``header`` or the ``param`` query parameter, "1"/"true"/"yes"."""
    values = [v for v in (request.headers.get(header) if header else None, request.query.get(param))
              if v is not None]
    flags = set()
    for v in values:
        v = v.strip().lower()
        if v not in ("1", "true", "yes", "0", "false", "no", ""):
            name = f"{header} (or ?{param}=)" if header else f"?{param}="
            raise HttpError(400, f"{name} must be 1 or 0, got {v!r}")
        flags.add(v in ("1", "true", "yes"))
    return True in flags


def _enhanced_flag(request: web.Request) -> bool:
    """Whether a WHIP publisher says it enhanced its video already: the ``X-Likeness-Enhanced``
    header (what ``likeness call`` sends) or the ``enhanced`` query parameter."""
    return _flag(request, "enhanced", ENHANCED_HEADER)


def _share_flag(request: web.Request) -> bool:
    """Whether a publisher consents to share the identity the bridge enhances it with (``identity_share``)."""
    return _flag(request, "share_identity")


def _created(session: Session, link: str | None = None) -> web.Response:
    assert session.pc is not None  # a session answered over HTTP has a peer connection
    headers = {
        "Location": session.location,
        "X-Likeness-Session": session.id,
        "X-Likeness-Publishers": ",".join(session.publishers),
    }
    if link:
        headers["Link"] = link
    return web.Response(status=201, text=session.pc.localDescription.sdp, content_type="application/sdp",
                        headers=headers)


# ----------------------------------------------------------------------------- WHIP / WHEP


async def whip_post(request: web.Request) -> web.Response:
    """WHIP ingest: a publisher's SDP offer in, ``201`` with the answer and its ``Location`` out."""
    bridge = request.app[BRIDGE_KEY]
    room = room_param(request)
    session = await bridge.publish(room, await _read_sdp(request), identity_param(request), echo=False,
                                   enhanced=_enhanced_flag(request), share_identity=_share_flag(request))
    return _created(session)


async def whep_post(request: web.Request) -> web.Response:
    """WHEP playback: the offer's video m-lines get the room's publishers in join order."""
    bridge = request.app[BRIDGE_KEY]
    room = room_param(request)
    sdp = await _read_sdp(request)
    session = await bridge.view(room, sdp, exclude=request.query.get("exclude"))
    # advertise the identity the viewer's (first) participant shares, if any (``identity_share``)
    shares = bridge.shared_identity(session) is not None
    return _created(session, f'<{session.location}/identity>; rel="{IDENTITY_REL}"' if shares else None)


async def session_delete(request: web.Request) -> web.Response:
    """Leave: DELETE on the session's ``Location``."""
    bridge = request.app[BRIDGE_KEY]
    room, sid = room_param(request), request.match_info["session"]
    role = "publisher" if request.path.startswith("/whip/") else "viewer"
    s = bridge.sessions.get(sid)
    if s is None or s.room != room or s.role != role:
        return text_response(404, "no such session")
    await bridge.close_session(sid)
    return web.Response(status=200)


async def session_patch(request: web.Request) -> web.Response:
    """RFC 9725: a server without trickle ICE / ICE restart support answers PATCH with 405."""
    return text_response(405, "trickle ICE and ICE restarts are not supported; send complete offers", Allow="DELETE")


# ------------------------------------------------------------------------------ the page's API


async def api_offer_body(request: web.Request) -> str:
    """The SDP of a JSON ``{"sdp": ..., "type": "offer"}`` body (the page's and the extension's offers)."""
    try:
        body = await request.json()
        sdp, typ = body["sdp"], body.get("type", "offer")
    except Exception:
        raise HttpError(400, 'body must be JSON {"sdp": ..., "type": "offer"}') from None
    if typ != "offer" or not isinstance(sdp, str):
        raise HttpError(400, "type must be 'offer' and sdp a string")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise HttpError(413, f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    return sdp


async def api_offer(request: web.Request) -> web.Response:
    """The page's call: JSON offer in, JSON answer out; the enhanced video comes back on the same connection."""
    bridge = request.app[BRIDGE_KEY]
    sdp = await api_offer_body(request)
    room = request.query.get("room", "main")
    if not _valid_room(room):
        raise HttpError(400, "invalid room name")
    session = await bridge.publish(room, sdp, identity_param(request), echo=True, share_identity=_share_flag(request))
    return web.json_response(
        {
            "sdp": session.pc.localDescription.sdp,
            "type": "answer",
            "id": session.id,
            "location": session.location,
            "codec": session.codec,
            "room": room,
        }
    )


async def api_identities(request: web.Request) -> web.Response:
    """The enrolled identities the page can pick, and the bridge's default."""
    bridge = request.app[BRIDGE_KEY]
    return web.json_response({"identities": list_identities(), "default": bridge.config.identity})


async def api_stats(request: web.Request) -> web.Response:
    """Per-session and shared-encoder stats, optionally of one session or room."""
    bridge = request.app[BRIDGE_KEY]
    return web.json_response(bridge.stats(request.query.get("session"), request.query.get("room")))


async def api_config(request: web.Request) -> web.Response:
    """The settings the page needs to set up its own peer connection (ICE servers with credentials)."""
    c = request.app[BRIDGE_KEY].config
    ice = []
    for url in c.ice_servers:
        server = ice_server(url)
        entry: dict[str, Any] = {"urls": server.urls}
        if server.username:
            entry.update(username=server.username, credential=server.credential)
        ice.append(entry)
    return web.json_response(
        {
            "codec": c.codec,
            "bitrate": c.bitrate,
            "identity": c.identity,
            "auth": bool(c.token),
            "loopback": c.loopback,
            "ice_servers": ice,
        }
    )
