"""`likeness view`: watch a participant over WHEP and restore their face on this side of a poor link.

Why on the receiving side: a low bitrate is imposed by the network after the sender's encoder, so
only the receiver can undo it (``benchmarks/receiver.py`` measures what that saves). The received
stream goes through the product pipeline (``assemble.build_processor``) towards the participant's
identity when they share it (``bridge/identity_share.py``; held in memory only, never written),
generically otherwise, and the result is re-served on a local loopback bridge: its page (or any
WHEP client) shows it. The local bridge enhances it with the bridge's own track machinery
(``Bridge.publish_track`` -> ``EnhancingTrack``): latest frame wins, a deadline per frame, the frame
as it came when late, never a frozen picture.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import LikenessError
from ..identity_store import MAX_FILE_BYTES, IdentityMismatch, StoredIdentity, parse_identity
from .enhance import late_frames_config
from .serve import add_rtc_args, parse_bitrate, setup_logging

CONNECT_TIMEOUT_S = 20.0
SILENT_S = 10.0  # no video from the participant for this long: they left, or the link is gone
ROOM = "view"  # the local bridge's one room


def register(sub) -> None:
    p = sub.add_parser("view", help="watch a participant over WHEP, restore their face here and show it locally")
    p.add_argument("--whep", required=True, metavar="URL", help="WHEP endpoint, e.g. http://127.0.0.1:8765/whep/main")
    p.add_argument("--port", type=int, default=8766, help="local port of the page that shows the restored stream")
    p.add_argument("--duration", type=float, default=None, help="seconds to watch (default: until Ctrl-C)")
    add_rtc_args(p)
    p.set_defaults(func=_view)


def _view(args) -> int:
    parts = urlsplit(args.whep)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LikenessError(f"--whep must be an http(s) URL, got {args.whep!r}")
    if args.duration is not None and args.duration <= 0:
        raise LikenessError("--duration must be positive")
    if not 1 <= args.port <= 65535:
        raise LikenessError(f"--port must be 1-65535, got {args.port}")
    setup_logging(args.log_level)
    return asyncio.run(watch(args))


def _no_publishers(identity: str | None) -> Any:
    """The local bridge's factory: it re-serves the one received stream and takes no publishers."""
    raise LikenessError("this is `likeness view`'s local bridge: it shows one received stream and takes no publishers")


async def watch(args) -> int:
    import aiohttp
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import MediaStreamTrack

    from bridge.client import delete, negotiate
    from bridge.codecs import prefer_codec
    from bridge.config import BridgeConfig
    from bridge.ice import is_loopback_host, loopback_candidates, rtc_configuration
    from bridge.jitter import release_frames_on_marker
    from bridge.server import serving, stop_on_signals

    # 127.0.0.1 only when the room is on this machine too; else added, so the remote bridge is reachable
    mode = "only" if is_loopback_host(urlsplit(args.whep).hostname or "") else "add"
    try:
        rtc = rtc_configuration(args.ice_server)
    except ValueError as e:
        raise LikenessError(str(e)) from None
    config = BridgeConfig(port=args.port, codec=args.codec, loopback_ice=mode,
                          bitrate=parse_bitrate(args.bitrate) if args.bitrate else None)
    with loopback_candidates(mode):
        async with serving(config, _no_publishers) as local, aiohttp.ClientSession() as http:
            pc = RTCPeerConnection(rtc)
            tracks: list[MediaStreamTrack] = []
            connected = asyncio.Event()
            pc.on("track", lambda track: tracks.append(track) if track.kind == "video" else None)

            @pc.on("connectionstatechange")
            def _state() -> None:
                if pc.connectionState in ("connected", "failed", "closed"):
                    connected.set()

            try:
                t = pc.addTransceiver("video", direction="recvonly")
                prefer_codec(t, args.codec)
                release_frames_on_marker(t.receiver)  # as the bridge does: a frame is decoded on its last packet
                resource = await negotiate(http, args.whep, pc, args.token)
                try:  # from here on, leave with DELETE whatever happens
                    stored = await _shared_identity(http, resource, args.token)
                    processor, how = await asyncio.to_thread(local.locked, _processor, stored, args)
                    print(how, flush=True)
                    await _connected(pc, connected, args.whep, CONNECT_TIMEOUT_S)
                    if not tracks:
                        raise LikenessError(f"{args.whep} sent no video")
                    session = await local.publish_track(ROOM, tracks[0], processor,
                                                        stored.name if stored and processor else None)
                    print(f"showing the restored stream at http://127.0.0.1:{args.port}/?room={ROOM}&watch=1 "
                          f"(WHEP http://127.0.0.1:{args.port}/whep/{ROOM}); Ctrl-C to stop", flush=True)
                    try:
                        await _run(pc, session.track, args, stop_on_signals())
                    finally:
                        stats = session.track.stats() if session.track else {}
                        await local.close_session(session.id)
                finally:
                    await delete(http, resource, args.token)
            finally:
                await pc.close()
    keep = ("frames_in", "frames_out", "enhanced", "enhanced_share_total", "dropped", "passthrough_late", "errors")
    print(json.dumps({"restored_with": how.split(":")[0], **{k: stats.get(k) for k in keep}}))
    return 0


