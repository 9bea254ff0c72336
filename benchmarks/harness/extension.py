"""Driving the browser extension as a person does, for its tests and its latency benchmark: a
real `likeness serve` process, a page on its own origin, Chromium with the unpacked extension,
and the popup (pair, pick the identity, read the call's state)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

EXTENSION = Path(__file__).resolve().parents[2] / "bridge" / "extension"
CHROMIUM = Path(os.environ.get("LIKENESS_CHROMIUM", "/usr/bin/chromium"))


def chromium_path() -> str | None:
    """Debian's Chromium ($LIKENESS_CHROMIUM, /usr/bin/chromium or on PATH), or None."""
    return str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(port: int, home: Path, engine: str, code: str,
                env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    """`likeness serve` as a person runs it, on a fixed port (so a restart is the same bridge URL);
    returns the process and its first two lines (the address, the pairing code)."""
    env = dict(os.environ, LIKENESS_HOME=str(home), LIKENESS_TOKEN="", **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "enhancer.cli", "serve", "--port", str(port), "--engine", engine,
                             "--codec", "vp8", "--pairing-code", code],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = [proc.stdout.readline(), proc.stdout.readline()]  # type: ignore[union-attr]
    if not all(lines):
        raise RuntimeError(f"likeness serve did not start (exit {proc.wait()}): {lines}")
    return proc, lines


def extension_sessions(port: int) -> list[dict[str, Any]]:
    """The bridge's stats of its extension sessions (room ``extension``)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/stats?room=extension", timeout=5) as r:
        return json.loads(r.read())["rooms"].get("extension", [])


@asynccontextmanager
async def serve_page(html: str) -> AsyncIterator[str]:
    """``html`` at / on its own origin (another port: a web origin, not the bridge's); yields its URL."""
    app = web.Application()

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


@asynccontextmanager
async def chromium_with_extension(pw: Any, tmp: Path, y4m: Path,
                                  extra_args: tuple[str, ...] = ()) -> AsyncIterator[tuple[Any, str]]:
    """A persistent context with the unpacked extension loaded and ``y4m`` as the camera; yields
    (context, extension id)."""
    ctx = await pw.chromium.launch_persistent_context(
        str(tmp / "profile"), executable_path=chromium_path(), headless=True, args=[
            f"--disable-extensions-except={EXTENSION}", f"--load-extension={EXTENSION}",
            "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-video-capture={y4m}", *extra_args, "--no-first-run", "--no-sandbox"])
    try:
        workers = ctx.service_workers
        sw = workers[0] if workers else await ctx.wait_for_event("serviceworker", timeout=15_000)
        yield ctx, sw.url.split("/")[2]
    finally:
        await ctx.close()


async def pair_in_popup(ctx: Any, ext_id: str, bridge: str, code: str, identity: str | None) -> Any:
    """Open the popup as a tab, pair with ``code`` and pick ``identity``; returns the popup page."""
    popup = await ctx.new_page()
    await popup.goto(f"chrome-extension://{ext_id}/popup.html")
    await popup.fill("#bridge", bridge)
    await popup.fill("#code", code)
    await popup.click("#pair")
    # the popup's CSP forbids the string eval wait_for_function uses: poll from here instead
    for _ in range(50):
        if (await popup.text_content("#pair-status") or "").startswith("paired"):
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"pairing failed: {await popup.text_content('#pair-status')!r}")
    if identity:
        await popup.select_option("#identity", identity, timeout=5_000)
    return popup


async def popup_row(popup: Any, row: str) -> str:
    """The value of the popup's call row ``row`` (state, identity, fps, added), or ''."""
    if not await popup.locator(f".call-{row}").count():
        return ""
    return (await popup.text_content(f".call-{row} td:last-child")) or ""


async def wait_popup(popup: Any, prefix: str, timeout_s: float, poll_s: float = 0.2) -> float:
    """Wait until the popup's call state starts with ``prefix``; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if (await popup_row(popup, "state")).startswith(prefix):
            return time.monotonic() - t0
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"popup never said {prefix!r} in {timeout_s} s: {await popup.text_content('#calls')!r}")
