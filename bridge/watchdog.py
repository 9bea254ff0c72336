"""Reaping dead peers: a session whose peer never connects, or a publisher or viewer gone silent.

Why: nothing tells the bridge that a killed or unplugged peer is gone except ICE consent
expiry, ~30 s of frozen video for its viewers. Silence is a surer sign: browsers keep sending
(black) frames while a camera is muted, and a live viewer sends an RTCP receiver report about
every second while video arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiortc import RTCPeerConnection

from .session import Session

log = logging.getLogger(__name__)

SESSION_OPEN_TIMEOUT_S = 30.0  # a session whose peer never connects is reaped after this
WATCH_INTERVAL_S = 0.5  # how often each session's watchdog looks


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


def watch(session: Session, idle_s: float, is_open: Callable[[], bool],
          close: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
    """Start the task that calls ``close()`` once ``session`` never connected within
    ``SESSION_OPEN_TIMEOUT_S``, or, connected, was silent for ``idle_s`` (0: connection
    events alone end it); it ends by itself once ``is_open()`` is False."""

    async def reap() -> None:
        opened = time.monotonic()
        while is_open():
            await asyncio.sleep(WATCH_INTERVAL_S)
            state = session.pc.connectionState
            if state in ("new", "connecting"):
                if time.monotonic() - opened >= SESSION_OPEN_TIMEOUT_S:
                    log.info("session %s never connected; closing", session.id)
                    await close()
                    return
                continue
            if not idle_s:
                return  # idle watch off: the connection's own events reap it
            if state != "connected":
                continue
            if session.track is not None and session.track.idle_s() > idle_s:
                log.warning("publisher %s sent no video for %.0f s; closing it", session.id, idle_s)
                await close()
                return
            if session.track is None and (age := await receiver_report_age_s(session.pc)) is not None \
                    and age > idle_s:
                log.warning("viewer %s sent no receiver report for %.0f s; closing it", session.id, age)
                await close()
                return

    return asyncio.get_running_loop().create_task(reap(), name=f"likeness-watchdog-{session.id}")
