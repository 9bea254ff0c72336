"""Glass-to-glass latency and fps the browser extension adds over the raw camera, in real Chromium.

How it is measured: Chromium's fake camera plays a real clip (640x480) whose every frame
carries its index as a barcode in the bottom rows (``harness.tracks.stamp``). One page asks
for the camera twice: ``navigator.mediaDevices.getUserMedia`` (what every web meeting calls:
the extension's track) and ``MediaDevices.prototype.getUserMedia`` (the browser's own, which
the extension leaves alone: the raw camera). Both tracks come from the same capture in the
same renderer, so a frame's two copies start together. The page reads each frame of both
tracks (``MediaStreamTrackProcessor``), notes ``performance.now()`` and decodes the barcode;
added latency = arrival on the extension's track - arrival of the same frame on the raw track.
That is the delay a meeting app sees on its camera track: the trip to ``likeness serve`` and
back (encode, loopback, the bridge's decode + enhance + encode, decode) plus the extension's
own hop; what the meeting then does with the track costs the same either way.

Phases: enhanced (the bridge running), enhancement switched off in the popup (the extension's
own cost: the raw camera through its generator), and fallback (``likeness serve`` SIGKILLed
mid-call: the longest the page's track goes without a frame, then time back to enhanced once
it is restarted).

    python -m benchmarks.extension_latency [--seconds 20] [--engine bicubic --engine auto] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.clips import load_clip, videos_dir, write_y4m
from benchmarks.harness.extension import (
    chromium_path,
    chromium_with_extension,
    extension_sessions,
    free_port,
    pair_in_popup,
    popup_row,
    serve_page,
    start_serve,
    wait_popup,
)
from benchmarks.harness.tracks import stamp

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"
CODE = "BNCH-MARK-2345"
OUT = Path(__file__).parent / "results" / "2026-12-06" / "extension-latency.json"

PAGE = """<!doctype html><html><body><script>
window.bench = {ext: [], raw: [], error: null, ready: false};
function watch(track, out) {
  // each frame: arrival time, then its barcode (12 blocks in the bottom 16 rows, see harness/tracks.py)
  const canvas = new OffscreenCanvas(640, 480);
  const g = canvas.getContext('2d', {willReadFrequently: true});
  const reader = new MediaStreamTrackProcessor({track}).readable.getReader();
  (async () => { for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    const t = performance.now();
    const w = value.displayWidth, h = value.displayHeight;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    g.drawImage(value, 0, 0);
    value.close();
    const d = g.getImageData(0, h - 12, w, 8).data, bw = Math.floor(w / 12);
    let s = 0;
    for (let b = 0; b < 12; b++) {
      let sum = 0, n = 0;
      for (let y = 0; y < 8; y++) for (let x = b * bw + (bw >> 2); x < (b + 1) * bw - (bw >> 2); x += 3) {
        const i = (y * w + x) * 4; sum += d[i] + d[i + 1] + d[i + 2]; n += 3;
      }
      if (sum / n > 128) s |= 1 << b;
    }
    out.push([s, t]);
  } })();
}
(async () => {
  try {
    const c = {video: {width: 640, height: 480}, audio: false};
    const ext = await navigator.mediaDevices.getUserMedia(c);
    const raw = await MediaDevices.prototype.getUserMedia.call(navigator.mediaDevices, c);
    watch(ext.getVideoTracks()[0], bench.ext);
    watch(raw.getVideoTracks()[0], bench.raw);
    bench.ready = true;
  } catch (e) { bench.error = String(e); }
})();
</script></body></html>"""


def bridge_track(port: int) -> dict[str, Any]:
    """What the bridge says of the extension's session: it did enhance these frames."""
    t = extension_sessions(port)[0]["track"]
    return {k: t[k] for k in ("fps_in", "fps_out", "enhanced_share", "faces", "passthrough_late", "stage_ms")}


def added_latency(ext: list[list[float]], raw: list[list[float]]) -> list[float]:
    """Per frame of the extension's track: its arrival minus the same frame's arrival on the raw track."""
    by_stamp: dict[int, list[float]] = {}
    for s, t in raw:
        by_stamp.setdefault(int(s), []).append(t)
    out = []
    for s, t in ext:
        cands = [t - tr for tr in by_stamp.get(int(s), []) if -100 <= t - tr <= 2000]
        if cands:
            out.append(min(cands, key=abs))
    return out


