"""See the other person clearly on a poor link: receiver-side restoration and the bandwidth it saves.

A low bitrate is imposed by the network after the sender's encoder, so only the receiver can
undo it. Here a real talking-head clip (640x480 letterbox, frame-stamped:
``benchmarks/harness/tracks.py``) is published over aiortc VP8 from a network namespace
through a tbf-shaped uplink (``benchmarks/harness/netlab.py``, as ``benchmarks/poor_link.py``
uses it) at each ``--rates`` kbit/s, the publisher's encoder capped at the link rate
(``bridge.rate_control.control_sender_rate``, as the bridge caps its senders); an aiortc
receiver (a minimal WHIP endpoint in this process, no bridge) with the jitter buffer the bridge and
``likeness view`` receive with (``bridge.jitter``: a frame decoded on its last packet, a hole given
up after 0.5 s with a keyframe asked for) keeps the decoded frames after a warm-up and reads each
one's stamp, so it knows which source frame it holds.

After each call, at the receiver, the received frames go through the product pipeline
(``build_pipeline(engine=--engine)``) twice: with the sender's identity (``restored``: enrolled
from frames of another clip of the same person, else from a part of the clip that is not
published) and without (``generic``). Per frame, in the aligned 128 crop of the *source* frame's
landmarks (the same crop for every method): feather-weighted face PSNR against the source
(``benchmarks/studies/detail_reuse.py``'s ``masked_psnr``) and the dlib descriptor distance to the
source crop's (dlib is only the judge, as in ``likeness eval``).

Bandwidth saving at B: the bitrate at which the raw stream reaches the restored stream's face
PSNR at B (log-linear interpolation of the raw curve between measured rates), over B; null with
a reason when that is outside the measured rates.

Needs root and iproute2 (network namespaces); says why in one line and exits 2 otherwise.

    python -m benchmarks.receiver --clip FILE --json OUT [--quick] [--rates 150,250,500,1000]
        [--frames 150] [--warmup 5] [--queue-ms 200] [--engine auto] [--enrol CLIP] [--judge-crop 128]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "2026-12-06"
CROP = 128
METHODS = ("raw", "generic", "restored", "restored_no_transfer", "restored_view")


# --- the bandwidth maths (pure) -------------------------------------------------------------

def equivalent_bitrate(bitrates: Sequence[float], psnrs: Sequence[float], target: float) -> float | None:
    """The bitrate at which the curve (``psnrs`` measured at ``bitrates``) reaches ``target``,
    interpolating PSNR linearly in log(bitrate) between neighbouring measured rates; the first
    crossing from the lowest rate up. None when ``target`` is outside the curve's measured range."""
    pts = sorted(zip(bitrates, psnrs, strict=True))
    for b, p in pts:
        if p == target:
            return float(b)
    for (b0, p0), (b1, p1) in zip(pts, pts[1:], strict=False):
        if min(p0, p1) <= target <= max(p0, p1):
            f = (target - p0) / (p1 - p0)
            return math.exp(math.log(b0) + f * (math.log(b1) - math.log(b0)))
    return None


def bandwidth_saving(bitrates: Sequence[float], raw_psnr: Sequence[float], restored_psnr: float,
                     at: float) -> float | None:
    """How many times the bitrate ``at`` the raw stream needs to match ``restored_psnr`` (the
    restored stream's face PSNR at ``at``); None when the raw curve never reaches it within the
    measured rates (or is above it at every one)."""
    b = equivalent_bitrate(bitrates, raw_psnr, restored_psnr)
    return None if b is None else b / at


def saving_entry(bitrates: Sequence[float], raw_psnr: Sequence[float], restored_psnr: float,
                 at: float) -> dict[str, Any]:
    """``bandwidth_saving`` with the raw bitrate it implies, or, out of range, why not."""
    b = equivalent_bitrate(bitrates, raw_psnr, restored_psnr)
    if b is not None:
        return {"saving": round(b / at, 3), "raw_kbps_equivalent": round(b, 1), "reason": None}
    lo, hi = min(bitrates), max(bitrates)
    if restored_psnr > max(raw_psnr):
        why = (f"restored at {at:g} kbit/s ({restored_psnr:.2f} dB) beats raw at every measured rate, "
               f"up to {hi:g} kbit/s ({max(raw_psnr):.2f} dB): saving > {hi / at:.2f}x, not measured")
    else:
        why = (f"restored at {at:g} kbit/s ({restored_psnr:.2f} dB) is below raw at every measured rate, "
               f"down to {lo:g} kbit/s ({min(raw_psnr):.2f} dB): saving < {lo / at:.2f}x")
    return {"saving": None, "raw_kbps_equivalent": None, "reason": why}


