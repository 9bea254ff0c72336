"""Calls over poor links: a real Chromium behind a shaped kernel link (``benchmarks/harness/netlab.py``).

Loopback never congests, so every other bridge figure assumes a perfect network. Here
Chromium runs in a network namespace whose veth link to the bridge has a set rate and a
router-sized queue (tbf; this kernel has no netem, so no added delay or random loss), so the
bandwidth estimators and encoders on both ends have to find the rate, the way they must for
people on poor connections:

* ``viewer``: an aiortc publisher (real clip, 640x480) sends to the bridge unshaped; Chromium
  watches the room over WHEP through the shaped downlink. Does the bridge's encoder follow the
  browser's estimate (REMB) down to the link, and does the viewer keep smooth video?
* ``publisher``: Chromium sends its (fake, real-clip) camera from the page through the shaped
  uplink; the bridge enhances it and sends it back. Does the browser's encoder follow the
  bridge's estimate, and what does the bridge then get to enhance (fps, resolution)?
* ``call``: ``likeness call`` (aiortc, its own process inside the namespace) publishes the clip
  through the shaped uplink, as someone on a poor connection does with the product; the bridge
  (passthrough) measures what arrives: frame rate, loss, stalls (gaps over 0.2 s).

Each condition runs on a fresh bridge, link and browser: ``--warmup`` s to settle, then
``--seconds`` s measured from 1-s samples of the browser's ``getStats`` and the bridge's
encoder. Needs root, iproute2 and /usr/bin/chromium.

    python -m benchmarks.poor_link [--scenario viewer|publisher|call|both] [--rates 0,1000,500,300,200]
        [--queue-ms 200] [--seconds 20] [--warmup 8] [--processor passthrough|bicubic|auto]
        [--fanout shared|per-viewer] [--repeats 1] [--ablate none|budget] [--out results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.bench_bridge import CLIP, SIZE, Passthrough
from benchmarks.harness.calls import http_client, publish, serve_bridge
from benchmarks.harness.clips import load_clip, write_y4m
from benchmarks.harness.netlab import LinkShape, ShapedLink, unavailable
from benchmarks.harness.tracks import ClipTrack
from bridge import rate_control as rtc
from bridge.config import BridgeConfig
from bridge.factory import warm_detectors
from bridge.rooms import Bridge
from enhancer.commands.assemble import make_factory

ROOM = "poor"
CHROMIUM = os.environ.get("LIKENESS_CHROMIUM", "/usr/bin/chromium")

# One sample of the page's peer connection (the viewer's, or its own call's): cumulative
# counters of the busiest video stream and the selected candidate pair.
PAGE_STATS = """async (which) => {
  const pc = which === 'viewer' ? window.likeness.viewer : window.likeness.pc;
  const out = {t: performance.now() / 1000, rtp: null, pair: null};
  if (!pc) return out;
  const kind = which === 'viewer' ? 'inbound-rtp' : 'outbound-rtp';
  const bytes = (s) => (s.bytesReceived || 0) + (s.bytesSent || 0);
  (await pc.getStats()).forEach(s => {
    if (s.type === kind && s.kind === 'video' && (!out.rtp || bytes(s) > bytes(out.rtp))) out.rtp = s;
    if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') out.pair = s;
  });
  const pick = (s, keys) => s ? Object.fromEntries(keys.map(k => [k, s[k] ?? null])) : null;
  out.rtp = pick(out.rtp, ['framesDecoded', 'framesEncoded', 'freezeCount', 'totalFreezesDuration',
    'packetsLost', 'packetsReceived', 'packetsSent', 'bytesReceived', 'bytesSent', 'jitterBufferDelay',
    'jitterBufferEmittedCount', 'nackCount', 'pliCount', 'keyFramesDecoded', 'framesDropped',
    'frameWidth', 'frameHeight', 'framesPerSecond', 'targetBitrate', 'qualityLimitationReason',
    'retransmittedBytesSent']);
  out.pair = pick(out.pair, ['currentRoundTripTime', 'availableOutgoingBitrate', 'availableIncomingBitrate']);
  return out;
}"""


def chromium_args(extra: list[str] | None = None) -> list[str]:
    return ["--no-sandbox", "--headless", "--no-first-run", "--disable-background-networking",
            "--autoplay-policy=no-user-gesture-required", *(extra or [])]


def encoder_state(bridge: Bridge) -> dict[str, Any]:
    """What the bridge sends its viewers at: the shared encoders' target bitrates and the
    viewers' latest estimates (REMB), or, per-viewer, each viewer sender's encoder target."""
    if bridge.encoders:
        enc = next(iter(bridge.encoders.values()))
        return {"bitrate": enc.stats.bitrate, "keyframes": enc.stats.keyframes,
                "keyframe_requests": enc.stats.keyframe_requests,
                "estimates": [t.estimate for t in enc.subscribers]}
    rates = []
    for s in bridge.room_sessions(ROOM):
        if s.role != "viewer":
            continue
        for sender in s.pc.getSenders():
            e = getattr(sender, "_RTCRtpSender__encoder", None)
            if e is not None and sender.track is not None:
                rates.append(e.target_bitrate)
    return {"bitrate": min(rates) if rates else None, "keyframes": None, "keyframe_requests": None,
            "estimates": None}


def _delta(a: dict, b: dict, key: str) -> float:
    return float((b["rtp"] or {}).get(key) or 0) - float((a["rtp"] or {}).get(key) or 0)


def summarise(samples: list[dict], warmup: float, link_kbit: int, side: str) -> dict[str, Any]:
    """Rates over the measured window (after ``warmup`` s) from cumulative browser counters,
    medians of the gauges; and when the bridge's (viewer) or browser's (publisher) encoder
    first went under the link rate."""
    t_start = samples[0]["t"]
    window = [s for s in samples if s["t"] - t_start >= warmup and s["rtp"]]
    if len(window) < 2:
        return {"error": "no media in the measured window"}
    a, b = window[0], window[-1]
    dt = b["t"] - a["t"]
    out: dict[str, Any] = {"seconds": round(dt, 1)}
    rtts = [s["pair"]["currentRoundTripTime"] for s in window if s["pair"] and s["pair"]["currentRoundTripTime"]]
    out["rtt_ms_median"] = round(1000 * statistics.median(rtts), 1) if rtts else None
    out["rtt_ms_max"] = round(1000 * max(rtts), 1) if rtts else None
    last = b["rtp"]
    out["resolution"] = f"{last.get('frameWidth')}x{last.get('frameHeight')}"
    if side == "viewer":
        lost, got = _delta(a, b, "packetsLost"), _delta(a, b, "packetsReceived")
        emitted = _delta(a, b, "jitterBufferEmittedCount")
        out |= {
            "fps": round(_delta(a, b, "framesDecoded") / dt, 2),
            "kbit_s": round(8 * _delta(a, b, "bytesReceived") / dt / 1000, 1),
            "freezes": int(_delta(a, b, "freezeCount")),
            "freeze_s": round(_delta(a, b, "totalFreezesDuration"), 2),
            "loss_pct": round(100 * lost / max(lost + got, 1), 2),
            "jitter_buffer_ms": round(1000 * _delta(a, b, "jitterBufferDelay") / emitted, 1) if emitted else None,
            "nacks": int(_delta(a, b, "nackCount")), "plis": int(_delta(a, b, "pliCount")),
            "keyframes_decoded": int(_delta(a, b, "keyFramesDecoded")),
        }
        rates = [s["bridge"]["bitrate"] for s in window if s["bridge"]["bitrate"]]
        ests = [min(e for e in s["bridge"]["estimates"] if e) for s in window
                if s["bridge"]["estimates"] and any(s["bridge"]["estimates"])]
        out["encoder_kbit_median"] = round(statistics.median(rates) / 1000, 1) if rates else None
        out["encoder_kbit_final"] = round(rates[-1] / 1000, 1) if rates else None
        out["remb_kbit_median"] = round(statistics.median(ests) / 1000, 1) if ests else None
        enc = [(s["t"] - t_start, s["bridge"]["bitrate"]) for s in samples if s["bridge"]["bitrate"]]
        shares = [s["bridge"]["publisher"]["enhanced_share"] for s in window if s["bridge"].get("publisher")]
        out["enhanced_share"] = round(statistics.median(shares), 3) if shares else None
    else:
        out |= {
            "fps_sent": round(_delta(a, b, "framesEncoded") / dt, 2),
            "kbit_s": round(8 * _delta(a, b, "bytesSent") / dt / 1000, 1),
            "nacks": int(_delta(a, b, "nackCount")), "plis": int(_delta(a, b, "pliCount")),
            "limited_by": last.get("qualityLimitationReason"),
            "browser_target_kbit_final": round(float(last.get("targetBitrate") or 0) / 1000, 1),
        }
        bridge = [s["bridge"] for s in window if s.get("bridge")]
        if bridge:
            out["bridge_fps_in"] = round(statistics.median(x["fps_in"] for x in bridge), 2)
            out["bridge_fps_out"] = round(statistics.median(x["fps_out"] for x in bridge), 2)
            out["enhanced_share"] = round(statistics.median(x["enhanced_share"] for x in bridge), 3)
        enc = [(s["t"] - t_start, s["rtp"].get("targetBitrate")) for s in samples if s["rtp"]]
    if link_kbit > 0:
        under = [t for t, r in enc if r and r / 1000 <= link_kbit]
        out["s_to_encoder_under_link"] = round(under[0], 1) if under else None
    start = [s for s in samples if s["t"] - t_start < warmup and s["rtp"]]
    if side == "viewer" and len(start) >= 2:  # the call's first seconds, before the estimate settles
        a, b = start[0], start[-1]
        out["startup"] = {"seconds": round(b["t"] - a["t"], 1),
                          "fps": round(_delta(a, b, "framesDecoded") / max(b["t"] - a["t"], 1e-6), 2),
                          "freeze_s": round(_delta(a, b, "totalFreezesDuration"), 2)}
    return out


async def _sample(page, which: str, seconds: float, extra: Callable[[], dict] | None) -> list[dict]:
    samples = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = await page.evaluate(PAGE_STATS, which)
        if extra is not None:
            s["bridge"] = extra()
        samples.append(s)
        await asyncio.sleep(1.0)
    return samples


async def viewer_call(shape: LinkShape, factory, frames, fps: float, warmup: float, seconds: float,
                      fanout: str = "shared", chromium: str = CHROMIUM) -> dict[str, Any]:
    """Chromium watches an aiortc publisher through ``shape`` (the downlink towards the browser)."""
    from playwright.async_api import async_playwright

    token = secrets.token_urlsafe(12)
    with ShapedLink(down=shape, up=LinkShape()) as link:
        cfg = BridgeConfig(host=link.host_ip, port=0, token=token, codec="vp8", fanout=fanout)
        async with serve_bridge(cfg, factory) as (base, bridge), http_client() as http, \
                async_playwright() as pw:
            pub = await publish(http, f"{base}/whip/{ROOM}", ClipTrack(frames, fps), token=token)
            browser = await pw.chromium.launch(executable_path=str(link.wrap(chromium)), headless=True,
                                               args=chromium_args())
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/?room={ROOM}#token={token}")
                await page.wait_for_function("window.likeness && window.likeness.config", timeout=10_000)
                await page.evaluate("watch()")
                samples = await _sample(page, "viewer", warmup + seconds,
                                        lambda: {**encoder_state(bridge), "publisher": _publisher_state(bridge)})
                shown = await page.evaluate("[...document.querySelectorAll('#others video')].map(v => v.videoWidth)")
            finally:
                await browser.close()
                await pub.leave(http, token)
    summary = summarise(samples, warmup, shape.rate_kbit, "viewer")
    first = next((s["t"] - samples[0]["t"] for s in samples if s["rtp"] and s["rtp"].get("framesDecoded")), None)
    summary["s_to_first_frame"] = round(first, 1) if first is not None else None  # from the WHEP offer
    summary["video_shown"] = any(w > 0 for w in shown)
    return {"link": shape.describe(), "summary": summary, "samples": samples}


def _publisher_state(bridge: Bridge) -> dict[str, Any]:
    pubs = bridge.publishers(ROOM)
    if not pubs:
        return {}
    t = pubs[0].track.stats()
    return {"fps_in": t["fps_in"], "fps_out": t["fps_out"], "enhanced_share": t.get("enhanced_share", 0.0),
            "faces": t.get("faces")}


async def publisher_call(shape: LinkShape, factory, camera_y4m: Path, warmup: float, seconds: float,
                         chromium: str = CHROMIUM) -> dict[str, Any]:
    """Chromium publishes its camera from the page through ``shape`` (the uplink from the browser)."""
    from playwright.async_api import async_playwright

    token = secrets.token_urlsafe(12)
    with ShapedLink(down=LinkShape(), up=shape) as link:
        cfg = BridgeConfig(host=link.host_ip, port=0, token=token, codec="vp8")
        async with serve_bridge(cfg, factory) as (base, bridge), async_playwright() as pw:
            # a page over plain http on a LAN address is not a secure context: no camera without this
            args = chromium_args(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                  f"--use-file-for-fake-video-capture={camera_y4m}",
                                  f"--unsafely-treat-insecure-origin-as-secure={base}"])
            browser = await pw.chromium.launch(executable_path=str(link.wrap(chromium)), headless=True, args=args)
            try:
                page = await browser.new_page()
                await page.goto(f"{base}/?room={ROOM}&autostart=1#token={token}")
                await page.wait_for_function("window.likeness && window.likeness.framesDecoded > 5",
                                             timeout=30_000)
                samples = await _sample(page, "publisher", warmup + seconds, lambda: _publisher_state(bridge))
            finally:
                await browser.close()
    return {"link": shape.describe(), "summary": summarise(samples, warmup, shape.rate_kbit, "publisher"),
            "samples": samples}


def _arrivals(bridge: Bridge, stop: asyncio.Event) -> tuple[list[float], asyncio.Task]:
    """Loop times at which the publisher's frames_in counter moved (polled every 20 ms)."""
    times: list[float] = []

    async def poll() -> None:
        last = 0
        while not stop.is_set():
            pubs = bridge.publishers(ROOM)
            n = pubs[0].track.c.frames_in if pubs else 0
            if n > last:
                times.append(time.monotonic())
                last = n
            await asyncio.sleep(0.02)

    return times, asyncio.get_running_loop().create_task(poll())


