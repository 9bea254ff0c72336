"""The bridge server: the aiohttp app that puts rooms, endpoints and the page together, and runs it.

* A publisher (WHIP ``POST /whip/{room}``, or the page's ``POST /api/offer``) sends video;
  every viewer (WHEP ``POST /whep/{room}``) of the room gets it enhanced (``rooms``).
* A WHIP publisher that enhanced its video itself (``likeness call`` sends the header
  ``X-Likeness-Enhanced: 1``; ``?enhanced=1`` works too) is relayed untouched, never enhanced
  twice. The page's ``/api/offer`` ignores it: the page sends its raw camera.
* Safety: loopback bind by default; a non-loopback bind needs a bearer token (``middleware``).
  The browser extension's ``/ext/`` endpoints need the pairing code ``serve`` prints (``pairing``;
  kept in the home folder, so it survives restarts).
  Bodies are capped; bad SDP is a 400.

Where the rest lives: settings ``config``, rooms and sessions ``rooms``/``session``, dead peers
``watchdog``, endpoints ``http_api`` and ``enrol_upload``, errors ``errors``, rooms of other
bridges watched (and restored) here ``remote_view``/``view_api``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from enhancer.errors import LikenessError

from .config import BridgeConfig, check_config
from .enrol_upload import api_enroll
from .extension_api import add_extension_routes
from .http_api import (
    api_config,
    api_identities,
    api_offer,
    api_stats,
    session_delete,
    session_patch,
    whep_post,
    whip_post,
)
from .ice import loopback_candidates
from .identity_share import add_identity_share_routes
from .middleware import auth_middleware
from .pairing import new_pairing_code, pairing_middleware
from .remote_view import ViewProcessorBuilder
from .rooms import BRIDGE_KEY, Bridge
from .track import ProcessorFactory
from .view_api import add_view_routes

STATIC_DIR = Path(__file__).parent / "static"


async def index(request: web.Request) -> web.FileResponse:
    """The page (plain HTML/JS, no build step); never cached, so a new bridge serves a new page."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(config: BridgeConfig, factory: ProcessorFactory,
               view_builder: ViewProcessorBuilder | None = None) -> web.Application:
    """The aiohttp application; ``app[BRIDGE_KEY]`` is its Bridge (for tests and stats).
    ``view_builder``: how streams pulled from other bridges are restored (``POST /api/view``);
    None: not offered."""
    check_config(config)
    if config.pairing_code is None:  # an app built in code; `serve` passes the stored one (``pairing``)
        config = dataclasses.replace(config, pairing_code=new_pairing_code(), pairing_note="for this run only")
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[auth_middleware(config.token), pairing_middleware(config.pairing_code)])
    bridge = Bridge(config, factory, view_builder)
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
    add_identity_share_routes(r)
    add_extension_routes(r)
    add_view_routes(r)
    return app


async def run_server(config: BridgeConfig, factory: ProcessorFactory, stop: asyncio.Event | None = None,
                     view_builder: ViewProcessorBuilder | None = None) -> None:
    """Serve until ``stop`` is set (or forever); prints one line with the page's URL."""
    check_config(config)
    with loopback_candidates(config.loopback):
        await _serve(config, factory, stop, view_builder)


@contextlib.asynccontextmanager
async def serving(config: BridgeConfig, factory: ProcessorFactory,
                  view_builder: ViewProcessorBuilder | None = None) -> AsyncIterator[Bridge]:
    """The app listening on ``config.host:config.port`` for the block (``run_server``'s, and
    ``likeness view``'s local re-serve); a port in use is a one-line ``LikenessError``."""
    app = create_app(config, factory, view_builder)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as e:
            why = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise LikenessError(f"cannot listen on {config.host}:{config.port}: {why}") from None
        yield app[BRIDGE_KEY]
    finally:
        await runner.cleanup()


def stop_on_signals() -> asyncio.Event:
    """An event SIGINT/SIGTERM set, so a server ends cleanly (sessions closed, DELETE-equivalent)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve(config: BridgeConfig, factory: ProcessorFactory, stop: asyncio.Event | None,
                 view_builder: ViewProcessorBuilder | None) -> None:
    async with serving(config, factory, view_builder) as bridge:
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(
            f"likeness bridge on http://{host}:{config.port}/ (WHIP /whip/ROOM, WHEP /whep/ROOM"
            f"{', token required' if config.token else ''}); Ctrl-C to stop",
            flush=True,
        )
        # the person types this into the browser extension's popup once (bridge/extension/)
        used = bridge.config
        note = f" ({used.pairing_note})" if used.pairing_note else ""
        print(f"browser extension pairing code: {used.pairing_code}{note}", flush=True)
        if stop is None:
            stop = stop_on_signals()
        await stop.wait()
        print("likeness bridge: stopping", flush=True)