def summary(ext: list[list[float]], raw: list[list[float]], seconds: float) -> dict[str, Any]:
    lat = added_latency(ext, raw)
    times = [t for _, t in ext]
    gaps = np.diff(times) if len(times) > 1 else np.array([0.0])
    return {"frames": len(ext), "matched": len(lat), "fps": round(len(ext) / seconds, 1),
            "raw_fps": round(len(raw) / seconds, 1),
            "added_ms": {q: round(float(np.percentile(lat, p)), 1) for q, p in (("p50", 50), ("p95", 95))}
            if lat else None, "max_gap_ms": round(float(gaps.max()), 1)}


async def measure(page: Any, seconds: float) -> dict[str, Any]:
    await page.evaluate("bench.ext.length = 0; bench.raw.length = 0")
    await asyncio.sleep(seconds)
    data = await page.evaluate("({ext: bench.ext.slice(), raw: bench.raw.slice()})")
    return summary(data["ext"], data["raw"], seconds)


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from playwright.async_api import async_playwright

    frames, fps = load_clip(CLIP, 150, (640, 480))
    y4m = write_y4m([stamp(f, i) for i, f in enumerate(frames)], tmp / "camera.y4m", fps)
    port = free_port()

    def serve() -> subprocess.Popen[str]:
        return start_serve(port, tmp / "home", args.engine, CODE)[0]

    async def wait_state(popup: Any, prefix: str, timeout_s: float) -> float:
        return round(await wait_popup(popup, prefix, timeout_s, poll_s=0.1), 2)

    proc = serve()
    result: dict[str, Any] = {}
    try:
        async with serve_page(PAGE) as url, async_playwright() as pw, \
                chromium_with_extension(pw, tmp, y4m) as (ctx, ext_id):
            popup = await pair_in_popup(ctx, ext_id, f"http://127.0.0.1:{port}", CODE, None)
            page = await ctx.new_page()
            await page.goto(url)
            await page.wait_for_function("bench.ready || bench.error", timeout=20_000)
            result["time_to_enhanced_s"] = await wait_state(popup, "connected", 60)
            await asyncio.sleep(3.0)  # first keyframes, bitrate ramp
            result["enhanced"] = await measure(page, args.seconds)
            result["enhanced"]["popup_estimate"] = await popup_row(popup, "added")
            result["enhanced"]["bridge"] = await asyncio.to_thread(bridge_track, port)
            await popup.uncheck("#enabled")  # the person's switch: raw camera through the extension
            result["switch_off_s"] = await wait_state(popup, "raw", 10)
            await asyncio.sleep(1.0)
            result["switched_off"] = await measure(page, args.seconds / 2)
            await popup.check("#enabled")
            await wait_state(popup, "connected", 30)
            await asyncio.sleep(2.0)
            await page.evaluate("bench.ext.length = 0; bench.raw.length = 0")
            t_kill = await page.evaluate("performance.now()")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            await asyncio.sleep(3.0)
            data = await page.evaluate("bench.ext.map((e) => e[1])")
            after = [t for t in data if t >= t_kill]
            gaps = np.diff([t_kill, *after])
            result["fallback"] = {"max_gap_after_kill_ms": round(float(gaps.max()), 1),
                                  "frames_in_3s_after_kill": len(after)}
            proc = serve()
            result["fallback"]["back_to_enhanced_after_restart_s"] = await wait_state(popup, "connected", 60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the enhanced measurement")
    ap.add_argument("--engine", action="append", default=None,
                    help="`likeness serve --engine`, repeatable (default: bicubic, no model needed; 'auto': the "
                    "trained student)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not CLIP.is_file():
        raise SystemExit(f"extension_latency: clip {CLIP} not found (set LIKENESS_DATA)")
    chromium = chromium_path()
    if chromium is None:
        raise SystemExit("extension_latency: chromium missing (apt-get install -y chromium)")
    load_before = os.getloadavg()
    runs = []
    for engine in args.engine or ["bicubic"]:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                measured = asyncio.run(run(argparse.Namespace(**{**vars(args), "engine": engine}), Path(tmp)))
            except (TimeoutError, RuntimeError) as e:
                raise SystemExit(f"extension_latency: {e}") from None
            runs.append({"engine": engine, **measured})
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    from benchmarks.bench.machine import cpu_facts

    out = {
        "benchmark": "extension_latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_facts()["model"], "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "chromium": version,
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"clip": CLIP.name, "size": [640, 480], "codec": "vp8",
                  "seconds": args.seconds,
                  "method": "fake camera frames stamped with their index; added = arrival on the extension's "
                            "getUserMedia track - arrival of the same frame on the browser's own getUserMedia "
                            "track, both read in one page with MediaStreamTrackProcessor"},
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
