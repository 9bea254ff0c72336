"""Detail reuse: late frames get the last restored detail instead of going out raw.

Real clip frames, the real tracker and paste-back; the engines are the real BicubicEngine,
slowed down or made to fail where a test needs the generator to be late or broken.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.face_checks import face_box

from benchmarks.harness.clips import load_clip, videos_dir
from benchmarks.harness.tracks import ClipTrack
from bridge.factory import warm_detectors
from bridge.track import EnhancingTrack
from engines.bicubic import BicubicEngine
from enhancer.detail import DetailStore, ReuseConfig, add_detail, motion_gate, residuals
from enhancer.pipeline import FramePipeline

CLIP = videos_dir() / "LivePortrait__assets__examples__driving__d8.mp4"  # 480x480, 30 fps, one face
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"real clip {CLIP} not available")


class SlowEngine(BicubicEngine):
    """The real bicubic restorer, taking ``delay_s`` per call (a generator too slow for the deadline)."""

    name = "slow-bicubic"

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.calls = 0

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay_s)
        return super().restore(crops, identity, noise)


class FailingEngine(BicubicEngine):
    """The real bicubic restorer; raises on calls ``fail`` (1-based)."""

    def __init__(self, fail: set[int]) -> None:
        super().__init__()
        self.fail = fail
        self.calls = 0

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls in self.fail:
            raise RuntimeError(f"injected failure at call {self.calls}")
        return super().restore(crops, identity, noise)


def test_residual_roundtrip_is_exact() -> None:
    rng = np.random.default_rng(0)
    lq = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    restored = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    d = residuals(lq, restored)
    assert d.dtype == np.int16
    assert np.array_equal(add_detail(lq[1], d[1]), restored[1])
    # on another crop, the detail is added and clipped to the valid range
    other = np.full((16, 16, 3), 250, np.uint8)
    out = add_detail(other, np.full((16, 16, 3), 20, np.int16))
    assert out.dtype == np.uint8 and int(out.max()) == 255


def test_store_expires_orders_and_forgets() -> None:
    store = DetailStore(ReuseConfig(max_age_s=0.2))
    a, b = np.ones((4, 4, 3), np.int16), np.full((4, 4, 3), 2, np.int16)
    lq = np.zeros((1, 4, 4, 3), np.uint8)
    store.put([7], lq, a[None], t=1.0)
    assert store.get(7, 1.1) is not None and store.get(7, 1.1)[2] == pytest.approx(0.1)
    assert store.get(7, 1.3) is None  # too old: it would ghost
    assert store.get(7, 0.5) is None  # timestamps went back (a new source): not this face's detail
    assert store.get(8, 1.1) is None
    store.put([7], lq, b[None], t=1.2)
    store.put([7], lq, a[None], t=1.1)  # an older frame's result landing late does not win
    assert int(store.get(7, 1.25)[0][0, 0, 0]) == 2
    store.keep({8})
    assert len(store) == 0


def test_motion_gate_keeps_detail_where_the_crop_is_unchanged_and_drops_it_where_it_moved() -> None:
    cfg = ReuseConfig()
    rng = np.random.default_rng(1)
    then = rng.integers(60, 200, (64, 64, 3), dtype=np.uint8)
    now = then.copy()
    now[:, 40:] = 255 - now[:, 40:]  # the right part changed completely (an eye closed, say)
    gate = motion_gate(now, then, cfg)
    assert gate.shape == (64, 64, 1)
    assert gate[:, :30].min() == pytest.approx(1.0)  # unchanged: detail kept whole
    assert gate[:, 46:].max() == pytest.approx(0.0)  # changed: no old detail pasted there
    detail = np.full((64, 64, 3), 10, np.int16)
    out = add_detail(now, detail, gate)
    assert np.array_equal(out[:, :30], np.clip(now[:, :30].astype(int) + 10, 0, 255))
    assert np.array_equal(out[:, 46:], now[:, 46:])
    off = ReuseConfig(gate_lo=float("inf"), gate_hi=float("inf"))
    assert motion_gate(now, then, off) is None


@needs_clip
def test_reused_detail_is_close_to_restoring_the_frame_itself() -> None:
    """The detail of frame k added to frame k+2 restores k+2 nearly as restoring it would, and
    much more than leaving it raw: the property the whole feature rests on."""
    frames, fps = load_clip(CLIP, 40)
    warm_detectors()
    fresh, reusing = FramePipeline(BicubicEngine()), FramePipeline(BicubicEngine(), reuse=ReuseConfig())
    dist_reused, dist_raw = [], []
    for i, f in enumerate(frames):
        r_fresh = fresh.process(f, i / fps)
        r = reusing.process(f, i / fps) if i % 3 == 0 else reusing.process_reusing(f, i / fps)
        if i % 3 and r_fresh.faces:
            assert r.enhanced and r.reused == 1 and r.fresh == 0
            box = face_box(r_fresh.landmarks[0], f.shape)
            target = r_fresh.frame[box].astype(np.float64)
            dist_reused.append(np.abs(r.frame[box] - target).mean())
            dist_raw.append(np.abs(f[box] - target).mean())
    assert len(dist_reused) >= 20
    assert np.mean(dist_reused) < 0.5 * np.mean(dist_raw), (np.mean(dist_reused), np.mean(dist_raw))


@needs_clip
def test_budget_with_slow_generator_reuses_and_fast_generator_is_fresh() -> None:
    frames, fps = load_clip(CLIP, 30)
    warm_detectors()
    slow = FramePipeline(SlowEngine(0.08), reuse=ReuseConfig())
    fast = FramePipeline(BicubicEngine(), reuse=ReuseConfig())
    try:
        slow_res, fast_res = [], []
        for i, f in enumerate(frames):
            t0 = time.perf_counter()
            slow_res.append(slow.process(f, i / fps, budget_s=0.01))
            slow_res[-1].timings_ms["call"] = (time.perf_counter() - t0) * 1e3
            fast_res.append(fast.process(f, i / fps, budget_s=1.0))
            time.sleep(1 / fps)
    finally:
        slow.close()
        fast.close()
    # 80 ms generator, 10 ms budget: never this frame's own result, but the detail of an earlier one
    assert sum(r.fresh for r in slow_res) == 0
    assert sum(r.reused for r in slow_res) >= 15, [r.reused for r in slow_res]
    assert not slow_res[0].enhanced  # nothing restored yet: the first frame goes out as it came
    # the frame thread did not wait for the generator (tracking's first-frame detection aside)
    assert np.median([r.timings_ms["engine"] for r in slow_res]) < 40
    # a generator well inside the budget restores every frame itself
    assert all(r.fresh == 1 and r.reused == 0 for r in fast_res if r.faces)


@needs_clip
def test_a_resting_generator_starts_at_most_once_per_interval_and_frames_between_reuse() -> None:
    """``generator_interval_s`` (what `likeness view` runs): the generator starts no sooner than the
    interval after its last start, however idle it is, and the frames in between take its detail."""
    frames, fps = load_clip(CLIP, 30)
    warm_detectors()
    engine = SlowEngine(0.0)
    pipe = FramePipeline(engine, reuse=ReuseConfig(generator_interval_s=0.1))
    try:
        t0 = time.monotonic()
        results = []
        for i, f in enumerate(frames):
            results.append(pipe.process(f, i / fps, budget_s=1.0))
            time.sleep(1 / fps)
        elapsed = time.monotonic() - t0
    finally:
        pipe.close()
    with_face = [r for r in results if r.faces]
    assert len(with_face) >= 25
    assert engine.calls <= elapsed / 0.1 + 1, (engine.calls, elapsed)  # starts are >= 0.1 s apart
    assert engine.calls < len(with_face)
    assert sum(r.fresh for r in with_face) == engine.calls  # a started call is waited for within the budget
    assert sum(r.reused for r in with_face) == len(with_face) - engine.calls  # the rest reuse its detail
    assert all(r.enhanced for r in with_face)


@needs_clip
def test_background_failure_is_raised_once_and_detail_dropped() -> None:
    frames, fps = load_clip(CLIP, 12)
    warm_detectors()
    engine = FailingEngine({3})
    pipe = FramePipeline(engine, reuse=ReuseConfig(max_age_s=10))
    raised = 0
    try:
        for i, f in enumerate(frames):
            try:
                r = pipe.process(f, i / fps, budget_s=0.5)
            except RuntimeError as e:
                raised += 1
                assert "call 3" in str(e)
                assert len(pipe.details) == 0  # no stale detail pasted after a failure
                continue
            assert r.fresh == 1
    finally:
        pipe.close()
    assert raised == 1 and engine.calls == len(frames)


@needs_clip
def test_close_stops_the_generator_thread() -> None:
    frames, fps = load_clip(CLIP, 3)
    pipe = FramePipeline(BicubicEngine(), reuse=ReuseConfig())
    pipe.process(frames[0], 0.0, budget_s=0.5)
    gen = pipe._generator
    assert gen is not None and gen.alive
    pipe.close()
    end = time.monotonic() + 2
    while gen.alive and time.monotonic() < end:
        time.sleep(0.01)
    assert not gen.alive
    assert not any(t.name == "likeness-generator" and t.is_alive() for t in threading.enumerate())


async def _stream(processor: FramePipeline, frames: list, fps: float, n: int, close_timeout: float = 5.0) -> dict:
    """Play ``n`` clip frames through an EnhancingTrack: its final stats, plus frames got/sent,
    when each enhanced frame came out, and how long closing the track took."""
    src = ClipTrack(frames, fps, max_frames=n)
    track = EnhancingTrack(src, processor, name="reuse")
    got = 0
    enhanced_at: list[float] = []
    try:
        while True:
            before = track.c.enhanced
            try:
                await asyncio.wait_for(track.recv(), 5)
            except Exception as e:  # MediaStreamError at the end of the clip
                assert type(e).__name__ == "MediaStreamError", repr(e)
                break
            got += 1
            if track.c.enhanced > before:
                enhanced_at.append(time.monotonic())
    finally:
        stats = track.stats()
        t = time.monotonic()
        await track.aclose(timeout=close_timeout)
        stats["closed_in"] = time.monotonic() - t
    stats.update(got=got, sent=src.sent, enhanced_at=enhanced_at)
    return stats


@needs_clip
def test_frame_does_not_wait_for_a_generator_slower_than_its_budget() -> None:
    """An 80 ms generator against a 50 ms budget: the frame that starts the next call used to wait
    out its whole budget for it, then miss the deadline by the paste (a raw frame every
    generator cycle). Once a call's time is known, frames take the stored detail at once."""
    frames, fps = load_clip(CLIP, 30)
    warm_detectors()
    pipe = FramePipeline(SlowEngine(0.08), reuse=ReuseConfig())
    try:
        res = []
        for i, f in enumerate(frames):
            res.append(pipe.process(f, i / fps, budget_s=0.05))
            time.sleep(1 / fps)
    finally:
        pipe.close()
    known = [r for r in res if "generator" in r.timings_ms]  # after the first call came back
    assert len(known) >= 20
    assert max(r.timings_ms["engine"] for r in known) < 20, [round(r.timings_ms["engine"]) for r in known]
    assert sum(r.reused for r in known) >= 0.9 * len(known) and sum(r.fresh for r in known) == 0


