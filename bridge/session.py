"""One peer connection of a room: a publisher (sends video in) or a viewer (receives the room's video).

A plain record the rooms keep, the watchdog watches and ``/api/stats`` describes; it owns no
behaviour beyond describing itself, so all lifecycle stays in one place (``rooms.Bridge``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from .track import EnhancingTrack


@dataclass(eq=False)
class Session:
    """One peer connection: a publisher (sends video in) or a viewer (receives a room's video)."""

    id: str
    room: str
    role: str
    pc: RTCPeerConnection | None  # None: a local publisher, a track of this process (``Bridge.publish_track``)
    identity: str | None = None
    track: EnhancingTrack | None = None
    subscriptions: list[MediaStreamTrack] = field(default_factory=list)
    publishers: list[str] = field(default_factory=list)  # for viewers: who is on which video m-line
    codec: str | None = None
    enhanced_by: str = "bridge"  # publishers: "publisher" when it sent enhanced video (relayed as is)
    created: float = field(default_factory=time.monotonic)
    watchdog: asyncio.Task[None] | None = None
    # publishers: the identity file it consented to share with its room's viewers (``identity_share``);
    # held in memory only, dropped with the session
    shared_identity: bytes | None = None

    @property
    def location(self) -> str:
        """The WHIP/WHEP resource URL path the client DELETEs to leave."""
        return f"/{'whip' if self.role == 'publisher' else 'whep'}/{self.room}/{self.id}"

    def describe(self) -> dict[str, Any]:
        """This session's entry in ``/api/stats``."""
        d: dict[str, Any] = {
            "id": self.id,
            "role": self.role,
            "identity": self.identity,
            "connection": self.pc.connectionState if self.pc is not None else "local",
            "codec": self.codec,
            "age_s": round(time.monotonic() - self.created, 1),
        }
        if self.role == "publisher":
            d["enhanced_by"] = self.enhanced_by
            d["processing"] = "relay" if self.enhanced_by == "publisher" else "enhance"
            d["identity_shared"] = self.shared_identity is not None
        if self.track is not None:
            d["track"] = self.track.stats()
        if self.role == "viewer":
            d["publishers"] = self.publishers
        return d
