"""Fan-out cost: one publisher watched by 1 viewer, then by 6, through one bridge.

The enhancer must run once per source frame however many watch (one MediaRelay per
publisher), and so must the encoder (one shared encoder per publisher and codec): an extra
viewer costs the bridge only packetizing and sending (here also that viewer's own decode). Measured per phase: process
CPU (split into aiortc decoder threads, which are mostly the test's viewers, and the rest:
enhancer, encoders, event loop), the publisher track's fps in/out and enhanced share, and
each viewer's fps. Figures are printed and written to test-artifacts/fanout.json.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path

import psutil
import pytest
from support.cpuwatch import CpuWatch

from benchmarks.harness.calls import http_client, publish, serve_bridge
from benchmarks.harness.calls import view as whep_view
from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack, FrameSink
from bridge.config import BridgeConfig
from bridge.factory import default_processor_factory

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d6.mp4"  # 480x480, 30 fps, one face
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
PHASE_S = 8.0
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process so far: aiortc decoder threads vs everything else."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {"decoders": 0.0, "other": 0.0}
    for t in psutil.Process().threads():
        key = "decoders" if names.get(t.id, "").endswith("-decoder") else "other"
        out[key] += t.user_time + t.system_time
    return out


def encoded(bridge) -> int:  # type: ignore[no-untyped-def]
    return sum(e["frames_encoded"] for e in bridge.stats()["shared_encoders"])


class CountingFactory:
    """The real processor factory; remembers every processor built and the frame time of every process()
    call (the worker thread calls it once per frame it enhances)."""

    def __init__(self) -> None:
        self.built: list[object] = []
        self.calls: list[float | None] = []
        self._lock = threading.Lock()

    def __call__(self, identity: str | None):  # type: ignore[no-untyped-def]
        proc = default_processor_factory(identity)
        inner = proc.process

        def process(img, t=None, **kw):  # type: ignore[no-untyped-def]
            with self._lock:
                self.calls.append(t)
            return inner(img, t, **kw)

        proc.process = process  # an instance attribute: the pipeline (its reuse included) is otherwise as built
        self.built.append(proc)
        return proc


async def measure(sinks: list[FrameSink], track, seconds: float, bridge,  # type: ignore[no-untyped-def]
                  factory: CountingFactory) -> dict:
    c0, n0, t0 = thread_cpu(), [len(s.frames) for s in sinks], time.monotonic()
    e0, p0 = encoded(bridge), len(factory.calls)
    k0 = (track.c.frames_in, track.c.frames_out, track.c.enhanced)
    watch = CpuWatch().start()
    await asyncio.sleep(seconds)
    watch.stop()
    dt = time.monotonic() - t0
    c1, n1 = thread_cpu(), [len(s.frames) for s in sinks]
    k1 = (track.c.frames_in, track.c.frames_out, track.c.enhanced)
    fps = [(b - a) / dt for a, b in zip(n0, n1, strict=True)]
    return {
        "viewers": len(sinks),
        "cpu_cores": round((sum(c1.values()) - sum(c0.values())) / dt, 3),
        "cpu_cores_decoders": round((c1["decoders"] - c0["decoders"]) / dt, 3),
        "cpu_cores_other": round((c1["other"] - c0["other"]) / dt, 3),
        "track_fps_in": round((k1[0] - k0[0]) / dt, 2),
        "track_fps_out": round((k1[1] - k0[1]) / dt, 2),
        "encode_fps": round((encoded(bridge) - e0) / dt, 2),
        "process_fps": round((len(factory.calls) - p0) / dt, 2),
        "encoders": [(e["publisher"], e["viewers"]) for e in bridge.stats()["shared_encoders"]],
        "enhanced_share": round((k1[2] - k0[2]) / max(1, k1[1] - k0[1]), 3),
        "viewer_fps_min": round(min(fps), 2),
        "viewer_fps_median": round(statistics.median(fps), 2),
        "threads": threading.active_count(),
        "others_cores": round(watch.others_cores, 2),
        "busy": watch.busy,
    }


@pytest.mark.timeout(90)
def test_fanout_one_vs_six_viewers() -> None:
    async def scenario() -> list[dict]:
        frames, fps = load_clip(CLIP, 90)
        async with serve_bridge(BridgeConfig(port=0), factory) as (base, bridge), \
                http_client() as http:
            pub = await publish(http, f"{base}/whip/fan", ClipTrack(frames, fps))
            viewers = [await whep_view(http, f"{base}/whep/fan")]
            publisher = bridge.publishers("fan")[0]
            track = publisher.track
            await asyncio.sleep(3.0)  # ICE/DTLS, first keyframes, detector warm-up
            one = await measure([v.sinks[0] for v in viewers], track, PHASE_S, bridge, factory)
            for _ in range(5):
                viewers.append(await whep_view(http, f"{base}/whep/fan"))
            await asyncio.sleep(3.0)
            assert all(v.sinks for v in viewers), "a viewer got no track"
            six = await measure([v.sinks[0] for v in viewers], track, PHASE_S, bridge, factory)
            for ph in (one, six):
                ph["publisher"] = publisher.id
            for p in (*viewers, pub):
                assert await p.leave(http) == 200
        return [one, six]

    factory = CountingFactory()
    one, six = asyncio.run(scenario())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fanout.json").write_text(json.dumps({"one": one, "six": six}, indent=1))
    print(f"\n1 viewer : {one}\n6 viewers: {six}")
    print(f"fan-out cost: CPU x{six['cpu_cores'] / max(one['cpu_cores'], 1e-3):.2f} "
          f"(non-decoder x{six['cpu_cores_other'] / max(one['cpu_cores_other'], 1e-3):.2f}), publisher track "
          f"{one['track_fps_out']} -> {six['track_fps_out']} fps, enhanced {one['enhanced_share']:.0%} -> "
          f"{six['enhanced_share']:.0%}, viewer median {one['viewer_fps_median']} -> {six['viewer_fps_median']} fps")
    busy = one["busy"] or six["busy"]
    # one enhancer for the room, whatever the number of viewers: viewers build no processor of their own ...
    assert len(factory.built) == 1, factory.built
    # ... and no source frame is enhanced twice (the relay fans out the track's output, nothing re-enhances it)
    assert len(factory.calls) > 0 and len(set(factory.calls)) == len(factory.calls), \
        f"{len(factory.calls) - len(set(factory.calls))} frames enhanced more than once"
    for ph in (one, six):
        assert 0 < ph["process_fps"] <= ph["track_fps_in"] + 0.5, ph
        # the publisher's track passes on the source frames (each once), however many watch
        assert ph["track_fps_out"] >= (0.7 if busy else 0.9) * ph["track_fps_in"], ph
        # one shared encoder for the publisher feeding every viewer, encoding the track's frames once each
        assert ph["encoders"] == [(ph["publisher"], ph["viewers"])], ph
        assert (0.5 if busy else 0.8) * ph["track_fps_out"] <= ph["encode_fps"] <= ph["track_fps_out"] * 1.1 + 0.5, ph
        assert ph["viewer_fps_min"] > 0, ph
    assert six["viewer_fps_median"] >= (0.25 if busy else 0.5) * one["viewer_fps_median"], (one, six)
    assert six["track_fps_out"] >= (0.4 if busy else 0.7) * one["track_fps_out"], (one, six)
