"""`likeness serve`: the local WebRTC bridge (web page, rooms, WHIP/WHEP)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os

from ..errors import LikenessError
from .enhance import add_late_frames_arg, add_strength_arg, late_frames_config


def parse_bitrate(text: str) -> int:
    """'800k', '1.5M' or '1500000' -> bit/s."""
    t = text.strip().lower().removesuffix("bps").removesuffix("b")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    try:
        value = float(t[:-1] if mult > 1 else t) * mult
    except ValueError:
        raise LikenessError(f"bad bitrate {text!r}: use e.g. 800k, 1.5M or 1500000") from None
    if not 100_000 <= value <= 20_000_000:
        raise LikenessError(f"bitrate {text} out of range (100k..20M)")
    return int(value)


def add_rtc_args(p) -> None:
    """Options shared by `serve` and `call`."""
    p.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server (stun:host:port, turn:user:pass@host:port); none by default",
    )
    p.add_argument("--codec", choices=["vp8", "h264"], default=None, help="preferred video codec")
    p.add_argument("--bitrate", default=None, help="video bitrate ceiling per stream, e.g. 800k or 1.5M")
    p.add_argument("--engine", default="auto",
                   help="auto (best available for the trained student), torch, onnxruntime, tensorrt, "
                        "or 'bicubic' (no model; a baseline)")
    add_strength_arg(p)
    add_late_frames_arg(p)
    p.add_argument("--token", default=os.environ.get("LIKENESS_TOKEN"), help="bearer token (default: $LIKENESS_TOKEN)")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aioice", "aiortc", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the WebRTC bridge: web page, rooms, WHIP/WHEP endpoints")
    p.add_argument("--identity", default=None, help="default identity for participants that pick none")
    p.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs --token)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--deadline-frames",
        type=float,
        default=1.5,
        help="send a frame un-enhanced if enhancement takes longer than this many frame intervals",
    )
    p.add_argument(
        "--loopback-ice",
        choices=["only", "add", "off"],
        default=None,
        help="ICE host candidates: 'only' 127.0.0.1 (default for a loopback --host: the bridge offers no "
        "network address and media never leaves this machine), 'add' 127.0.0.1 to the machine's network "
        "addresses, or 'off': the network addresses only (default for any other --host)",
    )
    p.add_argument(
        "--fanout",
        choices=["shared", "per-viewer"],
        default="shared",
        help="encode each participant's video once for all its viewers (default), or once per viewer "
        "(each viewer then gets its own bitrate; costs one encode per viewer)",
    )
    p.add_argument("--pairing-code", default=os.environ.get("LIKENESS_PAIRING_CODE") or None,
                   help="the code the browser extension pairs with, for this run only (default: "
                   "$LIKENESS_PAIRING_CODE, else the one kept in the Likeness home folder, made on first run; "
                   "printed at start)")
    p.add_argument("--new-pairing-code", action="store_true",
                   help="replace the kept pairing code with a new one (paired extensions must pair again)")
    add_rtc_args(p)
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    from bridge.config import BridgeConfig, check_config
    from bridge.pairing import serve_pairing_code
    from bridge.server import run_server

    from .assemble import make_factory, make_view_builder

    setup_logging(args.log_level)
    config = BridgeConfig(
        host=args.host,
        port=args.port,
        token=args.token or None,
        ice_servers=tuple(args.ice_server),
        codec=args.codec,
        bitrate=parse_bitrate(args.bitrate) if args.bitrate else None,
        identity=args.identity,
        deadline_frames=args.deadline_frames,
        loopback_ice=args.loopback_ice,
        fanout=args.fanout,
        pairing_code=args.pairing_code,
    )
    check_config(config)  # before the pairing code file: a refused start writes nothing
    pairing = serve_pairing_code(args.pairing_code, rotate=args.new_pairing_code)
    config = dataclasses.replace(config, pairing_code=pairing.code, pairing_note=pairing.note)
    late = late_frames_config(args.late_frames)
    factory = make_factory(args.engine, args.strength, late)
    factory(args.identity)  # fail on a bad identity or engine now; loads the face models once
    # the page's watch mode can receive a room of another bridge and restore it here (bridge/remote_view.py)
    asyncio.run(run_server(config, factory, view_builder=make_view_builder(args.engine, args.strength, late)))
    return 0