# --- the call: a stamped clip through the shaped link to a plain receiver -------------------

async def publish_clip(url: str, clip: Path, n_frames: int, rate_kbit: int, seconds: float,
                       warmup: float) -> dict[str, Any]:
    """(Inside the namespace.) Publish the first ``n_frames`` of ``clip`` in a loop, stamped, for
    ``seconds`` with the VP8 encoder capped at ``rate_kbit``; the send rate after ``warmup`` s."""
    from benchmarks.bench_bridge import SIZE
    from benchmarks.harness.calls import http_client, publish
    from benchmarks.harness.clips import load_clip
    from benchmarks.harness.tracks import ClipTrack
    from bridge.rate_control import ENCODER_ATTR

    frames, fps = load_clip(clip, n_frames, SIZE)
    track = ClipTrack(frames, fps)
    async with http_client() as http:
        pub = await publish(http, url, track, codec="vp8", bitrate=1000 * rate_kbit)
        keyframes = count_keyframes(pub.pc.getSenders()[0])

        async def sent() -> tuple[float, int]:
            st = await pub.pc.getStats()
            return time.monotonic(), sum(s.bytesSent for s in st.values() if s.type == "outbound-rtp")

        await asyncio.sleep(warmup)
        t0, b0 = await sent()
        keyframes.clear()
        await asyncio.sleep(max(seconds - warmup, 1.0))
        t1, b1 = await sent()
        enc = getattr(pub.pc.getSenders()[0], ENCODER_ATTR, None)
        target = getattr(enc, "target_bitrate", None)
        await pub.leave(http)
    return {"frames_sent": track.sent, "kbit_s_sent": round(8 * (b1 - b0) / (t1 - t0) / 1000, 1),
            "encoder_target_kbit_final": round(target / 1000, 1) if target else None,
            "keyframes_after_warmup": len(keyframes), "keyframe_bytes": keyframes[:20]}


def count_keyframes(sender: Any) -> list[int]:
    """The sizes (bytes) of the VP8 keyframes ``sender`` sends from now on, in a list that grows.
    Why: a keyframe is many frames' worth of bytes at once; on a slow link it overfills the queue."""
    from aiortc.codecs.vpx import vp8_depayload

    from bridge.jitter import is_keyframe

    sizes: list[int] = []
    original = sender._next_encoded_frame

    async def next_encoded_frame(codec: Any) -> Any:
        enc = await original(codec)
        if enc is not None and enc.payloads and is_keyframe(vp8_depayload(enc.payloads[0])):
            sizes.append(sum(len(p) for p in enc.payloads))
        return enc

    sender._next_encoded_frame = next_encoded_frame
    return sizes


@asynccontextmanager
async def whip_receiver(host: str, keep_from: int, keep: int) -> AsyncIterator[tuple[str, list, list]]:
    """A minimal WHIP endpoint on ``host``: each publisher's video goes to a ``FrameSink`` that
    keeps ``keep`` decoded images from the ``keep_from``-th frame on. Yields (URL, sinks, pcs)."""
    from aiohttp import web
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from benchmarks.harness.tracks import FrameSink
    from bridge.ice import rtc_configuration
    from bridge.jitter import release_frames_on_marker

    sinks: list[FrameSink] = []
    pcs: list[RTCPeerConnection] = []

    async def offer(request: web.Request) -> web.Response:
        pc = RTCPeerConnection(rtc_configuration())
        pcs.append(pc)
        pc.on("track", lambda track: sinks.append(FrameSink(track, keep_every=1, max_kept=keep,
                                                            keep_from=keep_from).start()))
        await pc.setRemoteDescription(RTCSessionDescription(sdp=await request.text(), type="offer"))
        for t in pc.getTransceivers():  # before any packet: the product's receivers (bridge, view) run this buffer
            release_frames_on_marker(t.receiver)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/whip/{len(pcs) - 1}"})

    async def leave(request: web.Request) -> web.Response:
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/whip", offer)
    app.router.add_delete("/whip/{n}", leave)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://{host}:{port}/whip", sinks, pcs
    finally:
        for s in sinks:
            await s.stop()
        for pc in pcs:
            await pc.close()
        await runner.cleanup()