@needs_clip
@pytest.mark.timeout(60)
def test_track_with_late_generator_sends_reused_frames_not_raw_ones() -> None:
    """A generator at 210 ms against a 150 ms deadline (1.5 frames of a 10 fps source): without
    reuse nearly every frame goes out raw; with reuse nearly every frame goes out enhanced, at the
    source rate either way.

    A real call's times (70 ms against 50 ms at 30 fps) scaled by three, so that the per-frame
    work (tracking and paste, 5-8 ms here, several times that on a loaded CI host) stays far
    inside the deadline: at 50 ms a busy machine made frames late for reasons that are not the
    generator's."""
    frames, fps = load_clip(CLIP, 60)
    warm_detectors()
    fps, late = fps / 3, 0.21
    raw = asyncio.run(_stream(FramePipeline(SlowEngine(late)), frames, fps, 45))
    reuse_cfg = ReuseConfig(max_age_s=0.6)  # the default 0.2 s, in source frames
    reuse = asyncio.run(_stream(FramePipeline(SlowEngine(late), reuse=reuse_cfg), frames, fps, 45))
    print(f"\nraw: {raw['enhanced']}/{raw['frames_out']} enhanced; reuse: {reuse['enhanced']}/{reuse['frames_out']} "
          f"enhanced, {reuse['enhanced_reused']} with reused detail")
    for s in (raw, reuse):
        assert s["got"] >= 0.8 * s["sent"]
    assert raw["enhanced_share_total"] <= 0.2
    # the first frames have no detail yet (0.42-0.79 while the frame that started each generator
    # call waited out its budget for it)
    assert reuse["enhanced_share_total"] >= 0.7, reuse
    assert reuse["enhanced_reused"] >= 0.9 * reuse["enhanced"]  # they are reused, and counted as such
    assert reuse["reused_share_total"] == pytest.approx(reuse["enhanced_reused"] / reuse["frames_out"], abs=1e-3)