def stall_seconds(times: list[float], start: float, end: float, gap_s: float = 0.2) -> tuple[float, int]:
    """Total and count of stretches of the window [start, end] with no frame arriving for more
    than ``gap_s`` (6 frames at 30 fps), its edges included (a stream that stopped stalls to
    the end): the receiving side's view of a frozen picture. Pure."""
    points = [start, *[t for t in times if start <= t <= end], end]
    gaps = [b - a for a, b in zip(points, points[1:], strict=False) if b - a > gap_s]
    return round(sum(gaps), 2), len(gaps)


async def call_run(shape: LinkShape, clip: Path, warmup: float, seconds: float,
                   engine: str = "bicubic") -> dict[str, Any]:
    """``likeness call`` (aiortc) publishes a clip from inside the namespace through ``shape``
    (its uplink); the bridge (passthrough) measures what arrives: frames, loss, stalls."""
    token = secrets.token_urlsafe(12)
    with ShapedLink(up=shape) as link:
        cfg = BridgeConfig(host=link.host_ip, port=0, token=token, codec="vp8")
        async with serve_bridge(cfg, lambda identity: Passthrough()) as (base, bridge):
            # --opt=value: a token may start with "-", which argparse would take for an option
            cmd = ["ip", "netns", "exec", link.ns, sys.executable, "-m", "enhancer.cli", "call",
                   f"--whip={base}/whip/{ROOM}", f"--source={clip}", f"--token={token}",
                   f"--engine={engine}", f"--duration={warmup + seconds + 2}", "--stats-every=0"]
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            try:
                t_end = time.monotonic() + 30
                while not bridge.publishers(ROOM) and time.monotonic() < t_end:
                    await asyncio.sleep(0.1)
                if not bridge.publishers(ROOM):
                    proc.kill()
                    out, _ = await proc.communicate()
                    raise RuntimeError(f"likeness call never published within 30 s; bridge: {bridge.stats()}; "
                                       f"call said: {out.decode(errors='replace')[-1500:]}")
                session = bridge.publishers(ROOM)[0]
                stop = asyncio.Event()
                times, poller = _arrivals(bridge, stop)
                samples = []
                t0 = time.monotonic()
                closed_at = None
                while time.monotonic() - t0 < warmup + seconds:
                    if closed_at is None and session.id not in bridge.sessions:
                        closed_at = time.monotonic() - t0  # idle watch: no video for media_idle_s
                    if closed_at is not None:
                        samples.append({**samples[-1], "t": time.monotonic() - t0})
                        await asyncio.sleep(1.0)
                        continue
                    st = await session.pc.getStats()
                    rtp = next((s for s in st.values() if s.type == "inbound-rtp"), None)
                    samples.append({"t": time.monotonic() - t0, "frames_in": session.track.c.frames_in,
                                    "received": rtp.packetsReceived if rtp else 0,
                                    "lost": rtp.packetsLost if rtp else 0})
                    await asyncio.sleep(1.0)
                stop.set()
                await poller
            finally:
                out, _ = await proc.communicate()
    window = [s for s in samples if s["t"] >= warmup]
    a, b = window[0], window[-1]
    dt = b["t"] - a["t"]
    lost, got = b["lost"] - a["lost"], b["received"] - a["received"]
    stall_s, stalls = stall_seconds([t - t0 for t in times], a["t"], b["t"])
    # loss as the bridge's receiver counts it, while the publisher was still a session
    summary = {"seconds": round(dt, 1), "fps_in": round((b["frames_in"] - a["frames_in"]) / dt, 2),
               "loss_pct": round(100 * lost / max(lost + got, 1), 2), "stall_s": stall_s, "stalls": stalls,
               "closed_by_bridge": closed_at is not None and closed_at < warmup + seconds,
               "call_exit": proc.returncode, "call_tail": out.decode(errors="replace").strip().splitlines()[-1:]}
    return {"link": shape.describe(), "summary": summary, "samples": samples}


