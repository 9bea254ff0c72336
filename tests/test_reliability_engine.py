"""Engine failure mid-call: an engine that raises, returns NaN/inf, or hangs, for a window of frames.

The failing engines are wrappers around a real engine on the float ``run()`` path that every
backend (torch, ONNX Runtime, TensorRT) implements: ``FloatBicubic`` is the real BicubicEngine
behind ``BaseEngine.restore``'s uint8 <-> [-1, 1] conversion. Real clip frames arrive in real
time through ``EnhancingTrack``. During the window the call must keep the source rate with
un-enhanced frames (same pts), each failure kind must be logged once and counted in stats,
and enhancement must resume by itself afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest
from support.cpuwatch import CpuWatch

from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack, read_stamp
from bridge.factory import warm_detectors
from bridge.track import EnhancingTrack
from engines.base import BaseEngine, EngineError, ModelInfo, crops_to_float, float_to_crops
from engines.bicubic import BicubicEngine
from enhancer.pipeline import FramePipeline, FrameResult

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d8.mp4"  # 480x480, 30 fps, one face
pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")
FRAMES = 150  # 5 s at 30 fps
WINDOW = (30, 60)  # engine calls that fail (1-based call numbers)
HANG_WINDOW = (30, 34)  # calls that hang HANG_S each: ~1.6 s, about 50 frame intervals
HANG_S = 0.4


class FloatBicubic(BaseEngine):
    """The real BicubicEngine on the float run() path (what every model backend implements)."""

    name = "bicubic-float"

    def __init__(self) -> None:
        super().__init__(ModelInfo("bicubic", "none", "student", 1, 128, np.zeros((5, 256), np.float32)))
        self.inner = BicubicEngine(self.size)

    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return crops_to_float(self.inner.restore(float_to_crops(lq), None, noise))


class FaultyEngine(BaseEngine):
    """Wraps a real engine; calls in ``window`` raise, return non-finite output, or hang ``hang_s``."""

    def __init__(self, inner: BaseEngine, mode: str, window: tuple[int, int], hang_s: float = HANG_S) -> None:
        super().__init__(inner.info)
        self.name = f"faulty-{mode}"
        self.inner, self.mode, self.window, self.hang_s = inner, mode, window, hang_s
        self.calls = 0
        self.failing = False  # did the latest call fail (read by the pipeline below)

    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = self.inner.run(lq, identity, noise)
        self.failing = self.window[0] <= self.calls < self.window[1]
        if not self.failing:
            return out
        if self.mode == "raise":
            raise RuntimeError(f"injected engine failure at call {self.calls}")
        if self.mode == "nan":  # e.g. fp16 overflow: NaN with some inf
            out = out.copy()
            out[:, :, ::2] = np.nan
            out[:, 0, 0, :8] = np.inf
            return out
        if self.mode == "inf":
            return np.full_like(out, np.inf)
        time.sleep(self.hang_s)  # "hang": the real result, far too late
        return out


class RecordingPipeline(FramePipeline):
    """FramePipeline that remembers, per frame time, whether the engine failed on it."""

    def __init__(self, engine: FaultyEngine) -> None:
        super().__init__(engine)
        self.failed_t: set[float | None] = set()
        self.call_of: dict[float | None, int] = {}

    def process(self, frame_bgr: np.ndarray, t: float | None = None) -> FrameResult:
        eng: FaultyEngine = self.engine  # type: ignore[assignment]
        eng.failing = False
        try:
            return super().process(frame_bgr, t)
        finally:
            self.call_of[t] = eng.calls
            if eng.failing:
                self.failed_t.add(t)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_base_engine_restore_rejects_nonfinite_output(bad: float) -> None:
    """BaseEngine.restore refuses non-finite run() output with EngineError instead of casting NaN to 0 and
    clipping inf to 255 (which would paste black/white faces into the call)."""

    class BadEngine(FloatBicubic):
        def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
            out = super().run(lq, identity, noise)
            out[0, 1, 5, 7] = bad  # a single bad value is enough
            return out

    crops = np.full((2, 128, 128, 3), 128, np.uint8)
    noise = np.zeros((2, 3, 128, 128), np.float32)
    assert FloatBicubic().restore(crops, None, noise).shape == crops.shape  # the finite path works
    with pytest.raises(EngineError, match="non-finite"), np.errstate(invalid="ignore"):
        BadEngine().restore(crops, None, noise)


async def run_call(mode: str) -> dict:
    frames, fps = load_clip(CLIP, 60)
    warm_detectors()
    window = HANG_WINDOW if mode == "hang" else WINDOW
    engine = FaultyEngine(FloatBicubic(), mode, window)
    pipe = RecordingPipeline(engine)
    src = ClipTrack(frames, fps, max_frames=FRAMES)
    track = EnhancingTrack(src, pipe, name=f"faulty-{mode}")
    outs: list[dict] = []
    watch = CpuWatch().start()
    try:
        while True:
            before = track.c.enhanced
            try:
                f = await asyncio.wait_for(track.recv(), 5)
            except Exception as e:  # MediaStreamError at the end of the clip
                assert type(e).__name__ == "MediaStreamError", repr(e)
                break
            t = float(f.pts * f.time_base)
            outs.append({"pts": f.pts, "t": t, "at": time.monotonic(), "enhanced": track.c.enhanced > before,
                         "size": (f.width, f.height), "index": read_stamp(f.to_ndarray(format="gray")[..., None])})
    finally:
        watch.stop()
        stats = track.stats()
        await track.aclose()
    assert not track.worker_alive
    return {"outs": outs, "stats": stats, "pipe": pipe, "engine": engine, "src": src, "fps": fps, "cpu": watch}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["raise", "nan", "inf", "hang"])
def test_engine_failure_window_passes_through_and_recovers(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bridge.track"):
        r = asyncio.run(run_call(mode))
    outs, s, pipe, engine, src = r["outs"], r["stats"], r["pipe"], r["engine"], r["src"]
    window = engine.window
    print(f"\n{mode}: {len(outs)} frames out of {src.sent}; stats errors {s['errors']} enhanced {s['enhanced']} "
          f"pass error/late/busy {s['passthrough_error']}/{s['passthrough_late']}/{s['passthrough_busy']} "
          f"late results {s['late_results']} dropped {s['dropped']}; {r['cpu'].note()}")

    # every frame that went out is a source frame with its own pts, in order, at the source size
    pts = [o["pts"] for o in outs]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert all(o["size"] == (480, 480) for o in outs)
    assert all(o["pts"] == round(o["index"] * 90_000 / r["fps"]) for o in outs)  # pts belongs to that frame
    # (start-up costs a few frames: the worker thread loads its own dlib models on its first frame)
    assert len(outs) >= (0.6 if r["cpu"].busy else 0.8) * src.sent
    assert engine.calls >= window[1] + 5, "the stream ended before the engine recovered"

    # a frame the engine failed on never goes out as "enhanced"
    failed = [o for o in outs if o["t"] in pipe.failed_t]
    assert all(not o["enhanced"] for o in failed), [o for o in failed if o["enhanced"]][:3]
    # ... and the call kept the source rate meanwhile
    first_fail = min(t for t in pipe.failed_t)
    last_fail = max(t for t in pipe.failed_t)
    during = [o for o in outs if first_fail <= o["t"] <= last_fail]
    span = during[-1]["at"] - during[0]["at"]
    fps_during = (len(during) - 1) / span if span > 0 else 0.0
    sent_during = [v for k, v in src.sent_at.items() if during[0]["at"] - 0.001 <= v <= during[-1]["at"]]
    print(f"during the failure: {len(during)} frames at {fps_during:.1f} fps ({len(sent_during)} sent meanwhile), "
          f"{sum(o['enhanced'] for o in during)} enhanced")
    assert len(during) >= (0.6 if r["cpu"].busy else 0.85) * len(sent_during)
    assert fps_during >= (0.5 if r["cpu"].busy else 0.8) * r["fps"]

    # enhancement resumed by itself after the window
    after = [o for o in outs if pipe.call_of.get(o["t"], 0) >= window[1] and o["enhanced"]]
    assert len(after) >= 5, f"only {len(after)} enhanced frames after the failure window"
    assert sum(o["enhanced"] for o in outs if pipe.call_of.get(o["t"], 10**9) < window[0]) >= 5

    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if mode == "hang":
        assert s["errors"] == {}
        assert s["late_results"] >= window[1] - window[0] - 1  # the hung calls' results came back too late
        assert s["passthrough_late"] + s["passthrough_busy"] >= 0.5 * len(during)
        missed = [w for w in warnings if "deadline" in w]
        assert len(missed) == 1, warnings  # reported once, not once per frame
    else:
        kind = "RuntimeError" if mode == "raise" else "EngineError"
        assert s["errors"] == {kind: window[1] - window[0]}, s["errors"]  # every failed call counted
        assert s["passthrough_error"] >= 0.5 * len(failed)
        raised = [w for w in warnings if "enhancer raised" in w]
        assert len(raised) == 1 and kind in raised[0], warnings
        assert sum("recovered" in r.getMessage() for r in caplog.records) == 1


class StuckEngine(FloatBicubic):
    """The real engine until call ``after``; then blocks until released (a wedged GPU driver, a deadlock)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0
        self.release = threading.Event()

    def run(self, lq: np.ndarray, identity: np.ndarray, noise: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls >= self.after:
            self.release.wait(60)
        return super().run(lq, identity, noise)


@pytest.mark.timeout(60)
def test_engine_stuck_forever_call_continues_and_shutdown_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    """An engine that never returns: video keeps flowing un-enhanced, it is logged once, and closing the
    track does not wait for the engine beyond aclose's timeout."""
    engine = StuckEngine(after=20)

    async def scenario() -> dict:
        frames, fps = load_clip(CLIP, 60)
        warm_detectors()
        src = ClipTrack(frames, fps, max_frames=120)
        track = EnhancingTrack(src, FramePipeline(engine), name="stuck")
        n = 0
        watch = CpuWatch().start()
        t_stuck = None
        try:
            while True:
                try:
                    await asyncio.wait_for(track.recv(), 5)
                except Exception as e:
                    assert type(e).__name__ == "MediaStreamError", repr(e)
                    break
                n += 1
                if t_stuck is None and engine.calls >= engine.after:
                    t_stuck, n_stuck = time.monotonic(), n
        finally:
            watch.stop()
        fps_stuck = (n - n_stuck) / (time.monotonic() - t_stuck) if t_stuck else 0.0
        stats = track.stats()
        t = time.monotonic()
        await track.aclose(timeout=2.0)
        closed_in = time.monotonic() - t
        alive_after_close = track.worker_alive
        engine.release.set()
        end = time.monotonic() + 5
        while track.worker_alive and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return {"n": n, "sent": src.sent, "stats": stats, "closed_in": closed_in, "fps_stuck": fps_stuck,
                "alive_after_close": alive_after_close, "alive_at_end": track.worker_alive, "fps": fps,
                "busy": watch.busy}

    with caplog.at_level(logging.WARNING, logger="bridge.track"):
        r = asyncio.run(scenario())
    s = r["stats"]
    print(f"\nstuck engine: {r['n']} of {r['sent']} frames out, {r['fps_stuck']:.1f} fps while stuck; busy "
          f"{s['passthrough_busy']} late {s['passthrough_late']}; aclose took {r['closed_in']:.2f} s")
    assert engine.calls == engine.after  # it really got stuck, and nothing else was handed to it
    assert r["n"] >= (0.6 if r["busy"] else 0.8) * r["sent"]  # start-up included (dlib load in the worker)
    assert r["fps_stuck"] >= (0.5 if r["busy"] else 0.8) * r["fps"]
    assert s["passthrough_busy"] + s["passthrough_late"] >= 0.5 * (r["sent"] - engine.after)
    assert s["errors"] == {}
    assert sum("deadline" in m.getMessage() for m in caplog.records) == 1
    assert 1.5 <= r["closed_in"] < 4.0 and r["alive_after_close"]  # bounded wait, the wedged thread left behind
    assert not r["alive_at_end"]  # once the engine returns, the worker sees the stop and exits