@needs_clip
@pytest.mark.timeout(60)
def test_track_counts_every_background_failure_once_and_recovers() -> None:
    """Generator calls 10-29 raise in the background thread: each failure reaches the track's
    error count exactly once (raised on a later frame if its own frame had stopped waiting),
    and frames are enhanced again afterwards."""
    frames, fps = load_clip(CLIP, 60)
    warm_detectors()
    engine = FailingEngine(set(range(10, 30)))
    s = asyncio.run(_stream(FramePipeline(engine, reuse=ReuseConfig()), frames, fps, 120))
    print(f"\n{s['enhanced']}/{s['frames_out']} enhanced, errors {s['errors']}, calls {engine.calls}")
    assert engine.calls >= 45, "the stream ended before the generator recovered"
    assert s["errors"] == {"RuntimeError": 20}
    assert s["passthrough_error"] >= 10
    assert s["enhanced"] >= 0.4 * s["frames_out"]


def test_view_builder_rests_the_generator_and_keeps_the_late_frames_choice() -> None:
    from enhancer.commands.assemble import VIEW_GENERATOR_INTERVAL_S, make_view_builder
    from enhancer.commands.enhance import late_frames_config

    restored, _ = make_view_builder("auto", reuse=late_frames_config("reuse"))(None)
    raw, _ = make_view_builder("auto", reuse=late_frames_config("raw"))(None)
    try:
        assert restored.reuse is not None and restored.reuse.generator_interval_s == VIEW_GENERATOR_INTERVAL_S
        assert raw.reuse is None  # --late-frames raw stays raw
    finally:
        restored.close()
        raw.close()