async def _shared_identity(http: Any, resource: Any, token: str | None) -> StoredIdentity | None:
    """The participant's shared identity, validated in memory (never written anywhere), or None."""
    from bridge.client import fetch_identity, identity_url

    url = identity_url(resource)
    data = await fetch_identity(http, url, token, MAX_FILE_BYTES) if url else None
    if data is None:
        return None
    try:
        return parse_identity(data, "shared identity")
    except LikenessError as e:
        print(f"the participant's shared identity is unusable ({e}); restoring generically", flush=True)
        return None


def _processor(stored: StoredIdentity | None, args) -> tuple[Any, str]:
    """The pipeline for the received stream and one line saying how it restores: towards the shared
    identity, generically, or not at all (raw) when the identity belongs to another model."""
    from .assemble import build_processor

    late = late_frames_config(args.late_frames)
    if stored is None:
        return build_processor(None, args.engine, args.strength, late), "generic: the participant shares no identity"
    try:
        processor = build_processor(stored, args.engine, args.strength, late)
    except IdentityMismatch as e:
        m = stored.metadata
        return None, (f"raw: the shared identity {stored.name!r} is for model {m['model_id']} (encoder {e.made_by}), "
                      f"not this receiver's (encoder {e.expected}); showing the stream as received")
    model = stored.metadata["model_id"]
    return processor, f"identity: restoring towards the shared identity {stored.name!r} (model {model})"


async def _connected(pc: Any, connected: asyncio.Event, url: str, timeout: float) -> None:
    try:
        await asyncio.wait_for(connected.wait(), timeout)
    except TimeoutError:
        raise LikenessError(f"no media connection to {url} within {timeout:.0f} s "
                            "(ICE failed: try --ice-server)") from None
    if pc.connectionState != "connected":
        raise LikenessError(f"media connection to {url} {pc.connectionState}")


async def _run(pc: Any, track: Any, args, stop: asyncio.Event) -> None:
    """Until ``--duration``, Ctrl-C, a lost connection or a silent participant."""
    end = None if args.duration is None else time.monotonic() + args.duration
    while (end is None or time.monotonic() < end) and not stop.is_set():
        await asyncio.sleep(0.25 if end is None else min(0.25, max(0.0, end - time.monotonic())))
        if pc.connectionState in ("failed", "closed"):
            raise LikenessError(f"connection to {args.whep} {pc.connectionState}")
        if track.idle_s() > SILENT_S:
            raise LikenessError(f"no video from {args.whep} for {SILENT_S:.0f} s: "
                                "the participant left or the link is down")
