"""`likeness view`: watch a participant over WHEP and restore their face on this side of a poor link.

Why on the receiving side: a low bitrate is imposed by the network after the sender's encoder, so
only the receiver can undo it (``benchmarks/receiver.py`` measures what that saves). The received
stream goes through the product pipeline (``assemble.make_view_builder``) towards the participant's
identity when they share it (``bridge/identity_share.py``; held in memory only, never written),
generically otherwise, and the result is re-served on a local loopback bridge: its page (or any
WHEP client) shows it (``bridge/remote_view.py``, which the page's watch mode on a running bridge
uses too). Latest frame wins, a deadline per frame, the frame as it came when late, never a frozen
picture.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

from ..errors import LikenessError
from .enhance import late_frames_config
from .serve import add_rtc_args, parse_bitrate, setup_logging

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
    from bridge.config import BridgeConfig
    from bridge.ice import is_loopback_host, loopback_candidates, rtc_configuration
    from bridge.remote_view import close_remote_view, open_remote_view, watch_until_gone
    from bridge.server import serving, stop_on_signals

    from .assemble import make_view_builder

    # 127.0.0.1 only when the room is on this machine too; else added, so the remote bridge is reachable
    mode = "only" if is_loopback_host(urlsplit(args.whep).hostname or "") else "add"
    try:
        rtc = rtc_configuration(args.ice_server)
    except ValueError as e:
        raise LikenessError(str(e)) from None
    config = BridgeConfig(port=args.port, codec=args.codec, loopback_ice=mode,
                          bitrate=parse_bitrate(args.bitrate) if args.bitrate else None)
    build = make_view_builder(args.engine, args.strength, late_frames_config(args.late_frames))
    with loopback_candidates(mode):
        async with serving(config, _no_publishers) as local:
            view = await open_remote_view(local, args.whep, args.token, ROOM, build, rtc, args.codec)
            if view.note:
                print(view.note, flush=True)
            print(view.how, flush=True)
            print(f"showing the restored stream at http://127.0.0.1:{args.port}/?room={ROOM}&watch=1 "
                  f"(WHEP http://127.0.0.1:{args.port}/whep/{ROOM}); Ctrl-C to stop", flush=True)
            end = None if args.duration is None else time.monotonic() + args.duration
            why = None
            try:
                why = await watch_until_gone(view, end, stop_on_signals())
            finally:
                stats = await close_remote_view(local, view, why or "stopped")
            if why is not None:
                raise LikenessError(why)
    keep = ("frames_in", "frames_out", "enhanced", "enhanced_share_total", "dropped", "passthrough_late", "errors")
    print(json.dumps({"restored_with": view.how.split(":")[0], **{k: stats.get(k) for k in keep}}))
    return 0