def test_view_fades_on_the_shared_persons_own_detail_and_publishers_do_not(
        shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared identity's processor in ``likeness view`` carries the person fade from its reference
    crops; a publisher's processor for the same enrolled person does not (a camera worse than the
    enrolment photos is what the sender's side is for)."""
    import cv2
    from conftest import celeba_by_identity

    from enhancer.commands.assemble import make_factory, make_view_builder
    from enhancer.enroll import enroll_from_images
    from enhancer.identity_store import IdentityStore
    from enhancer.strength import person_fade

    by_id = celeba_by_identity(shared_data, kind="wild")
    photos = sorted(by_id[max(sorted(by_id), key=lambda i: len(by_id[i]))])
    enroll_from_images("p", [cv2.imread(str(shared_data / "celeba" / p)) for p in photos], home=tmp_path)
    stored = IdentityStore(tmp_path).read("p")
    viewer, how = make_view_builder("auto")(stored)
    monkeypatch.setenv("LIKENESS_HOME", str(tmp_path))
    publisher = make_factory("auto")("p")
    try:
        assert how.startswith("identity:") and stored.detail is not None
        assert viewer.strength is not None and viewer.strength.person_fade == person_fade(stored.detail)
        assert publisher.identity is not None and publisher.strength is not None
        assert publisher.strength.person_fade is None
    finally:
        viewer.close()
        publisher.close()


def test_bridge_factory_reuses_detail_by_default_and_raw_turns_it_off() -> None:
    """What `likeness serve` / `call` build: the trained engine with reuse, unless --late-frames raw."""
    from enhancer.commands.assemble import make_factory
    from enhancer.commands.enhance import late_frames_config

    default = make_factory("auto")(None)
    raw = make_factory("auto", reuse=late_frames_config("raw"))(None)
    try:
        assert default.reuse is not None and default.reuse == late_frames_config("reuse")
        assert raw.reuse is None
    finally:
        default.close()
        raw.close()


class StuckAfter(BicubicEngine):
    """The real bicubic restorer until call ``after``; then it never returns until released."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.calls = 0
        self.release = threading.Event()
        self.stuck_at: float | None = None

    def restore(self, crops: np.ndarray, identity: np.ndarray | None, noise: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls >= self.after:
            self.stuck_at = self.stuck_at or time.monotonic()
            self.release.wait(30)
        return super().restore(crops, identity, noise)


@needs_clip
@pytest.mark.timeout(60)
def test_track_with_generator_stuck_forever_keeps_the_rate_and_stops_reusing_stale_detail() -> None:
    """A wedged generator (driver hang, deadlock) under reuse: frames keep coming at the source
    rate, the old detail stops being pasted once it is older than max_age_s, and closing the
    track does not wait for the generator."""
    frames, fps = load_clip(CLIP, 60)
    warm_detectors()
    engine = StuckAfter(after=15)
    try:
        r = asyncio.run(_stream(FramePipeline(engine, reuse=ReuseConfig()), frames, fps, 150, close_timeout=2.0))
    finally:
        engine.release.set()
    assert engine.stuck_at is not None
    after = [t - engine.stuck_at for t in r["enhanced_at"] if t > engine.stuck_at]
    print(f"\n{r['got']}/{r['sent']} frames, {len(r['enhanced_at'])} enhanced, last enhanced "
          f"{max(after, default=0):.2f} s after the hang; closed in {r['closed_in']:.2f} s")
    assert r["got"] >= 0.8 * r["sent"]
    assert len(r["enhanced_at"]) >= 5  # it worked before the hang
    # nothing enhanced from detail older than max_age_s (+ a frame's slack for the deadline)
    assert max(after, default=0.0) <= ReuseConfig().max_age_s + 0.1
    assert r["closed_in"] < 2.5


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread nice is read from Linux /proc")
def test_generator_nice_lowers_only_the_generator_thread() -> None:
    from enhancer.worker import Worker

    def nice_of(tid: int) -> int:
        stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[16])  # field 19: nice

    if nice_of(threading.get_native_id()) > 14:
        pytest.skip("this process already runs near the lowest priority (nice > 14): +5 would be clamped")
    gen = Worker("generator", nice=5)
    try:
        end = time.monotonic() + 2
        while gen._thread.native_id is None and time.monotonic() < end:
            time.sleep(0.01)
        time.sleep(0.1)  # the thread sets its own priority as it starts
        assert nice_of(gen._thread.native_id) == nice_of(threading.get_native_id()) + 5
    finally:
        gen.close()


@needs_clip
def test_join_waits_for_the_generator_call_in_flight() -> None:
    """A closed pipeline's generator may still be inside the engine; join waits for that call (a daemon
    thread left in native code at interpreter exit aborts the process on Python 3.11)."""
    frames, fps = load_clip(CLIP, 10)
    warm_detectors()
    engine = SlowEngine(0.3)
    pipe = FramePipeline(engine, reuse=ReuseConfig())
    for i, f in enumerate(frames):  # until a 300 ms call has started; the frames do not wait for it
        pipe.process(f, i / fps, budget_s=0.001)
        end = time.monotonic() + 0.1
        while engine.calls == 0 and time.monotonic() < end:
            time.sleep(0.005)
        if engine.calls:
            break
    gen = pipe._generator
    assert engine.calls == 1 and gen is not None and gen.alive
    pipe.close()
    assert not pipe.join(0.01) and gen.alive  # still inside the engine call: close alone does not wait
    t0 = time.monotonic()
    assert pipe.join(5.0)
    assert not gen.alive and time.monotonic() - t0 < 1.0
