"""A participant of another bridge, watched here: their stream pulled over WHEP and re-published in a
room of this bridge, restored on this side of the link (issue 27).

Why on the receiving side: a low bitrate is imposed by the network after the sender's encoder, so
only the receiver can undo it. The received track goes through this bridge's own track machinery
(``Bridge.publish_track`` -> ``EnhancingTrack``: latest frame wins, a deadline per frame, the frame as
it came when late), restored towards the participant's identity when they share it
(``identity_share``; parsed in memory, never written) and generically otherwise. Used by
``likeness view`` (a bridge of its own) and by the page's watch mode (``POST /api/view``).

The processor is built by the caller (``ViewProcessorBuilder``): the bridge does not pick models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from enhancer.errors import LikenessError
from enhancer.identity_store import MAX_FILE_BYTES, StoredIdentity, parse_identity

from .client import Resource, delete, fetch_identity, identity_url, negotiate
from .codecs import prefer_codec
from .config import BridgeConfig
from .ice import rtc_configuration
from .jitter import release_frames_on_marker
from .session import Session
from .track import FrameProcessor

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 20.0
SILENT_S = 10.0  # no video from the participant for this long: they left, or the link is gone

# The shared identity (None: none shared or unusable) -> the processor for the received stream (None:
# shown as received) and one line saying how it restores, for the person watching.
ViewProcessorBuilder = Callable[[StoredIdentity | None], tuple[FrameProcessor | None, str]]


class Bridge(Protocol):
    """What a remote view needs of the bridge that re-serves it (``rooms.Bridge`` is one)."""

    config: BridgeConfig

    def locked(self, fn: Any, *args: Any) -> Any: ...

    def room_sessions(self, room: str) -> list[Session]: ...

    async def publish_track(self, room: str, track: Any, processor: FrameProcessor | None,
                            identity: str | None = None) -> Session: ...

    async def close_session(self, sid: str) -> bool: ...


class RemoteViewError(LikenessError):
    """The remote participant could not be watched (unreachable, refused, no media, no video)."""


@dataclass(eq=False)
class RemoteView:
    """One watched remote participant: the peer connection to the other bridge, its WHEP resource
    (DELETEd on close) and the local publisher session that re-serves the received track."""

    id: str
    whep: str
    token: str | None
    how: str  # the builder's line: towards the shared identity, generically, or raw
    note: str | None  # why a shared identity could not be used, if one could not
    pc: RTCPeerConnection
    http: aiohttp.ClientSession
    resource: Resource
    session: Session
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def room(self) -> str:
        return self.session.room

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "whep": self.whep, "room": self.room, "how": self.how, "note": self.note}


def shared_identity(data: bytes | None) -> tuple[StoredIdentity | None, str | None]:
    """The participant's shared identity parsed in memory, or None and why it is unusable."""
    if data is None:
        return None, None
    try:
        return parse_identity(data, "shared identity"), None
    except LikenessError as e:
        return None, f"the participant's shared identity is unusable ({e}); restoring generically"


async def open_remote_view(bridge: Bridge, whep: str, token: str | None, room: str, build: ViewProcessorBuilder,
                           rtc: RTCConfiguration, codec: str | None, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                           view_id: str | None = None) -> RemoteView:
    """Watch the participant at ``whep`` and publish what arrives into ``room`` of ``bridge``; on any
    failure everything opened is closed again (the remote session DELETEd) and a ``RemoteViewError``
    (or ``WhipError``) says why in one line."""
    http = aiohttp.ClientSession()
    pc = RTCPeerConnection(rtc)
    resource: Resource | None = None
    try:
        tracks: list[Any] = []
        connected = asyncio.Event()
        pc.on("track", lambda track: tracks.append(track) if track.kind == "video" else None)

        @pc.on("connectionstatechange")
        def _state() -> None:
            if pc.connectionState in ("connected", "failed", "closed"):
                connected.set()

        t = pc.addTransceiver("video", direction="recvonly")
        prefer_codec(t, codec)
        release_frames_on_marker(t.receiver)  # as for publishers: a frame is decoded on its last packet
        resource = await negotiate(http, whep, pc, token)
        url = identity_url(resource)
        stored, note = shared_identity(await fetch_identity(http, url, token, MAX_FILE_BYTES) if url else None)
        processor, how = await asyncio.to_thread(bridge.locked, build, stored)
        try:
            await asyncio.wait_for(connected.wait(), connect_timeout_s)
        except TimeoutError:
            raise RemoteViewError(f"no media connection to {whep} within {connect_timeout_s:.0f} s "
                                  "(ICE failed: try --ice-server)") from None
        if pc.connectionState != "connected":
            raise RemoteViewError(f"media connection to {whep} {pc.connectionState}")
        if not tracks:
            raise RemoteViewError(f"{whep} sent no video")
        session = await bridge.publish_track(room, tracks[0], processor, stored.name if stored and processor else None)
    except BaseException:
        if resource is not None:
            await delete(http, resource, token)
        await pc.close()
        await http.close()
        raise
    view = RemoteView(view_id or secrets.token_urlsafe(6), whep, token, how, note, pc, http, resource, session)
    log.info("remote view %s: %s into room %s (%s)", view.id, whep, room, how)
    return view