async def shaped_call(clip: Path, n_frames: int, fps: float, rate_kbit: int, queue_ms: float, warmup: float,
                      keep: int) -> dict[str, Any]:
    """One call through a fresh link shaped to ``rate_kbit`` up from the namespace: the kept
    received frames (stamp index, image) and the link's figures."""
    from benchmarks.harness.netlab import LinkShape, ShapedLink
    from bridge.jitter import RECEIVER_ATTR

    keep_from = round(warmup * fps)
    seconds = warmup + keep / fps + 8.0  # margin: connection set-up, a receiver slowed by a busy machine
    shape = LinkShape(rate_kbit=rate_kbit, queue_ms=queue_ms)
    with ShapedLink(up=shape) as link:
        async with whip_receiver(link.host_ip, keep_from, keep) as (url, sinks, pcs):
            cmd = ["ip", "netns", "exec", link.ns, sys.executable, "-m", "benchmarks.receiver",
                   f"--publish={url}", f"--clip={clip}", f"--clip-frames={n_frames}", f"--rate={rate_kbit}",
                   f"--seconds={seconds}", f"--warmup={warmup}"]
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                        stderr=asyncio.subprocess.STDOUT)
            # the link's counters once the warm-up is over (the publisher's clock starts about when it does)
            counters: list[tuple[int, int]] = []
            at_warmup = asyncio.get_running_loop().call_later(warmup, lambda: counters.append(link.up_counters()))
            out, _ = await asyncio.wait_for(proc.communicate(), timeout=seconds + 60)
            at_warmup.cancel()
            end = link.up_counters()
            start = counters[0] if counters else (0, 0)
            text = out.decode(errors="replace").strip()
            lines = text.splitlines()
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"publisher failed ({proc.returncode}): {text[-1500:]}")
            sent = json.loads(lines[-1])
            stats = {}
            if pcs:
                st = await pcs[0].getStats()
                rtp = next((s for s in st.values() if s.type == "inbound-rtp"), None)
                if rtp is not None:
                    stats = {"packets_received": rtp.packetsReceived, "packets_lost": rtp.packetsLost}
                buffers = [getattr(t.receiver, RECEIVER_ATTR, None) for t in pcs[0].getTransceivers()]
                for key in ("holes_skipped", "frames_withheld", "waits_expired"):
                    stats[key] = sum(getattr(b, key, 0) for b in buffers)
            frames = sinks[0].frames if sinks else []
            kept = [(r.index, r.image) for r in frames if r.image is not None]
            got = [r.at for r in frames[keep_from:]]
            fps_in = (len(got) - 1) / (got[-1] - got[0]) if len(got) > 1 and got[-1] > got[0] else 0.0
    return {"link": {"shape": shape.describe(), "packets_after_warmup": end[0] - start[0],
                     "dropped_after_warmup": end[1] - start[1]},
            "publisher": sent, "receiver": {**stats, "frames": len(frames), "fps_in_measured": round(fps_in, 2)},
            "kept": kept}


# --- measuring at the receiver --------------------------------------------------------------

def usable(kept: list[tuple[int, np.ndarray]], sent: int) -> tuple[list[tuple[int, np.ndarray]], int]:
    """Frames whose stamp is a frame that was sent and later than the previous one (a stamp that
    a bad frame garbled would compare the wrong source frame); and how many were rejected."""
    out: list[tuple[int, np.ndarray]] = []
    for idx, img in kept:
        if idx < sent and (not out or idx > out[-1][0]):
            out.append((idx, img))
    return out, len(kept) - len(out)


