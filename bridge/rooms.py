"""Rooms: who publishes and who watches, and the one relay and shared encoders between them.

* A publisher's video is wrapped in an ``EnhancingTrack`` (or relayed untouched when the
  publisher enhanced it itself) and fanned out to every viewer of its room: enhanced once (one
  aiortc ``MediaRelay`` per publisher) and, by default, encoded once per codec
  (``fanout.SharedEncoder``), not once per viewer.
* Non-trickle ICE: answers carry all candidates.

All state lives on a ``Bridge`` object owned by the aiohttp app (``app[BRIDGE_KEY]``), never in
module globals. It knows no HTTP beyond raising ``HttpError`` for what a client got wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from enhancer.errors import LikenessError

from .codecs import negotiated_codec, negotiated_codecs, prefer_codec
from .config import BridgeConfig
from .errors import HttpError
from .fanout import PacketTrack, SharedEncoder, shareable
from .ice import keep_loopback_candidates, rtc_configuration
from .identities import shared_identity_bytes
from .jitter import release_frames_on_marker
from .rate_control import control_sender_rate
from .remote_view import RemoteViews, ViewProcessorBuilder
from .sdp import OfferInfo, check_offer
from .session import Session
from .track import EnhancingTrack, FrameProcessor, ProcessorFactory
from .watchdog import watch

log = logging.getLogger(__name__)


class Bridge:
    """Rooms, sessions and the relay; one per app."""

    def __init__(self, config: BridgeConfig, factory: ProcessorFactory,
                 view_builder: ViewProcessorBuilder | None = None) -> None:
        self.config = config
        self.factory = factory
        # remote participants watched through this bridge, restored here (``remote_view``)
        self.remote_views = RemoteViews(self, view_builder)
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

    def _register(self, session: Session) -> None:
        """Count an answered session in: the codec its answer chose, its room, and its watchdog, which
        closes it if its peer never connects or goes silent (``watchdog.watch``)."""
        assert session.pc is not None  # local publishers are registered by ``publish_track``
        session.codec = negotiated_codec(session.pc.localDescription.sdp)
        self.sessions[session.id] = session
        session.watchdog = watch(session, self.config.media_idle_s, lambda: session.id in self.sessions,
                                 lambda: self.close_session(session.id))

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """Hold a session's place from the capacity check until it is registered or has failed."""
        self._check_capacity()
        self._opening += 1
        try:
            yield
        finally:
            self._opening -= 1

    def _remote(self, sdp: str) -> RTCSessionDescription:
        # loopback-only bridges ignore a peer's other candidates: those pairs could never succeed
        only = self.config.loopback == "only"
        return RTCSessionDescription(sdp=keep_loopback_candidates(sdp) if only else sdp, type="offer")

    async def _set_offer(self, pc: RTCPeerConnection, sdp: str) -> None:
        """setRemoteDescription, turning aiortc's negotiation errors into 400s."""
        try:
            await pc.setRemoteDescription(self._remote(sdp))
        except Exception as e:  # aiortc raises many types (ValueError, AttributeError, ...) for bad SDP
            raise HttpError(400, f"cannot use SDP offer: {e}") from None

    async def _answer(self, pc: RTCPeerConnection, sdp: str) -> str:
        """setRemoteDescription + answer, turning aiortc's negotiation errors into 400s."""
        await self._set_offer(pc, sdp)
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
                      enhanced: bool = False, share_identity: bool = False) -> Session:
        """Accept a sender's offer; with ``echo`` the enhanced video also goes back on the same m-line.
        ``enhanced``: the sender enhanced its video itself; it is relayed untouched (no identity).
        ``share_identity``: the sender consents to its room's viewers fetching the identity the bridge
        enhances it with (a sender that enhanced itself uploads its own: ``identity_share``)."""
        info = check_offer(sdp)
        with self._slot():
            return await self._publish(room, sdp, info, identity, echo, enhanced, share_identity)

    def _enhancing_track(self, track: MediaStreamTrack, processor: FrameProcessor | None, room: str,
                         sid: str, deadline_ms: float | None = None) -> EnhancingTrack:
        """A publisher's track under this bridge's rules: its deadline (``deadline_ms`` when given, else
        ``deadline_frames``), the shared detector lock."""
        return EnhancingTrack(track, processor, deadline_frames=self.config.deadline_frames, deadline_ms=deadline_ms,
                              name=f"{room}/{sid}", lock=self.detector_lock)

    async def publish_track(self, room: str, track: MediaStreamTrack, processor: FrameProcessor | None,
                            identity: str | None = None) -> Session:
        """Publish a track of this process to ``room`` (``likeness view``'s received stream), enhanced by
        ``processor`` under a remote publisher's rules with the view's shorter deadline
        (``BridgeConfig.view_deadline_ms``; None: relayed as it comes). No peer connection, so no
        watchdog: its owner ends it with ``close_session``."""
        with self._slot():
            sid = secrets.token_urlsafe(9)
            session = Session(sid, room, "publisher", None, identity=identity)
            session.track = self._enhancing_track(track, processor, room, sid, self.config.view_deadline_ms)
            self.sessions[sid] = session
        log.info("local publisher %s joined room %s (identity %s)", sid, room, identity)
        return session

    async def _publish(self, room: str, sdp: str, info: OfferInfo, identity: str | None, echo: bool,
                       enhanced: bool, share_identity: bool) -> Session:
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
        shared = None
        if share_identity and identity:
            try:
                shared = await asyncio.to_thread(shared_identity_bytes, identity)
            except LikenessError as e:
                raise HttpError(400, str(e)) from None
        sid = secrets.token_urlsafe(9)
        pc = self._new_pc(sid)
        session = Session(sid, room, "publisher", pc, identity=identity,
                          enhanced_by="publisher" if enhanced else "bridge", shared_identity=shared)
        first_video = self._make_transceivers(pc, info, echo)

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and session.track is None:
                session.track = self._enhancing_track(track, processor, room, sid)

        try:
            await self._set_offer(pc, sdp)
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
        self._register(session)
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
        with self._slot():
            return await self._view(room, sdp, info, exclude)

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
        self._register(session)
        log.info("viewer %s joined room %s (%d streams)", sid, room, len(session.publishers))
        return session

    def shared_identity(self, viewer: Session, publisher: str | None = None) -> Session | None:
        """The publisher of ``viewer``'s room that shares its identity with it: ``publisher`` (an id),
        else the one on the viewer's first video m-line; None when it is not in that room, is gone or
        shares nothing. The room is the boundary: a viewer never reaches another room's participant."""
        pid = publisher or (viewer.publishers[0] if viewer.publishers else None)
        pub = self.sessions.get(pid) if pid else None
        if pub is None or pub.role != "publisher" or pub.room != viewer.room or pub.shared_identity is None:
            return None
        return pub

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
        session.shared_identity = None  # consent ends with the session
        if session.track is not None:
            await session.track.aclose()
        if session.pc is None:
            return
        try:
            await session.pc.close()
        except Exception as e:  # aiortc can fail closing a half-negotiated pc; the session is gone regardless
            log.warning("closing peer connection of %s failed: %s", session.id, e)

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
        await self.remote_views.close_all()
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


# the app's one Bridge: what every handler reaches the rooms through (tests too, for stats)
BRIDGE_KEY = web.AppKey("bridge", Bridge)
