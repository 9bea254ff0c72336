"""The Chromium extension (bridge/extension/): any web page's getUserMedia gets the enhanced camera.

Real Debian Chromium (Playwright drives the system build; no `playwright install`) loads the
unpacked extension in a persistent context; its fake camera plays a real clip. A local test
"meeting" page joins two RTCPeerConnections inside itself: the far side receives the track the
page got from getUserMedia. The popup is opened as a tab and used as a person would: pair with
the code, pick the identity. Skips with the reason without chromium or the clip.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from benchmarks.harness.calls import serve_bridge
from benchmarks.harness.clips import load_clip, videos_dir, write_y4m
from benchmarks.harness.extension import (
    CHROMIUM,
    chromium_path,
    chromium_with_extension,
    extension_sessions,
    free_port,
    pair_in_popup,
    serve_page,
    start_serve,
    wait_popup,
)
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory
from bridge.pairing import PAIRING_HEADER
from enhancer.cli import main as cli_main
from enhancer.identity_store import IDENTITY_SHAPE, IdentityStore

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"
CODE = "TEST-PAIR-2345"
IDENTITY = "ext_alice"
BROWSER_ARGS = ("--allow-loopback-in-peer-connection", "--disable-background-networking")

BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(chromium_path() is None,
                       reason=f"{CHROMIUM} missing: apt-get install -y chromium"),
    pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available"),
]

# the "meeting": camera via getUserMedia -> near peer -> far peer; the far side counts frames it receives
MEETING = """<!doctype html><html><body><video id="far" autoplay muted playsinline></video><script>
window.meet = {far: [], error: null, audio: null, generator: null, ready: false};
(async () => {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 480}, audio: true});
    const v = stream.getVideoTracks()[0], a = stream.getAudioTracks()[0];
    meet.generator = typeof MediaStreamTrackGenerator === 'function' && v instanceof MediaStreamTrackGenerator;
    meet.audio = a ? {generator: a instanceof MediaStreamTrackGenerator, state: a.readyState} : null;
    const near = new RTCPeerConnection(), far = new RTCPeerConnection();
    near.onicecandidate = (e) => e.candidate && far.addIceCandidate(e.candidate);
    far.onicecandidate = (e) => e.candidate && near.addIceCandidate(e.candidate);
    far.ontrack = async (e) => {
      if (e.track.kind !== 'video') return;
      document.getElementById('far').srcObject = new MediaStream([e.track]);
      const reader = new MediaStreamTrackProcessor({track: e.track}).readable.getReader();
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        value.close();
        meet.far.push(performance.now());
        if (meet.far.length > 4000) meet.far.splice(0, 1000);
      }
    };
    near.addTrack(v, stream);
    await near.setLocalDescription(await near.createOffer());
    await far.setRemoteDescription(near.localDescription);
    await far.setLocalDescription(await far.createAnswer());
    await near.setRemoteDescription(far.localDescription);
    meet.ready = true;
  } catch (e) { meet.error = String(e); }
})();
</script></body></html>"""

FAR_FRAMES = """(since) => { const f = window.meet.far.filter((t) => t >= since);
  let gap = 0; for (let i = 1; i < f.length; i++) gap = Math.max(gap, f[i] - f[i - 1]);
  return {n: f.length, gap, now: performance.now(), first: f.length ? f[0] : null}; }"""

# what any script of the page could send to the extension's relay (and the answer it gets)
RELAY_ASK = """([type, body]) => new Promise((resolve) => {
  const id = 'probe' + Math.random();
  addEventListener('message', function on(e) {
    if (e.data && e.data.source === 'likeness-extension:relay' && e.data.id === id) {
      removeEventListener('message', on); resolve(e.data.body); } });
  postMessage({source: 'likeness-extension:page', type, id, body}, '*');
  setTimeout(() => resolve('no answer'), 5000);
})"""


def enroll_fake_identity(home: Path) -> None:
    """A stored identity (a fixed vector): the bicubic bridge loads it like an enrolled one."""
    store = IdentityStore(home)
    store.save(IDENTITY, np.full(IDENTITY_SHAPE, 0.1, np.float32), encoder_id="enc-test",
               model_id="model-test", n_refs=1)


def start_bicubic_serve(port: int, home: Path) -> subprocess.Popen[str]:
    """`likeness serve` as a person runs it (bicubic engine: no model needed), on a fixed port."""
    proc, lines = start_serve(port, home, "bicubic", CODE, env={"OMP_NUM_THREADS": "1"})
    assert CODE in lines[1], lines
    return proc


def camera_y4m(tmp: Path, n: int = 90) -> Path:
    frames, fps = load_clip(CLIP, n)
    return write_y4m(frames, tmp / "camera.y4m", fps, size=(640, 480))


# ----------------------------------------------------------------------------- pairing (no browser)


@pytest.mark.timeout(30)
def test_extension_endpoints_need_the_pairing_code() -> None:
    """(c) /ext/ without the code is 401, with a wrong one 403, from a web origin 403 even with the right
    code; never any CORS header; the right code from the extension gets the identity list."""

    async def scenario() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with serve_bridge(BridgeConfig(port=0, pairing_code=CODE), default_processor_factory) as (base, _b), \
                aiohttp.ClientSession() as http:
            async def get(name: str, method: str = "GET", path: str = "/ext/hello", **headers: str) -> None:
                async with http.request(method, base + path, headers=headers) as r:
                    out[name] = (r.status, await r.text(), r.headers.get("Access-Control-Allow-Origin"))
            await get("none")
            await get("wrong", **{PAIRING_HEADER: "ABCD-EFGH-JKLM"})
            await get("web", **{PAIRING_HEADER: CODE, "Origin": "https://meeting.example"})
            await get("offer_none", "POST", "/ext/offer")
            await get("preflight", "OPTIONS", **{"Origin": "https://meeting.example",
                                                 "Access-Control-Request-Method": "GET",
                                                 "Access-Control-Request-Headers": PAIRING_HEADER.lower()})
            await get("right", **{PAIRING_HEADER: CODE.lower().replace("-", " "),
                                  "Origin": "chrome-extension://abcdefghijklmnop"})
        return out

    r = asyncio.run(scenario())
    assert r["none"][0] == 401 and json.loads(r["none"][1])["error"].startswith("missing pairing code"), r
    assert r["wrong"][0] == 403 and json.loads(r["wrong"][1]) == {"error": "wrong pairing code"}, r
    assert r["web"][0] == 403 and "web pages" in json.loads(r["web"][1])["error"], r
    assert r["offer_none"][0] == 401, r
    assert r["preflight"][0] in (403, 405) and r["preflight"][2] is None, r
    assert r["right"][0] == 200 and json.loads(r["right"][1])["room"] == "extension", r
    assert all(v[1].count("\n") <= 1 for v in r.values())  # one-line errors


def test_pairing_code_config_and_pack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A configured code that is too short is a one-line error; `extension pack` writes a folder and a zip."""
    assert cli_main(["serve", "--port", "0", "--pairing-code", "abc"]) == 2
    assert "pairing code too short" in capsys.readouterr().err
    assert cli_main(["extension", "pack", "--out", str(tmp_path / "ext")]) == 0
    manifest = json.loads((tmp_path / "ext" / "manifest.json").read_text())
    assert manifest["manifest_version"] == 3 and "http://127.0.0.1/*" in manifest["host_permissions"]
    worlds = {tuple(c["js"]): c.get("world", "ISOLATED") for c in manifest["content_scripts"]}
    assert worlds == {("page.js",): "MAIN", ("relay.js",): "ISOLATED"}
    assert cli_main(["extension", "pack", "--out", str(tmp_path / "ext.zip")]) == 0
    names = set(zipfile.ZipFile(tmp_path / "ext.zip").namelist())
    assert {"manifest.json", "background.js", "page.js", "relay.js", "popup.html", "popup.js"} <= names
    (tmp_path / "file").write_text("x")
    assert cli_main(["extension", "pack", "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# ----------------------------------------------------------------------------- in a real browser

try:
    from playwright import async_api as playwright_api
except ImportError:  # the pairing tests above still run
    playwright_api = None


def browser_test(fn: Any) -> Any:
    """Marks a test that needs Chromium, Playwright and the clip (skipped with the reason without them)."""
    marks = [*BROWSER_MARKS, pytest.mark.skipif(playwright_api is None, reason="python playwright is not installed")]
    for m in marks:
        fn = m(fn)
    return fn


@browser_test

@pytest.mark.timeout(90)
def test_extension_gives_a_meeting_page_the_enhanced_camera(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) The meeting page's getUserMedia track carries the bridge's enhanced video, enhanced with the
    identity picked in the popup; the far side keeps receiving frames; audio is untouched; the page
    itself cannot reach the extension endpoints, even knowing the code."""
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path / "home"))
    enroll_fake_identity(tmp_path / "home")
    y4m = camera_y4m(tmp_path)

    async def scenario() -> dict[str, Any]:
        config = BridgeConfig(port=0, codec="vp8", pairing_code=CODE, media_idle_s=3.0)
        async with serve_bridge(config, default_processor_factory) as (base, bridge), serve_page(MEETING) as url, \
                playwright_api.async_playwright() as pw, \
                chromium_with_extension(pw, tmp_path, y4m, BROWSER_ARGS) as (ctx, ext_id):
            popup = await pair_in_popup(ctx, ext_id, base, CODE, IDENTITY)
            page = await ctx.new_page()
            await page.goto(url)
            await page.wait_for_function("window.meet.ready || window.meet.error", timeout=15_000)
            to_enhanced = await wait_popup(popup, "connected", 40)
            t_page = await page.evaluate("performance.now()")
            await asyncio.sleep(4.0)
            far = await page.evaluate(FAR_FRAMES, t_page)
            meet = await page.evaluate("({error: meet.error, audio: meet.audio, generator: meet.generator})")
            direct = await page.evaluate(
                "async ([u, c]) => { try { const r = await fetch(u, {headers: {'X-Likeness-Pairing': c}});"
                " return 'status ' + r.status; } catch (e) { return 'refused: ' + e.name; } }",
                [f"{base}/ext/hello", CODE])
            # through the relay a page reaches only its own sessions
            foreign = await page.evaluate(RELAY_ASK, ["leave", {"session": "someone-elses"}])
            rows = {k: await popup.text_content(f".call-{k} td:last-child") for k in ("identity", "fps", "added")}
            pubs = bridge.stats(room="extension")["rooms"].get("extension", [])
            # the popup's switch: raw camera, the bridge session closed, the far side still gets video
            await popup.uncheck("#enabled")
            await wait_popup(popup, "raw (switched off)", 10)
            t_off = await page.evaluate("performance.now()")
            await asyncio.sleep(1.5)
            off = {"far": await page.evaluate(FAR_FRAMES, t_off), "sessions": len(bridge.sessions)}
        return {"to_enhanced": to_enhanced, "far": far, "meet": meet, "direct": direct, "rows": rows, "pubs": pubs,
                "foreign": foreign, "off": off}

    r = asyncio.run(scenario())
    print(f"\nextension: enhanced after {r['to_enhanced']:.1f} s; far side {r['far']['n']} frames in 4 s, "
          f"max gap {r['far']['gap']:.0f} ms; popup {r['rows']}; page's own fetch: {r['direct']}")
    assert r["meet"]["error"] is None and r["meet"]["generator"], r["meet"]
    assert r["meet"]["audio"] == {"generator": False, "state": "live"}, r["meet"]  # audio untouched
    assert len(r["pubs"]) == 1, r["pubs"]
    pub = r["pubs"][0]
    t = pub["track"]
    assert pub["identity"] == IDENTITY and pub["processing"] == "enhance", pub
    assert t["enhanced"] > 20 and t["faces"] >= 1, t
    assert r["rows"]["identity"] == IDENTITY, r["rows"]
    assert r["far"]["n"] > 20 and r["far"]["gap"] < 1000, r["far"]  # the far side keeps getting video
    assert r["direct"].startswith("refused"), r["direct"]  # no CORS for web pages
    assert r["foreign"] == {"error": "not this page's session"}, r["foreign"]
    assert r["off"]["sessions"] == 0 and r["off"]["far"]["n"] > 15, r["off"]  # switched off: raw, session closed


@browser_test
@pytest.mark.timeout(120)
def test_extension_falls_back_to_the_raw_camera_and_recovers(tmp_path: Path) -> None:
    """(b) SIGKILL `likeness serve` mid-call: the page's track carries the raw camera with no gap over 1 s;
    restart it on the same port and the extension reconnects by itself and enhances again."""
    home = tmp_path / "home"
    enroll_fake_identity(home)
    y4m = camera_y4m(tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_bicubic_serve(port, home)
    procs = [proc]

    async def scenario() -> dict[str, Any]:
        nonlocal proc
        async with serve_page(MEETING) as url, playwright_api.async_playwright() as pw, \
                chromium_with_extension(pw, tmp_path, y4m, BROWSER_ARGS) as (ctx, ext_id):
            popup = await pair_in_popup(ctx, ext_id, base, CODE, IDENTITY)
            page = await ctx.new_page()
            await page.goto(url)
            await page.wait_for_function("window.meet.ready || window.meet.error", timeout=15_000)
            await wait_popup(popup, "connected", 40)
            await asyncio.sleep(1.0)
            t_kill = await page.evaluate("performance.now()")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            to_raw = await wait_popup(popup, "raw fallback", 10)
            await asyncio.sleep(3.0)  # the extension retries meanwhile (connection refused)
            during = await page.evaluate(FAR_FRAMES, t_kill - 1000)
            proc = start_bicubic_serve(port, home)
            procs.append(proc)
            to_back = await wait_popup(popup, "connected", 40)
            await asyncio.sleep(2.0)
            overall = await page.evaluate(FAR_FRAMES, t_kill - 1000)
            pubs = await asyncio.to_thread(extension_sessions, port)
        return {"during": during, "overall": overall, "to_raw": to_raw, "to_back": to_back, "pubs": pubs}

    try:
        r = asyncio.run(scenario())
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    print(f"\nfallback: popup said raw {r['to_raw']:.1f} s after the kill; far side max gap "
          f"{r['during']['gap']:.0f} ms around the kill ({r['during']['n']} frames), {r['overall']['gap']:.0f} ms "
          f"overall; enhanced again {r['to_back']:.1f} s after the restart")
    assert r["during"]["gap"] < 1000 and r["during"]["n"] > 30, r["during"]  # raw camera, no gap over 1 s
    assert r["overall"]["gap"] < 1000, r["overall"]
    pub = r["pubs"][0]
    assert pub["identity"] == IDENTITY and pub["track"]["enhanced"] > 0, r["pubs"]