class Judge:
    """The source side of the comparison: per source frame (cached), its aligned crop from its
    own landmarks and the crop's dlib descriptor; scores other images in the same crop."""

    def __init__(self, frames: list[np.ndarray], crop: int = CROP) -> None:
        from enhancer.align import feather_mask

        self.frames = frames
        self.crop = crop
        w = feather_mask(crop)
        self.weight = w[..., 0] if w.ndim == 3 else w
        self._src: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}

    def source(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(alignment matrix, crop, descriptor) of stamped source frame ``index``; None: no face."""
        from benchmarks.harness.tracks import stamp
        from enhancer.align import alignment_matrix, warp_crops
        from enhancer.detect import detect_faces
        from enhancer.evaluate import _descriptor

        key = index % len(self.frames)
        if key not in self._src:
            img = stamp(self.frames[key], index)
            faces = detect_faces(img)
            if not faces:
                self._src[key] = None
            else:
                m = alignment_matrix(faces[0].landmarks, self.crop)
                crop = warp_crops(img, m[None], self.crop)[0]
                self._src[key] = (m, crop, _descriptor(crop))
        return self._src[key]

    def score(self, index: int, img: np.ndarray) -> tuple[float, float] | None:
        """(face PSNR dB, identity distance) of ``img`` shown as source frame ``index``."""
        from benchmarks.studies.detail_reuse import masked_psnr
        from enhancer.align import warp_crops
        from enhancer.evaluate import _descriptor

        src = self.source(index)
        if src is None:
            return None
        m, crop, desc = src
        out = warp_crops(img, m[None], self.crop)[0]
        return masked_psnr(out, crop, self.weight), float(np.linalg.norm(_descriptor(out) - desc))


def evaluate(judge: Judge, frames: list[tuple[int, np.ndarray]], fps: float, engine: str, identity: str,
             home: str) -> dict[str, Any]:
    """Raw, generic and restored scores of the received ``frames`` (index, image); to see what the
    enrolled person's reference detail does, restored without it (``transfer=None``); and restored
    with the strength ``likeness view`` gives a shared identity (``restored_view``: faded on a face
    as sharp as the person's references)."""
    from enhancer.commands.assemble import build_pipeline, view_strength
    from enhancer.detail_transfer import DEFAULT_TRANSFER
    from enhancer.identity_store import IdentityStore
    from enhancer.strength import DEFAULT_STRENGTH

    shown: dict[str, list[np.ndarray]] = {"raw": [img for _, img in frames]}
    enhanced: dict[str, float] = {}
    name = engine
    viewed = view_strength(IdentityStore(home).read(identity), DEFAULT_STRENGTH)
    runs = (("generic", None, DEFAULT_TRANSFER, DEFAULT_STRENGTH),
            ("restored", identity, DEFAULT_TRANSFER, DEFAULT_STRENGTH),
            ("restored_no_transfer", identity, None, DEFAULT_STRENGTH),
            ("restored_view", identity, DEFAULT_TRANSFER, viewed))
    for method, ident, transfer, strength in runs:
        pipe = build_pipeline(identity=ident, home=home, engine=engine, transfer=transfer, strength=strength)
        res = [pipe.process(img, idx / fps) for idx, img in frames]
        pipe.close()
        name = pipe.engine.name
        shown[method] = [r.frame for r in res]
        enhanced[method] = round(float(np.mean([r.enhanced for r in res])), 3) if res else 0.0
    out = {}
    for method, imgs in shown.items():
        scores = [s for (idx, _), img in zip(frames, imgs, strict=True) if (s := judge.score(idx, img))]
        out[method] = {"psnr": round(float(np.mean([s[0] for s in scores])), 3) if scores else None,
                       "id_distance": round(float(np.mean([s[1] for s in scores])), 4) if scores else None,
                       "frames": len(scores), "enhanced_share": enhanced.get(method)}
    out["engine"] = name
    return out


# --- enrolment: the sender's identity from frames not measured ------------------------------

def enrolment_frames(clip: Path, published: int, override: Path | None = None) -> tuple[list[np.ndarray], str]:
    """Frames to enrol the clip's person from, and where they come from: ``override``; else
    another clip of the same person in the manifest (the neutral one if there is one); else the
    part of ``clip`` after its ``published`` first frames."""
    from benchmarks.harness.clips import load_clip

    other = override
    if other is None and (clip.parent / "manifest.csv").is_file():
        with open(clip.parent / "manifest.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        person = next((r["identity"] for r in rows if r["path"] == clip.name), None)
        same = [clip.parent / r["path"] for r in rows if r["identity"] == person and r["path"] != clip.name
                and (clip.parent / r["path"]).is_file()]
        other = next((p for p in same if "neutral" in p.name), same[0] if same else None)
    if other is not None:
        frames, _ = load_clip(other, 240)
        return frames[:: max(1, len(frames) // 12)], other.name
    frames, _ = load_clip(clip, 3000)
    rest = frames[published:]
    if len(rest) < 30:
        raise ValueError(f"{clip.name}: {len(frames)} frames, too few after the {published} published to enrol "
                         "from a part not measured; pass --enrol with another clip of the person")
    return rest[:: max(1, len(rest) // 12)], f"{clip.name} frames {published}-{len(frames) - 1}"


# --- report ---------------------------------------------------------------------------------

def plot(report: dict[str, Any], path: Path) -> Path:
    """Face PSNR and identity distance vs link rate (log scale): raw, generic, restored."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    rates = report["bitrates_kbps"]
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_p, ax_d = fig.subplots(1, 2)
    for method, style in zip(METHODS, ("o-", "s--", "^-", "v:", "d-."), strict=True):
        ax_p.plot(rates, report[method]["psnr"], style, label=method)
        ax_d.plot(rates, report[method]["id_distance"], style, label=method)
    for ax, label in ((ax_p, "face PSNR vs source (dB)"), (ax_d, "dlib identity distance to source")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(rates, [str(r) for r in rates])
        ax.set_xlabel("link rate (kbit/s), VP8 capped at it")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Receiver-side restoration: {report['config']['clip']}", fontsize=10)
    fig.savefig(path, dpi=110)
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_bridge import SIZE
    from benchmarks.harness.clips import load_clip
    from enhancer.enroll import enroll_from_images

    t_start = time.perf_counter()
    keep = args.frames
    _, fps = load_clip(args.clip, 1)
    # enough clip for the warm-up and the measured frames without looping, where the clip has it
    published = round(args.warmup * fps) + keep + round(3 * fps)
    frames, fps = load_clip(args.clip, published, SIZE)
    judge = Judge(frames, args.judge_crop)
    enrol, enrol_source = enrolment_frames(args.clip, len(frames), args.enrol)
    by_rate: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as home:
        enrolled = enroll_from_images("sender", enrol, home=home)
        for rate in args.rates:
            t0 = time.monotonic()
            call = asyncio.run(shaped_call(args.clip, len(frames), fps, rate, args.queue_ms, args.warmup, keep))
            t_call = time.monotonic() - t0
            got, rejected = usable(call.pop("kept"), call["publisher"]["frames_sent"])
            shapes = sorted({f"{img.shape[1]}x{img.shape[0]}" for _, img in got})
            got = [(i, img if img.shape[:2] == frames[0].shape[:2] else _resize(img, frames[0])) for i, img in got]
            scores = evaluate(judge, got, fps, args.engine, "sender", home)
            by_rate.append({"kbps": rate, **call, "frames_measured": len(got), "stamps_rejected": rejected,
                            "received_resolution": shapes, "call_wall_s": round(t_call, 1),
                            "eval_wall_s": round(time.monotonic() - t0 - t_call, 1), **scores})
            print(f"{rate:5d} kbit/s  sent {call['publisher']['kbit_s_sent']} kbit/s  {len(got)} frames  " + "  ".join(
                f"{m} {scores[m]['psnr']} dB / {scores[m]['id_distance']}" for m in METHODS)
                + f"  ({time.monotonic() - t0:.0f} s)", flush=True)
    rates = [r["kbps"] for r in by_rate]
    report: dict[str, Any] = {"benchmark": "receiver", "when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "bitrates_kbps": rates}
    for method in METHODS:
        report[method] = {k: [r[method][k] for r in by_rate] for k in ("psnr", "id_distance", "frames",
                                                                      "enhanced_share")}
    saving: dict[str, float | None] = {}
    detail: dict[str, Any] = {}
    measured = [(r["kbps"], r["raw"]["psnr"]) for r in by_rate if r["raw"]["psnr"] is not None]
    for at in (150, 250):
        row = next((r for r in by_rate if r["kbps"] == at and r["raw"]["psnr"] is not None), None)
        if row is None or len(measured) < 2:
            saving[f"at_{at}"] = None
            detail[f"at_{at}"] = {"reason": f"{at} kbit/s not measured (no frames received after the warm-up)"}
            continue
        entries = {m: saving_entry([b for b, _ in measured], [p for _, p in measured], row[m]["psnr"], at)
                   for m in ("restored", "generic")}
        saving[f"at_{at}"] = entries["restored"]["saving"]
        detail[f"at_{at}"] = entries
    report["bandwidth_saving"] = saving
    report["bandwidth_saving_detail"] = detail
    report["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                         "python": platform.python_version(), "threads": os.environ.get("OMP_NUM_THREADS")}
    report["config"] = {"clip": args.clip.name, "enrolled_from": enrol_source, "enrolled_refs": enrolled.get("n_refs"),
                        "frames_per_rate": keep, "warmup_s": args.warmup, "queue_ms": args.queue_ms,
                        "engine": args.engine, "engine_used": by_rate[0]["engine"] if by_rate else None,
                        "size": list(SIZE), "clip_fps": fps, "clip_frames_published": len(frames),
                        "codec": "vp8 (aiortc), encoder capped at the link rate", "quick": args.quick,
                        "crop": args.judge_crop}
    report["definition"] = {
        "psnr": f"mean over frames of the feather-weighted PSNR of the aligned {args.judge_crop} crop (source frame's "
                "landmarks) vs the stamped source frame",
        "id_distance": "mean dlib descriptor distance between that crop and the source's",
        "bandwidth_saving": "raw bitrate reaching the restored PSNR at B (log-linear in the raw curve) / B",
        "generic / restored": "product pipeline at the receiver without / with the sender's enrolled identity",
        "restored_no_transfer": "restored without the enrolled person's reference detail (transfer=None)",
        "restored_view": "restored with likeness view's strength for a shared identity (view_strength: faded on a "
                         "face as sharp as the person's own references)"}
    report["per_rate"] = by_rate
    report["wall_s"] = round(time.perf_counter() - t_start, 1)
    return report


def _resize(img: np.ndarray, like: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(img, (like.shape[1], like.shape[0]), interpolation=cv2.INTER_LINEAR)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", type=Path, required=True, help="a talking-head clip (from ../shared/data/videos)")
    ap.add_argument("--json", type=Path, default=None, help="result file (default: benchmarks/results/2026-12-06/"
                    "receiver-CLIP.json); the plot goes next to it (.png)")
    ap.add_argument("--quick", action="store_true", help="a check: 30 frames per rate, 3 s warm-up")
    ap.add_argument("--rates", default="150,250,500,1000", help="link rates in kbit/s")
    ap.add_argument("--frames", type=int, default=150, help="received frames measured per rate")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of each call not measured")
    ap.add_argument("--queue-ms", type=float, default=200.0, help="the bottleneck's queue, in ms at its rate")
    ap.add_argument("--engine", default="auto")
    ap.add_argument("--enrol", type=Path, default=None, help="a clip of the same person to enrol from")
    ap.add_argument("--judge-crop", type=int, default=CROP,
                    help="side of the aligned crop faces are judged in (128: the generator's; larger: nearer the "
                         "face's own size in the frame, where a halved picture's lost detail shows)")
    # internal: the publisher, run inside the namespace by shaped_call
    ap.add_argument("--publish", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--clip-frames", type=int, default=300, help=argparse.SUPPRESS)
    ap.add_argument("--rate", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.publish:
        print(json.dumps(asyncio.run(publish_clip(args.publish, args.clip, args.clip_frames, args.rate,
                                                  args.seconds, args.warmup))), flush=True)
        return 0
    from benchmarks.harness.netlab import unavailable

    why = unavailable()
    if why:
        print(f"receiver: cannot run: {why}")
        return 2
    if args.quick:
        args.frames, args.warmup = 30, 3.0
    args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    out = args.json or RESULTS / f"receiver-{args.clip.stem}.json"
    try:
        report = run(args)
    except ValueError as e:  # a clip too short to enrol from, unreadable, or without a face
        print(f"receiver: {e}")
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    png = plot(report, out.with_suffix(".png"))
    print(f"bandwidth saving {json.dumps(report['bandwidth_saving'])}")
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
