"""The bridge server: rooms with enhanced fan-out, WHIP/WHEP endpoints, the web page and its API.

* A publisher (WHIP ``POST /whip/{room}``, or the page's ``POST /api/offer``) sends video;
  the bridge wraps it in an ``EnhancingTrack`` and fans it out to every viewer (WHEP
  ``POST /whep/{room}``) of the room: enhanced once (one aiortc ``MediaRelay`` per publisher)
  and, by default, encoded once per codec (``fanout.SharedEncoder``), not once per viewer.
* A WHIP publisher that enhanced its video itself (``likeness call`` sends the header
  ``X-Likeness-Enhanced: 1``; ``?enhanced=1`` works too) is relayed untouched, never enhanced
  twice. The page's ``/api/offer`` ignores it: the page sends its raw camera.
* Non-trickle ICE: answers carry all candidates, so PATCH on a session is 405.
* Safety: loopback bind by default; a non-loopback bind needs a bearer token, which then
  guards every endpoint under /api, /whip and /whep. Bodies are capped; bad SDP is a 400.

All state lives on a ``Bridge`` object owned by the aiohttp app, never in module globals.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import logging
import secrets
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from enhancer.errors import InputError, LikenessError, ModelError

from .client import ENHANCED_HEADER
from .fanout import PacketTrack, SharedEncoder, shareable
from .identities import (
    EnrollUnavailable,
    enroll_function,
    list_identities,
    merge_verdicts,
    report_to_json,
    valid_name,
)
from .jitter import release_frames_on_marker
from .rtc import (
    CODECS,
    MAX_SDP_BYTES,
    OfferInfo,
    SdpError,
    check_offer,
    control_sender_rate,
    ice_server,
    is_loopback_host,
    keep_loopback_candidates,
    loopback_candidates,
    negotiated_codec,
    negotiated_codecs,
    prefer_codec,
    rtc_configuration,
)
from .track import EnhancingTrack, ProcessorFactory

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
ROOM_RE_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
SESSION_OPEN_TIMEOUT_S = 30.0  # a session whose peer never connects is reaped after this
WATCH_INTERVAL_S = 0.5  # how often each session's watchdog looks
FANOUTS = ("shared", "per-viewer")
FRAME_RELEASES = ("marker", "aiortc")


@dataclass(frozen=True)
class BridgeConfig:
    """Everything ``likeness serve`` can set."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    ice_servers: tuple[str, ...] = ()
    codec: str | None = None  # "vp8" | "h264" | None (first codec the peer offers)
    bitrate: int | None = None  # bit/s ceiling of each outgoing video stream
    identity: str | None = None  # default identity for publishers that do not pick one
    deadline_frames: float = 1.5
    max_body_bytes: int = 24 * 1024 * 1024  # enrolment uploads; SDP is capped separately
    max_enroll_images: int = 32
    max_sessions: int = 24  # publishers + viewers; each costs a pipeline, or a sender (and, per-viewer, an encoder)
    # ICE host candidates: "only" 127.0.0.1 | "add" it to the machine's addresses | "off" (the
    # machine's addresses only); None: "only" on a loopback host (a bridge bound to 127.0.0.1 is
    # for this machine, so it should not announce the machine's network addresses), else "off"
    loopback_ice: str | None = None
    # a connected publisher that sends no video for this long is closed (0: never). Without it a
    # killed or unplugged sender is noticed only by ICE consent expiry, ~30 s of frozen video for
    # its viewers; browsers keep sending (black) frames while a camera is muted, so silence is death.
    # Viewers likewise: one whose RTCP receiver reports (sent every ~1 s while video arrives) stop
    # for this long is gone, and closing it stops sending (and encoding, if it was the last) for nobody.
    media_idle_s: float = 8.0
    # "shared": one encoder per publisher and codec feeds all its viewers (an SFU's one encoding);
    # "per-viewer": aiortc's default, an encoder per viewer (each at its own REMB bitrate)
    fanout: str = "shared"
    # "marker": an incoming video frame goes to the decoder when its last (RTP-marked) packet
    # arrives; "aiortc": when the next frame's first packet does (aiortc's rule, one frame later)
    frame_release: str = "marker"

    @property
    def loopback(self) -> str:
        """How ICE treats 127.0.0.1 (see ``rtc.enable_loopback_candidates``)."""
        if self.loopback_ice is not None:
            return self.loopback_ice
        return "only" if is_loopback_host(self.host) else "off"


