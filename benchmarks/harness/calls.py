"""Calls through a real bridge: serve one on a free port, publish over WHIP, view over WHEP.

Benchmarks and tests drive the bridge as a client would, over HTTP and real aiortc peers,
so what they measure includes negotiation, ICE and the codecs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import aioice.ice
from aiohttp import web
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from benchmarks.harness.tracks import FrameSink
from bridge.client import Resource, delete, negotiate
from bridge.codecs import prefer_codec
from bridge.config import BridgeConfig
from bridge.ice import disable_loopback_candidates, enable_loopback_candidates, is_loopback_host, rtc_configuration
from bridge.jitter import release_frames_on_marker
from bridge.rate_control import control_sender_rate
from bridge.remote_view import ViewProcessorBuilder
from bridge.rooms import BRIDGE_KEY, Bridge
from bridge.server import create_app
from bridge.track import ProcessorFactory


@asynccontextmanager
async def serve_bridge(config: BridgeConfig, factory: ProcessorFactory,
                       view_builder: ViewProcessorBuilder | None = None) -> AsyncIterator[tuple[str, Bridge]]:
    """Run a bridge on ``config.host`` (free port with port 0) for the duration of the block;
    yields (base URL, Bridge). ``view_builder``: as ``create_app``'s (the page's remote views).

    On a loopback host media stays on loopback: every ICE agent in the process gathers 127.0.0.1
    only. On another address (e.g. a ``netlab.ShapedLink``'s ``host_ip``) ICE gathers as aioice
    does by itself, so a peer behind that link pairs over it.
    """
    loopback = is_loopback_host(config.host)
    if config.loopback_ice is None:
        config = dataclasses.replace(config, loopback_ice="only" if loopback else "off")
    app = create_app(config, factory, view_builder)
    runner = web.AppRunner(app, handle_signals=False)
    previous = aioice.ice.get_host_addresses
    if loopback:
        enable_loopback_candidates(only=True)
    else:  # whatever an earlier bridge in this process set up: gather the real interfaces
        disable_loopback_candidates()
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        yield f"http://{config.host}:{port}", app[BRIDGE_KEY]
    finally:
        await runner.cleanup()
        aioice.ice.get_host_addresses = previous  # leave the process as we found it


@dataclass
class Peer:
    """An aiortc peer with its WHIP/WHEP resource and, for viewers, one sink per received track."""

    pc: RTCPeerConnection
    resource: Resource
    sinks: list[FrameSink] = field(default_factory=list)

    async def leave(self, http: aiohttp.ClientSession, token: str | None = None) -> int:
        status = await delete(http, self.resource, token)
        for s in self.sinks:
            await s.stop()
        await self.pc.close()
        return status


async def publish(
    http: aiohttp.ClientSession, url: str, track: MediaStreamTrack, token: str | None = None,
    codec: str | None = None, bitrate: int | None = None, headers: dict[str, str] | None = None,
) -> Peer:
    """Send ``track`` to a WHIP endpoint; ``headers`` go on the POST (e.g. ``{ENHANCED_HEADER: "1"}``,
    a publisher that enhanced its video itself, as `likeness call` says)."""
    pc = RTCPeerConnection(rtc_configuration())
    t = pc.addTransceiver(track, direction="sendonly")
    prefer_codec(t, codec)
    control_sender_rate(t.sender, bitrate)
    try:
        return Peer(pc, await negotiate(http, url, pc, token, headers))
    except BaseException:
        await pc.close()
        raise


async def view(
    http: aiohttp.ClientSession, url: str, videos: int = 1, token: str | None = None, keep_every: int = 0,
    release_on_marker: bool = False, codec: str | None = None,
) -> Peer:
    """Receive a room from a WHEP endpoint with ``videos`` recvonly video m-lines; with
    ``release_on_marker`` this viewer decodes a frame on its last packet, as browsers do (aiortc's
    own rule, the default, waits for the next frame's first packet)."""
    pc = RTCPeerConnection(rtc_configuration())
    for _ in range(videos):
        t = pc.addTransceiver("video", direction="recvonly")
        prefer_codec(t, codec)
        if release_on_marker:
            release_frames_on_marker(t.receiver)
    sinks: list[FrameSink] = []

    @pc.on("track")
    def _on_track(track: MediaStreamTrack) -> None:
        sinks.append(FrameSink(track, keep_every=keep_every).start())

    try:
        return Peer(pc, await negotiate(http, url, pc, token), sinks)
    except BaseException:
        await pc.close()
        raise


def http_client() -> aiohttp.ClientSession:
    """HTTP client without keep-alive, so its idle connections do not look like leaked server tasks."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
