"""`likeness call`: enhance the local camera (or a file) and publish it to any WHIP endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from urllib.parse import urlsplit

from ..errors import LikenessError
from .enhance import late_frames_config
from .serve import add_rtc_args, parse_bitrate, setup_logging

CONNECT_TIMEOUT_S = 20.0


def register(sub) -> None:
    p = sub.add_parser("call", help="enhance your camera locally and publish it to a WHIP endpoint")
    p.add_argument("--identity", default=None, help="enrolled identity to enhance towards")
    p.add_argument("--whip", required=True, metavar="URL", help="WHIP endpoint, e.g. http://127.0.0.1:8765/whip/main")
    p.add_argument(
        "--source", default="camera", help="'camera' (first /dev/video*), a /dev/videoN path or a video file"
    )
    p.add_argument("--share-identity", action="store_true",
                   help="let viewers of the same room fetch your identity and its aligned reference face crops "
                        "(in memory, until you leave) so "
                        "they can restore your face on their side (`likeness view`); needs --identity")
    p.add_argument("--duration", type=float, default=None, help="seconds to publish (default: until Ctrl-C)")
    p.add_argument("--stats-every", type=float, default=5.0, help="print a stats line every S seconds (0: never)")
    add_rtc_args(p)
    p.set_defaults(func=_call)


def _call(args) -> int:
    parts = urlsplit(args.whip)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LikenessError(f"--whip must be an http(s) URL, got {args.whip!r}")
    if args.duration is not None and args.duration <= 0:
        raise LikenessError("--duration must be positive")
    if args.share_identity and not args.identity:
        raise LikenessError("--share-identity needs --identity NAME: there is no identity to share")
    setup_logging(args.log_level)
    return asyncio.run(publish(args))


async def publish(args) -> int:
    import aiohttp
    from aiortc import RTCPeerConnection

    from bridge.client import ENHANCED_HEADER, WhipError, delete, negotiate, put_identity
    from bridge.codecs import prefer_codec
    from bridge.ice import enable_loopback_candidates, is_loopback_host, rtc_configuration
    from bridge.rate_control import control_sender_rate
    from bridge.server import stop_on_signals
    from bridge.sources import open_source
    from bridge.track import EnhancingTrack

    from ..identity_store import IdentityStore, shared_bytes
    from .assemble import make_factory

    host = urlsplit(args.whip).hostname or ""
    if is_loopback_host(host):
        enable_loopback_candidates(only=False)  # a local bridge may offer only 127.0.0.1
    try:
        config = rtc_configuration(args.ice_server)
    except ValueError as e:
        raise LikenessError(str(e)) from None
    bitrate = parse_bitrate(args.bitrate) if args.bitrate else None
    factory = make_factory(args.engine, args.strength, late_frames_config(args.late_frames))
    processor = await asyncio.to_thread(factory, args.identity)
    # what the person consented to share: read now, so a bad identity fails before the call starts
    shared = shared_bytes(IdentityStore().read(args.identity)) if args.share_identity else None
    source, _ = open_source(args.source)
    track = EnhancingTrack(source, processor, name="call")
    pc = RTCPeerConnection(config)
    resource = None
    connected = asyncio.Event()

    @pc.on("connectionstatechange")
    def _state() -> None:
        if pc.connectionState in ("connected", "failed", "closed"):
            connected.set()

    try:
        t = pc.addTransceiver(track, direction="sendonly")
        prefer_codec(t, args.codec)
        control_sender_rate(t.sender, bitrate)
        async with aiohttp.ClientSession() as http:
            # the video is enhanced here: a Likeness bridge must relay it, not restore it again
            resource = await negotiate(http, args.whip, pc, args.token, headers={ENHANCED_HEADER: "1"})
            try:  # from here on, leave with DELETE whatever happens
                try:
                    await asyncio.wait_for(connected.wait(), CONNECT_TIMEOUT_S)
                except TimeoutError:
                    raise LikenessError(
                        f"no media connection to {args.whip} within {CONNECT_TIMEOUT_S:.0f} s "
                        "(ICE failed: try --ice-server)"
                    ) from None
                if pc.connectionState != "connected":
                    raise LikenessError(f"media connection to {args.whip} {pc.connectionState}")
                if shared is not None:
                    try:  # a WHIP server that is not a Likeness bridge has nowhere to keep it: call on, unshared
                        await put_identity(http, resource, shared, args.token)
                        print(f"sharing identity {args.identity!r} with the viewers of this room until you leave",
                              flush=True)
                    except WhipError as e:
                        print(f"likeness call: identity not shared ({e})", file=sys.stderr, flush=True)
                print(f"publishing to {resource.url} (Ctrl-C to stop)", flush=True)
                await _run(pc, track, args, stop_on_signals())
            finally:
                await delete(http, resource, args.token)
    finally:
        await track.aclose()
        source.stop()
        await pc.close()
    s = track.stats()
    print(json.dumps({k: s[k] for k in ("frames_out", "enhanced", "enhanced_share_total", "dropped", "errors")}))
    return 0


async def _run(pc, track, args, stop: asyncio.Event) -> None:
    end = None if args.duration is None else time.monotonic() + args.duration
    last = time.monotonic()
    prev_sent: int | None = None
    while (end is None or time.monotonic() < end) and not stop.is_set():
        await asyncio.sleep(0.25 if end is None else min(0.25, max(0.0, end - time.monotonic())))
        if pc.connectionState in ("failed", "closed"):
            raise LikenessError(f"connection to the WHIP endpoint {pc.connectionState}")
        if args.stats_every and time.monotonic() - last >= args.stats_every:
            now = time.monotonic()
            s = track.stats()
            sent = await _sent_bytes(pc)
            link = ""
            if sent is not None and prev_sent is not None:
                link = f"  sending {8 * (sent - prev_sent) / (now - last) / 1000:.0f} kbit/s"
            prev_sent, last = sent, now
            with contextlib.suppress(Exception):
                print(
                    f"fps {s['fps_out']:.1f}  enhanced {s['enhanced_share'] * 100:.0f}%  faces {s['faces']}  "
                    f"engine {s['stage_ms'].get('total', 0):.1f} ms  dropped {s['dropped']}{link}",
                    flush=True,
                )


async def _sent_bytes(pc) -> int | None:
    """RTP payload bytes the video sender has sent so far (None if it cannot tell): what the
    link gives the call, which on a slow connection is the estimate, not the camera."""
    with contextlib.suppress(Exception):
        for sender in pc.getSenders():
            for st in (await sender.getStats()).values():
                if st.type == "outbound-rtp":
                    return int(st.bytesSent)
    return None