async def receiver_report_age_s(pc: RTCPeerConnection) -> float | None:
    """Seconds since the remote peer last sent an RTCP receiver report for any video we send it;
    None before the first one (nothing sent yet, e.g. an empty room: no reports are due)."""
    newest = None
    for sender in pc.getSenders():
        if sender.track is None:
            continue
        for st in (await sender.getStats()).values():
            if st.type == "remote-inbound-rtp":
                newest = st.timestamp if newest is None else max(newest, st.timestamp)
    return None if newest is None else (datetime.now(UTC) - newest).total_seconds()


def check_config(config: BridgeConfig) -> None:
    """Refuse unsafe or impossible settings with a one-line error."""
    if not is_loopback_host(config.host) and not config.token:
        raise LikenessError(f"refusing to bind {config.host} without a token: pass --token (or bind 127.0.0.1)")
    if config.codec is not None and config.codec not in CODECS:
        raise LikenessError(f"unknown codec {config.codec!r}: choose one of {', '.join(CODECS)}")
    if config.identity is not None and not valid_name(config.identity):
        raise LikenessError(f"invalid identity name {config.identity!r}")
    if config.token is not None and len(config.token) < 8:
        raise LikenessError("token too short: use at least 8 characters")
    if config.frame_release not in FRAME_RELEASES:
        raise LikenessError(f"frame_release must be one of {', '.join(FRAME_RELEASES)}, got {config.frame_release!r}")
    if config.fanout not in FANOUTS:
        raise LikenessError(f"fanout must be one of {', '.join(FANOUTS)}, got {config.fanout!r}")
    if config.media_idle_s < 0:
        raise LikenessError("media_idle_s must be >= 0 (0 turns the idle watch off)")
    if config.loopback not in ("only", "add", "off"):
        raise LikenessError(f"loopback_ice must be 'only', 'add' or 'off', got {config.loopback!r}")
    for url in config.ice_servers:
        try:
            ice_server(url)
        except ValueError as e:
            raise LikenessError(str(e)) from None


class HttpError(Exception):
    """An error the client caused; becomes a response with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(eq=False)
class Session:
    """One peer connection: a publisher (sends video in) or a viewer (receives a room's video)."""

    id: str
    room: str
    role: str
    pc: RTCPeerConnection
    identity: str | None = None
    track: EnhancingTrack | None = None
    subscriptions: list[MediaStreamTrack] = field(default_factory=list)
    publishers: list[str] = field(default_factory=list)  # for viewers: who is on which video m-line
    codec: str | None = None
    enhanced_by: str = "bridge"  # publishers: "publisher" when it sent enhanced video (relayed as is)
    created: float = field(default_factory=time.monotonic)
    watchdog: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        return f"/{'whip' if self.role == 'publisher' else 'whep'}/{self.room}/{self.id}"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "role": self.role,
            "identity": self.identity,
            "connection": self.pc.connectionState,
            "codec": self.codec,
            "age_s": round(time.monotonic() - self.created, 1),
        }
        if self.role == "publisher":
            d["enhanced_by"] = self.enhanced_by
            d["processing"] = "relay" if self.enhanced_by == "publisher" else "enhance"
        if self.track is not None:
            d["track"] = self.track.stats()
        if self.role == "viewer":
            d["publishers"] = self.publishers
        return d