def table(runs: list[dict]) -> dict[str, dict[str, Any]]:
    """Per link: the median over repeats of every numeric summary figure (and the runs' count)."""
    by_link: dict[str, list[dict]] = {}
    for r in runs:
        by_link.setdefault(r["link"], []).append(r["summary"])
    out = {}
    for link, sums in by_link.items():
        keys = [k for k, v in sums[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
        row: dict[str, Any] = {"runs": len(sums)}
        for k in keys:
            vals = [s[k] for s in sums if isinstance(s.get(k), int | float)]
            row[k] = round(statistics.median(vals), 2) if vals else None
        out[link] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", choices=["viewer", "publisher", "call", "both"], default="both",
                    help="both = viewer and publisher")
    ap.add_argument("--engine", default="bicubic", help="likeness call's --engine (call scenario)")
    ap.add_argument("--rates", default="0,1000,500,300,200", help="link rates in kbit/s, 0 = unlimited")
    ap.add_argument("--queue-ms", type=float, default=200.0, help="the bottleneck's queue, in ms at its rate")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=8.0)
    ap.add_argument("--processor", choices=["passthrough", "bicubic", "auto"], default="passthrough",
                    help="what the bridge does to frames: nothing, the bicubic pipeline, or the trained engine")
    ap.add_argument("--fanout", choices=["shared", "per-viewer"], default="shared")
    ap.add_argument("--repeats", type=int, default=1, help="runs per condition (fresh bridge, link, browser)")
    ap.add_argument("--ablate", choices=["none", "budget"], default="none",
                    help="no retransmission budget (rtc.RETRANSMIT_SHARE = inf), to measure what it does "
                         "(this process's senders only: not likeness call's in --scenario call)")
    ap.add_argument("--start-kbit", type=int, default=None,
                    help="VP8 start bitrate without a cap (rtc.DEFAULT_BITRATES; shipped 300, aiortc's 500), "
                         "this process's senders only")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.start_kbit:
        rtc.DEFAULT_BITRATES["video/vp8"] = (1000 * args.start_kbit, rtc.DEFAULT_BITRATES["video/vp8"][1])
    if args.ablate == "budget":
        rtc.RETRANSMIT_SHARE = float("inf")
    why = unavailable() or (None if shutil.which(CHROMIUM) or Path(CHROMIUM).exists() else f"no {CHROMIUM}")
    if why:
        print(f"poor_link: cannot run: {why}")
        return 2
    frames, fps = load_clip(CLIP, 300, SIZE)
    if args.processor != "passthrough":
        warm_detectors()
        factory = make_factory(args.processor)
    else:
        def factory(identity):  # noqa: ANN001, ANN202
            return Passthrough()
    rates = [int(r) for r in args.rates.split(",") if r.strip()]
    results: dict[str, list] = {"viewer": [], "publisher": [], "call": []}
    with tempfile.TemporaryDirectory() as tmp:
        camera = write_y4m(frames, Path(tmp) / "camera.y4m", fps, size=SIZE)
        for scenario in (["viewer", "publisher"] if args.scenario == "both" else [args.scenario]):
            for rate in [r for r in rates for _ in range(args.repeats)]:
                shape = LinkShape(rate_kbit=rate, queue_ms=args.queue_ms)
                t0 = time.monotonic()
                if scenario == "viewer":
                    r = asyncio.run(viewer_call(shape, factory, frames, fps, args.warmup, args.seconds, args.fanout))
                elif scenario == "call":
                    r = asyncio.run(call_run(shape, CLIP, args.warmup, args.seconds, args.engine))
                else:
                    r = asyncio.run(publisher_call(shape, factory, camera, args.warmup, args.seconds))
                results[scenario].append(r)
                print(f"{scenario:9s} {shape.describe():32s} {json.dumps(r['summary'])} "
                      f"({time.monotonic() - t0:.0f} s)", flush=True)
    report = {
        "benchmark": "poor_link",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "table": {k: table(v) for k, v in results.items() if v},
        "results": results,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
