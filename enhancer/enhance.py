"""Offline enhancement of images and videos with the same FramePipeline the bridge uses.

Videos go through PyAV: frames are decoded, enhanced and re-encoded (H.264, same frame rate
and timestamps); audio packets are copied as they are, so sound stays in sync and untouched.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from .errors import InputError
from .imageio import read_image, write_image
from .pipeline import FramePipeline
from .video_io import open_video

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXT


def enhance_image(pipeline: FramePipeline, src: Path, dst: Path) -> dict:
    img = read_image(src)
    res = pipeline.process(img)
    write_image(dst, res.frame)
    return {"faces": res.faces, "timings_ms": res.timings_ms}


def enhance_video(pipeline: FramePipeline, src: Path, dst: Path, crf: int = 18) -> dict:
    """Enhance every frame; returns counts and mean per-stage timings."""
    inp = open_video(src)
    vin = inp.streams.video[0]
    ain = inp.streams.audio[0] if inp.streams.audio else None
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".partial" + dst.suffix)
    out = av.open(str(tmp), "w")
    rate = vin.average_rate or vin.guessed_rate or 30
    vout = out.add_stream("libx264", rate=rate)
    vout.width, vout.height = vin.codec_context.width, vin.codec_context.height
    vout.pix_fmt = "yuv420p"
    vout.time_base = vin.time_base
    vout.options = {"crf": str(crf), "preset": "veryfast"}
    aout = out.add_stream_from_template(ain) if ain is not None else None
    total = vin.frames or None
    stats = {"frames": 0, "frames_with_faces": 0, "faces": 0}
    timings: dict[str, list[float]] = {}
    streams = [vin] + ([ain] if ain is not None else [])
    try:
        with tqdm(total=total, desc="enhance", unit="frame") as bar:
            for packet in inp.demux(*streams):
                if packet.stream is ain:
                    if packet.dts is None:
                        continue
                    packet.stream = aout
                    out.mux(packet)
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue  # a corrupt packet: skip it, keep the rest of the video
                for frame in frames:
                    img = frame.to_ndarray(format="bgr24")
                    if img.shape[1] != vout.width or img.shape[0] != vout.height:
                        raise InputError(f"{src}: resolution changes mid-stream; not supported offline")
                    t = float(frame.pts * frame.time_base) if frame.pts is not None else None
                    res = pipeline.process(img, t)
                    of = av.VideoFrame.from_ndarray(np.ascontiguousarray(res.frame), format="bgr24")
                    of.pts, of.time_base = frame.pts, frame.time_base
                    for p in vout.encode(of):
                        out.mux(p)
                    stats["frames"] += 1
                    stats["faces"] += res.faces
                    stats["frames_with_faces"] += int(res.faces > 0)
                    for k, v in res.timings_ms.items():
                        timings.setdefault(k, []).append(v)
                    bar.update(1)
            for p in vout.encode(None):
                out.mux(p)
    finally:
        out.close()
        inp.close()
    if stats["frames"] == 0:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{src}: no decodable video frames")
    tmp.replace(dst)
    stats["timings_ms_mean"] = {k: round(float(np.mean(v)), 2) for k, v in timings.items()}
    stats["audio"] = ain is not None
    return stats
