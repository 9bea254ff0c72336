"""What limits the receiver's saving (issue 27), offline: a clip through aiortc's own VP8 encoder
and decoder at a bitrate, sent at full or reduced size, and the generator's change at several
blend weights on the received faces.

No network and no root: every frame of the clip (letterboxed to 640x480) is encoded in order by
``aiortc.codecs.vpx.Vp8Encoder`` at ``--rates`` kbit/s (aiortc's 250 kbit/s floor lowered, as
``bridge.rate_control`` lowers it for the bridge's senders), after downscaling by each ``--scales``;
decoded, upscaled back (bicubic) and, from frame 60 on, every ``--every``-th frame is judged in the
aligned 128 crop of the *source* frame's landmarks (``benchmarks.receiver.Judge``: feather-weighted
PSNR). On those crops the generator (generic mode, ONNX Runtime) runs once and its change is kept at
each ``--weights`` (0: the received face as it is), beside the weight the adaptive strength picks.

    python -m benchmarks.studies.vp8_offline --clip FILE [--rates 150,250,500] [--scales 1,0.5]
        [--weights 0,0.25,0.5,0.75,1] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from benchmarks.harness.clips import load_clip
from benchmarks.receiver import CROP, Judge
from benchmarks.studies.detail_reuse import RESULTS, masked_psnr, write_result

SIZE = (640, 480)
SKIP = 60  # frames before the encoder has settled (the first key frame and its rate control)


def vp8_encoded(frames: list[np.ndarray], fps: float, kbps: int,
                scale: float = 1.0) -> Iterator[tuple[list[bytes], int]]:
    """Each frame through the encoder the bridge gives its senders (aiortc's VP8, capped at and
    started from ``kbps``, its floor lowered: ``bridge.rate_control``), sent at ``scale`` of its size:
    (RTP payloads, timestamp) per frame, in order."""
    from av import VideoFrame

    from bridge.rate_control import rate_controlled_encoder

    enc = rate_controlled_encoder("video/vp8", kbps * 1000)
    h, w = frames[0].shape[:2]
    sw, sh = round(w * scale) // 2 * 2, round(h * scale) // 2 * 2
    for i, img in enumerate(frames):
        small = img if scale == 1 else cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        vf = VideoFrame.from_ndarray(small, format="bgr24")
        vf.pts, vf.time_base = int(i * 90000 / fps), Fraction(1, 90000)
        yield enc.encode(vf)


def through_vp8(frames: list[np.ndarray], fps: float, kbps: int, scale: float) -> tuple[list[np.ndarray], float]:
    """Frames after aiortc's VP8 at ``kbps`` (sent at ``scale`` of their size, shown at full size) and
    the bitrate the encoder really produced, kbit/s."""
    import aiortc.codecs.vpx as vpx
    from aiortc.jitterbuffer import JitterFrame

    dec = vpx.Vp8Decoder()
    h, w = frames[0].shape[:2]
    out, sent = [], 0
    for payloads, ts in vp8_encoded(frames, fps, kbps, scale):
        sent += sum(len(p) for p in payloads)
        data = b"".join(vpx.vp8_depayload(p) for p in payloads)
        for f in dec.decode(JitterFrame(data=data, timestamp=ts)):
            d = f.to_ndarray(format="bgr24")
            out.append(d if scale == 1 else cv2.resize(d, (w, h), interpolation=cv2.INTER_CUBIC))
    return out, sent * 8 / (len(frames) / fps) / 1000


def main(argv: list[str] | None = None) -> None:
    from enhancer.align import feather_mask, warp_crops
    from enhancer.commands.assemble import build_pipeline
    from enhancer.strength import DEFAULT_STRENGTH, blend, strength

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--every", type=int, default=6)
    ap.add_argument("--rates", default="150,250,500")
    ap.add_argument("--scales", default="1,0.5")
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    frames, fps = load_clip(args.clip, args.frames, SIZE)
    judge = Judge(frames)
    wmask = feather_mask(CROP)
    weights = [float(x) for x in args.weights.split(",")]
    pipe = build_pipeline(identity=None, engine="auto")
    null = pipe.null_identity[None].astype(np.float32)
    rows = []
    for scale in (float(x) for x in args.scales.split(",")):
        for kbps in (int(x) for x in args.rates.split(",")):
            shown, sent = through_vp8(frames, fps, kbps, scale)
            psnr: dict[str, list[float]] = {f"w{w:g}": [] for w in weights} | {"auto": []}
            auto_w = []
            for i in range(SKIP, len(shown), args.every):
                src = judge.source(i)
                if src is None:
                    continue
                m, crop, _ = src
                got = warp_crops(shown[i], m[None], CROP)
                out = pipe.engine.restore(got, null, pipe.noise[:1])
                for w in weights:
                    psnr[f"w{w:g}"].append(masked_psnr(blend(got, out, np.array([w], np.float32))[0], crop, wmask))
                wa = strength(got, DEFAULT_STRENGTH)
                auto_w.append(float(wa[0]))
                psnr["auto"].append(masked_psnr(blend(got, out, wa)[0], crop, wmask))
            row = {"scale": scale, "kbps": kbps, "kbps_sent": round(sent, 1), "frames": len(psnr["auto"]),
                   "auto_weight_mean": round(float(np.mean(auto_w)), 3),
                   "psnr": {k: round(float(np.mean(v)), 3) for k, v in psnr.items()}}
            rows.append(row)
            print(f"scale {scale:g} {kbps} kbit/s (sent {sent:.0f}): " + "  ".join(
                f"{k} {v:.2f}" for k, v in row["psnr"].items()) + f"  auto w {row['auto_weight_mean']:.2f}", flush=True)
    pipe.close()
    result = {"benchmark": "vp8-offline", "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version()},
              "config": {"clip": args.clip.name, "frames": args.frames, "every": args.every, "skip": SKIP,
                         "size": list(SIZE), "engine": pipe.engine.name, "mode": "generic"},
              "rows": rows,
              "definition": {"psnr": "feather-weighted PSNR of the aligned 128 crop (source frame's landmarks) vs "
                                     "the source frame; wX: the received crop plus X of the generator's change; "
                                     "auto: the weight the adaptive strength picks"},
              "wall_s": round(time.perf_counter() - t0, 1)}
    out = args.out or RESULTS / f"vp8-offline-{args.clip.stem}.json"
    write_result(result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