class Bridge:
    """Rooms, sessions and the relay; one per app."""

    def __init__(self, config: BridgeConfig, factory: ProcessorFactory) -> None:
        self.config = config
        self.factory = factory
        self.relay = MediaRelay()
        self.encoders: dict[tuple[str, str], SharedEncoder] = {}  # (publisher id, codec mime)
        self.sessions: dict[str, Session] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._opening = 0  # sessions between capacity check and registration
        # One lock for everything that runs face detection: enhancer.detect caches a single
        # dlib HOG detector per process and two threads running it at once abort the process.
        self.detector_lock = threading.Lock()

    # ---------------------------------------------------------------- helpers

    def room_sessions(self, room: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.room == room]

    def publishers(self, room: str) -> list[Session]:
        return [s for s in self.room_sessions(room) if s.role == "publisher" and s.track is not None]

    def locked(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` (in a worker thread) holding the detector lock."""
        with self.detector_lock:
            return fn(*args)

    def _check_capacity(self) -> None:
        if len(self.sessions) + self._opening >= self.config.max_sessions:
            raise HttpError(503, f"bridge is full ({self.config.max_sessions} sessions); try again later")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _new_pc(self, session_id: str) -> RTCPeerConnection:
        pc = RTCPeerConnection(rtc_configuration(list(self.config.ice_servers)))

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc.connectionState in ("failed", "closed") and session_id in self.sessions:
                log.info("session %s: connection %s", session_id, pc.connectionState)
                self._spawn(self.close_session(session_id), f"likeness-close-{session_id}")

        return pc

    def _watchdog(self, session: Session) -> None:
        """Close a session whose peer never connects, or a publisher or viewer that went silent."""

        async def reap() -> None:
            opened = time.monotonic()
            idle = self.config.media_idle_s
            while session.id in self.sessions:
                await asyncio.sleep(WATCH_INTERVAL_S)
                state = session.pc.connectionState
                if state in ("new", "connecting"):
                    if time.monotonic() - opened >= SESSION_OPEN_TIMEOUT_S:
                        log.info("session %s never connected; closing", session.id)
                        await self.close_session(session.id)
                        return
                    continue
                if not idle:
                    return  # idle watch off: the connection's own events reap it
                if state != "connected":
                    continue
                if session.track is not None and session.track.idle_s() > idle:
                    log.warning("publisher %s sent no video for %.0f s; closing it", session.id, idle)
                    await self.close_session(session.id)
                    return
                if session.track is None and (age := await receiver_report_age_s(session.pc)) is not None \
                        and age > idle:
                    log.warning("viewer %s sent no receiver report for %.0f s; closing it", session.id, age)
                    await self.close_session(session.id)
                    return

        session.watchdog = asyncio.get_running_loop().create_task(reap(), name=f"likeness-watchdog-{session.id}")

    def _remote(self, sdp: str) -> RTCSessionDescription:
        # loopback-only bridges ignore a peer's other candidates: those pairs could never succeed
        only = self.config.loopback == "only"
        return RTCSessionDescription(sdp=keep_loopback_candidates(sdp) if only else sdp, type="offer")

    async def _answer(self, pc: RTCPeerConnection, sdp: str) -> str:
        """setRemoteDescription + answer, turning aiortc's negotiation errors into 400s."""
        try:
            await pc.setRemoteDescription(self._remote(sdp))
        except Exception as e:  # aiortc raises many types (ValueError, AttributeError, ...) for bad SDP
            raise HttpError(400, f"cannot use SDP offer: {e}") from None
        return await self._finish_answer(pc)

    @staticmethod
    async def _finish_answer(pc: RTCPeerConnection) -> str:
        try:
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)  # aiortc gathers all candidates here (non-trickle)
        except Exception as e:  # a remote description aiortc accepted but cannot answer
            raise HttpError(400, f"cannot answer SDP offer: {e}") from None
        return pc.localDescription.sdp

    # ---------------------------------------------------------------- sessions

    async def publish(self, room: str, sdp: str, identity: str | None, echo: bool,
                      enhanced: bool = False) -> Session:
        """Accept a sender's offer; with ``echo`` the enhanced video also goes back on the same m-line.
        ``enhanced``: the sender enhanced its video itself; it is relayed untouched (no identity)."""
        info = check_offer(sdp)
        self._check_capacity()
        self._opening += 1
        try:
            return await self._publish(room, sdp, info, identity, echo, enhanced)
        finally:
            self._opening -= 1

    async def _publish(self, room: str, sdp: str, info: OfferInfo, identity: str | None, echo: bool,
                       enhanced: bool) -> Session:
        processor: Any = None  # None: a relay (EnhancingTrack passes every frame through untouched)
        if enhanced:
            if identity:
                log.info("publisher sent enhanced video; identity %r does not apply, relaying it", identity)
            identity = None
        else:
            identity = identity or self.config.identity
            try:
                processor = await asyncio.to_thread(self.locked, self.factory, identity)
            except LikenessError as e:
                raise HttpError(400, str(e)) from None
        sid = secrets.token_urlsafe(9)
        pc = self._new_pc(sid)
        session = Session(sid, room, "publisher", pc, identity=identity,
                          enhanced_by="publisher" if enhanced else "bridge")
        first_video = self._make_transceivers(pc, info, echo)

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and session.track is None:
                session.track = EnhancingTrack(
                    track,
                    processor,
                    deadline_frames=self.config.deadline_frames,
                    name=f"{room}/{sid}",
                    lock=self.detector_lock,
                )

        try:
            try:
                await pc.setRemoteDescription(self._remote(sdp))
            except Exception as e:  # aiortc raises many types (ValueError, AttributeError, ...) for bad SDP
                raise HttpError(400, f"cannot use SDP offer: {e}") from None
            if session.track is None:
                raise HttpError(400, "SDP offer does not send video (direction must be sendonly or sendrecv)")
            echo_track: MediaStreamTrack | None = None
            if echo and first_video is not None:
                shared = self.config.fanout == "shared"
                echo_track = PacketTrack() if shared else self.relay.subscribe(session.track, buffered=False)
                session.subscriptions.append(echo_track)
                first_video.sender.replaceTrack(echo_track)
                if not shared:
                    control_sender_rate(first_video.sender, self.config.bitrate)
            await self._finish_answer(pc)
            if isinstance(echo_track, PacketTrack):  # the echo shares the encoder its viewers use
                codecs = negotiated_codecs(pc.localDescription.sdp)
                mline = info.kinds.index("video")  # the echo rides on the first video m-line
                self._bind_shared(echo_track, session, first_video, codecs[mline] if mline < len(codecs) else None)
        except BaseException:
            await self._dispose(session)
            raise
        session.codec = negotiated_codec(pc.localDescription.sdp)
        self.sessions[sid] = session
        self._watchdog(session)
        log.info("publisher %s joined room %s (%s, codec %s)", sid, room,
                 "enhanced by the publisher: relayed" if enhanced else f"identity {identity}", session.codec)
        return session

    def _make_transceivers(self, pc: RTCPeerConnection, info: OfferInfo, echo: bool) -> Any:
        """Pre-create transceivers in m-line order so codec preferences apply to the answer."""
        first_video = None
        for kind in info.kinds:
            if kind == "video":
                t = pc.addTransceiver("video", direction="sendrecv" if echo and first_video is None else "recvonly")
                prefer_codec(t, self.config.codec)
                if self.config.frame_release == "marker":
                    release_frames_on_marker(t.receiver)
                first_video = first_video or t
            elif kind == "audio":
                pc.addTransceiver("audio", direction="inactive")  # video bridge: audio stays with the call app
        return first_video

    async def view(self, room: str, sdp: str, exclude: str | None = None) -> Session:
        """Accept a viewer's offer: its video m-lines get the room's publishers in join order."""
        if not [p for p in self.publishers(room) if p.id != exclude]:
            raise HttpError(404, f"room {room!r} has no publishers")
        info = check_offer(sdp)
        self._check_capacity()
        self._opening += 1
        try:
            return await self._view(room, sdp, info, exclude)
        finally:
            self._opening -= 1

    async def _view(self, room: str, sdp: str, info: OfferInfo, exclude: str | None) -> Session:
        pubs = [p for p in self.publishers(room) if p.id != exclude]
        sid = secrets.token_urlsafe(9)
        pc = self._new_pc(sid)
        session = Session(sid, room, "viewer", pc)
        shared = self.config.fanout == "shared"
        pending: list[tuple[int, Session, Any, PacketTrack]] = []  # (m-line, publisher, transceiver, track)
        vi = 0
        for mline, kind in enumerate(info.kinds):
            if kind == "video":
                if vi < len(pubs):
                    pub = pubs[vi]
                    # shared: bound to the publisher's encoder once the answer has picked the codec
                    track = PacketTrack() if shared else self.relay.subscribe(pub.track, buffered=False)  # type: ignore[arg-type]
                    session.subscriptions.append(track)
                    session.publishers.append(pub.id)
                    t = pc.addTransceiver(track, direction="sendonly")
                    if isinstance(track, PacketTrack):
                        pending.append((mline, pub, t, track))
                    else:
                        control_sender_rate(t.sender, self.config.bitrate)
                else:
                    t = pc.addTransceiver("video", direction="inactive")
                prefer_codec(t, self.config.codec)
                vi += 1
            elif kind == "audio":
                pc.addTransceiver("audio", direction="inactive")
        try:
            await self._answer(pc, sdp)
            codecs = negotiated_codecs(pc.localDescription.sdp)
            for mline, pub, t, track in pending:
                self._bind_shared(track, pub, t, codecs[mline] if mline < len(codecs) else None)
        except BaseException:
            await self._dispose(session)
            raise
        session.codec = negotiated_codec(pc.localDescription.sdp)
        self.sessions[sid] = session
        self._watchdog(session)
        log.info("viewer %s joined room %s (%d streams)", sid, room, len(session.publishers))
        return session

    def _bind_shared(self, track: PacketTrack, pub: Session, transceiver: Any, mime: str | None) -> None:
        """Feed ``track`` from ``pub``'s shared encoder for ``mime``, the codec the answer chose for it."""
        if shareable(mime):
            self._shared_encoder(pub, mime).subscribe(track, transceiver.sender)  # type: ignore[arg-type]
        else:  # nothing negotiated on this m-line: nothing will be sent on it
            track.stop()

    def _shared_encoder(self, pub: Session, mime: str) -> SharedEncoder:
        """The publisher's encoder for ``mime``, created (reading its own relay subscription) on first use."""
        key = (pub.id, mime.lower())
        enc = self.encoders.get(key)
        if enc is None or enc.closed:
            source = self.relay.subscribe(pub.track, buffered=False)  # type: ignore[arg-type]
            enc = SharedEncoder(source, mime, self.config.bitrate,
                                on_idle=lambda e: self.encoders.pop(key, None) if self.encoders.get(key) is e else None)
            self.encoders[key] = enc
        return enc

    async def _dispose(self, session: Session) -> None:
        if session.watchdog is not None and session.watchdog is not asyncio.current_task():
            session.watchdog.cancel()
        for sub in session.subscriptions:
            sub.stop()
        if session.track is not None:
            await session.track.aclose()
        try:
            await session.pc.close()
        except Exception as e:  # aiortc can fail closing a half-negotiated pc; the session is gone regardless
            log.warning("closing peer connection of %s failed: %s", session.sid if hasattr(session, "sid") else "?", e)

    async def close_session(self, sid: str) -> bool:
        """Close and forget a session; False if it was unknown (already gone)."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return False
        await self._dispose(session)
        log.info("%s %s left room %s", session.role, sid, session.room)
        return True

    async def close(self) -> None:
        """Close every session and wait for background tasks (app shutdown)."""
        self._closed = True
        for sid in list(self.sessions):
            await self.close_session(sid)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stats(self, session: str | None = None, room: str | None = None) -> dict[str, Any]:
        rooms: dict[str, list[dict[str, Any]]] = {}
        for s in self.sessions.values():
            if (session and s.id != session) or (room and s.room != room):
                continue
            rooms.setdefault(s.room, []).append(s.describe())
        in_room = {s.id for s in self.room_sessions(room)} if room else None
        encoders = [{"publisher": pid, "codec": mime, "viewers": len(e.subscribers), **asdict(e.stats)}
                    for (pid, mime), e in self.encoders.items()
                    if (not session or pid == session) and (in_room is None or pid in in_room)]
        return {"rooms": rooms, "fanout": self.config.fanout, "shared_encoders": encoders}


BRIDGE_KEY = web.AppKey("bridge", Bridge)

# ------------------------------------------------------------------------------- HTTP layer


def _text(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", content_type="text/plain", headers=headers)


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _room(request: web.Request) -> str:
    room = request.match_info["room"]
    if not room or len(room) > 64 or not set(room) <= ROOM_RE_CHARS:
        raise HttpError(400, "room name must be 1-64 characters of letters, digits, '_', '-', '.'")
    return room


async def _read_sdp(request: web.Request) -> str:
    if request.content_type != "application/sdp":
        raise HttpError(415, "Content-Type must be application/sdp")
    if request.content_length is not None and request.content_length > MAX_SDP_BYTES:
        raise HttpError(413, f"SDP larger than {MAX_SDP_BYTES} bytes")
    # read(n) returns what has arrived, up to n bytes, not the whole body: one call took the
    # first TCP segments of a browser's 25 KB WHEP offer now and then, and the truncated offer
    # failed as "malformed SDP", "no DTLS fingerprint" or an answer with m-lines missing
    body = bytearray()
    while chunk := await request.content.read(MAX_SDP_BYTES + 1 - len(body)):
        body += chunk
        if len(body) > MAX_SDP_BYTES:
            raise HttpError(413, f"SDP larger than {MAX_SDP_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise HttpError(400, "malformed SDP: not UTF-8 text") from None


def _identity_param(request: web.Request) -> str | None:
    ident = request.query.get("identity") or None
    if ident is not None and not valid_name(ident):
        raise HttpError(400, f"invalid identity name {ident!r}")
    return ident


def _enhanced_flag(request: web.Request) -> bool:
    """Whether a WHIP publisher says it enhanced its video already: the ``X-Likeness-Enhanced``
    header (what ``likeness call`` sends) or the ``enhanced`` query parameter, "1"/"true"/"yes"."""
    values = [v for v in (request.headers.get(ENHANCED_HEADER), request.query.get("enhanced")) if v is not None]
    flags = set()
    for v in values:
        v = v.strip().lower()
        if v not in ("1", "true", "yes", "0", "false", "no", ""):
            raise HttpError(400, f"{ENHANCED_HEADER} (or ?enhanced=) must be 1 or 0, got {v!r}")
        flags.add(v in ("1", "true", "yes"))
    return True in flags


def _created(session: Session) -> web.Response:
    return web.Response(
        status=201,
        text=session.pc.localDescription.sdp,
        content_type="application/sdp",
        headers={
            "Location": session.location,
            "X-Likeness-Session": session.id,
            "X-Likeness-Publishers": ",".join(session.publishers),
        },
    )


def _auth_middleware(token: str | None) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        guarded = request.path.startswith(("/api/", "/whip/", "/whep/"))
        if token and guarded:
            header = request.headers.get("Authorization", "")
            given = header[7:].strip() if header[:7].lower() == "bearer " else ""
            if not given or not hmac.compare_digest(given.encode(), token.encode()):
                msg = "missing bearer token" if not given else "wrong bearer token"
                return web.Response(
                    status=401,
                    text=msg + "\n",
                    content_type="text/plain",
                    headers={"WWW-Authenticate": 'Bearer realm="likeness"'},
                )
        try:
            return await handler(request)
        except HttpError as e:
            if request.path.startswith("/api/"):
                return _json_error(e.status, e.message)
            return _text(e.status, e.message)
        except SdpError as e:
            if request.path.startswith("/api/"):
                return _json_error(400, str(e))
            return _text(400, str(e))

    return auth


async def whip_post(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    room = _room(request)
    session = await bridge.publish(room, await _read_sdp(request), _identity_param(request), echo=False,
                                   enhanced=_enhanced_flag(request))
    return _created(session)


async def whep_post(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    room = _room(request)
    sdp = await _read_sdp(request)
    session = await bridge.view(room, sdp, exclude=request.query.get("exclude"))
    return _created(session)


async def session_delete(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    room, sid = _room(request), request.match_info["session"]
    role = "publisher" if request.path.startswith("/whip/") else "viewer"
    s = bridge.sessions.get(sid)
    if s is None or s.room != room or s.role != role:
        return _text(404, "no such session")
    await bridge.close_session(sid)
    return web.Response(status=200)


async def session_patch(request: web.Request) -> web.Response:
    # RFC 9725: a server without trickle ICE / ICE restart support answers PATCH with 405.
    return _text(405, "trickle ICE and ICE restarts are not supported; send complete offers", Allow="DELETE")


async def api_offer(request: web.Request) -> web.Response:
    """The page's call: JSON offer in, JSON answer out; the enhanced video comes back on the same connection."""
    bridge = request.app[BRIDGE_KEY]
    try:
        body = await request.json()
        sdp, typ = body["sdp"], body.get("type", "offer")
    except Exception:
        raise HttpError(400, 'body must be JSON {"sdp": ..., "type": "offer"}') from None
    if typ != "offer" or not isinstance(sdp, str):
        raise HttpError(400, "type must be 'offer' and sdp a string")
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise HttpError(413, f"SDP offer larger than {MAX_SDP_BYTES} bytes")
    room = request.query.get("room", "main")
    if not room or len(room) > 64 or not set(room) <= ROOM_RE_CHARS:
        raise HttpError(400, "invalid room name")
    session = await bridge.publish(room, sdp, _identity_param(request), echo=True)
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
    bridge = request.app[BRIDGE_KEY]
    return web.json_response({"identities": list_identities(), "default": bridge.config.identity})


async def api_stats(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    return web.json_response(bridge.stats(request.query.get("session"), request.query.get("room")))


async def api_config(request: web.Request) -> web.Response:
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


async def api_enroll(request: web.Request) -> web.Response:
    bridge = request.app[BRIDGE_KEY]
    name = request.query.get("name", "")
    if not valid_name(name):
        raise HttpError(400, "query parameter name must be 1-64 letters, digits, '_', '-', '.'")
    try:
        fn = enroll_function()
    except EnrollUnavailable as e:
        raise HttpError(501, str(e)) from None
    if not request.content_type.startswith("multipart/form-data"):
        raise HttpError(415, "send the images as multipart/form-data JPEG files")
    form = await request.post()  # bounded by client_max_size (413 beyond it)
    files = [v for _, v in form.items() if isinstance(v, web.FileField)]
    if not files:
        raise HttpError(400, "no image files in the upload")
    if len(files) > bridge.config.max_enroll_images:
        raise HttpError(400, f"too many images ({len(files)}, max {bridge.config.max_enroll_images})")
    decoded: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    for i, f in enumerate(files):
        data = np.frombuffer(f.file.read(), np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if img is None:
            decoded.append({"index": i, "file": f.filename, "accepted": False, "reason": "not a decodable image"})
        else:
            decoded.append(
                {"index": i, "file": f.filename, "decoded": True, "width": img.shape[1], "height": img.shape[0]}
            )
            images.append(img)
    if not images:
        return web.json_response({"name": name, "images": decoded, "error": "no decodable images"}, status=400)
    try:
        # enrolment detects faces too; streams pass frames through un-enhanced meanwhile
        report = report_to_json(await asyncio.to_thread(bridge.locked, fn, name, images))
    except LikenessError as e:
        # EnrollmentError carries the per-image verdicts: show them even though nothing was stored
        partial = report_to_json(getattr(e, "report", None))
        status = 422 if isinstance(e, InputError) else 503 if isinstance(e, ModelError) else 400
        return web.json_response({"name": name, "images": merge_verdicts(decoded, partial), "report": partial,
                                  "error": str(e)}, status=status)
    return web.json_response({"name": name, "images": merge_verdicts(decoded, report), "report": report})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(config: BridgeConfig, factory: ProcessorFactory) -> web.Application:
    """The aiohttp application; ``app[BRIDGE_KEY]`` is its Bridge (for tests and stats)."""
    check_config(config)
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_auth_middleware(config.token)])
    bridge = Bridge(config, factory)
    app[BRIDGE_KEY] = bridge

    async def _shutdown(_: web.Application) -> None:
        await bridge.close()

    app.on_shutdown.append(_shutdown)
    r = app.router
    r.add_get("/", index)
    r.add_static("/static/", STATIC_DIR, append_version=False)
    r.add_post("/whip/{room}", whip_post)
    r.add_delete("/whip/{room}/{session}", session_delete)
    r.add_patch("/whip/{room}/{session}", session_patch)
    r.add_post("/whep/{room}", whep_post)
    r.add_delete("/whep/{room}/{session}", session_delete)
    r.add_patch("/whep/{room}/{session}", session_patch)
    r.add_post("/api/offer", api_offer)
    r.add_get("/api/identities", api_identities)
    r.add_get("/api/stats", api_stats)
    r.add_get("/api/config", api_config)
    r.add_post("/api/enroll", api_enroll)
    return app


async def run_server(config: BridgeConfig, factory: ProcessorFactory, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or forever); prints one line with the page's URL."""
    check_config(config)
    with loopback_candidates(config.loopback):
        await _serve(config, factory, stop)


async def _serve(config: BridgeConfig, factory: ProcessorFactory, stop: asyncio.Event | None) -> None:
    app = create_app(config, factory)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as e:
            why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise LikenessError(f"cannot listen on {config.host}:{config.port}: {why}") from None
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(
            f"likeness bridge on http://{host}:{config.port}/ (WHIP /whip/ROOM, WHEP /whep/ROOM"
            f"{', token required' if config.token else ''}); Ctrl-C to stop",
            flush=True,
        )
        if stop is None:  # SIGINT/SIGTERM end the server cleanly (sessions closed, DELETE-equivalent)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("likeness bridge: stopping", flush=True)
    finally:
        await runner.cleanup()