async def close_remote_view(bridge: Bridge, view: RemoteView, why: str = "closed") -> dict[str, Any]:
    """End the view: the local session closed, the remote session DELETEd, the connection closed;
    returns the re-served track's last stats. Closing twice is harmless."""
    if view.closed.is_set():
        return {}
    view.closed.set()
    stats = view.session.track.stats() if view.session.track else {}
    await bridge.close_session(view.session.id)
    with contextlib.suppress(Exception):
        await delete(view.http, view.resource, view.token)
    await view.pc.close()
    await view.http.close()
    log.info("remote view %s ended: %s", view.id, why)
    return stats


def why_ended(view: RemoteView, silent_s: float = SILENT_S) -> str | None:
    """Why the watched participant is gone (the connection failed or closed, or no video for
    ``silent_s``), or None while they are there."""
    if view.pc.connectionState in ("failed", "closed"):
        return f"connection to {view.whep} {view.pc.connectionState}"
    track = view.session.track
    if track is not None and track.idle_s() > silent_s:
        return f"no video from {view.whep} for {silent_s:.0f} s: the participant left or the link is down"
    return None


async def watch_until_gone(view: RemoteView, until: float | None = None, stop: asyncio.Event | None = None,
                           silent_s: float = SILENT_S) -> str | None:
    """Poll until the participant is gone (returns why), ``until`` (a monotonic time) passes, ``stop``
    is set or the view is closed (None)."""
    while (until is None or time.monotonic() < until) and not (stop and stop.is_set()) and not view.closed.is_set():
        await asyncio.sleep(0.25 if until is None else min(0.25, max(0.0, until - time.monotonic())))
        if (why := why_ended(view, silent_s)) is not None:
            return why
    return None


def as_received(stored: StoredIdentity | None) -> tuple[FrameProcessor | None, str]:
    """The builder for a view with restoration switched off: the stream shown as it arrived."""
    return None, "raw: restoration off; the stream as received"


class RemoteViews:
    """The remote participants this bridge's page watches (``POST /api/view``), each re-served in a
    room of its own, ``view-<id>``, and closed when the participant goes or the page stops watching.
    ``build`` None: this bridge restores no remote streams (``likeness view``'s own bridge)."""

    def __init__(self, bridge: Bridge, build: ViewProcessorBuilder | None) -> None:
        self.bridge = bridge
        self.build = build
        self.views: dict[str, RemoteView] = {}
        self._followers: set[asyncio.Task[None]] = set()

    async def open(self, whep: str, token: str | None, restore: bool) -> RemoteView:
        if self.build is None:
            raise RemoteViewError("this bridge does not restore remote streams")
        vid = secrets.token_urlsafe(6)
        config = self.bridge.config
        view = await open_remote_view(self.bridge, whep, token, f"view-{vid}", self.build if restore else as_received,
                                      rtc_configuration(list(config.ice_servers)), config.codec, view_id=vid)
        self.views[vid] = view
        task = asyncio.get_running_loop().create_task(self._follow(view), name=f"likeness-view-{vid}")
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)
        return view

    async def _follow(self, view: RemoteView) -> None:
        """Close the view when its participant goes, or when nobody here has watched its room for
        ``BridgeConfig.view_unwatched_s`` (the page was closed without stopping it)."""
        limit = self.bridge.config.view_unwatched_s
        watched_at = time.monotonic()
        while not view.closed.is_set():
            if (why := await watch_until_gone(view, time.monotonic() + 1.0)) is not None:
                await self.close(view.id, why)
                return
            if any(s.role == "viewer" for s in self.bridge.room_sessions(view.room)):
                watched_at = time.monotonic()
            elif time.monotonic() - watched_at > limit:
                await self.close(view.id, f"nobody watched it for {limit:g} s")
                return

    async def close(self, vid: str, why: str = "closed by the page") -> bool:
        """Close one view; False if it was unknown (already gone)."""
        view = self.views.pop(vid, None)
        if view is None:
            return False
        await close_remote_view(self.bridge, view, why)
        return True

    async def close_all(self) -> None:
        for vid in list(self.views):
            await self.close(vid, "bridge stopping")
        for task in list(self._followers):
            task.cancel()
        await asyncio.gather(*self._followers, return_exceptions=True)
