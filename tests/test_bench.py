"""`likeness bench`: a minimal real run (torch only, 5 runs, no WebRTC) writes a complete report.

The point is the report's shape and sanity (every figure finite, speeds positive), not the
speeds themselves; the full benchmark is run by hand on a quiet machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.bench import (
    BenchConfig,
    EngineSpec,
    default_int8,
    gpu_section,
    iter_numbers,
    output_paths,
    resolve_engines,
    synthetic_frames,
    targets_section,
    wide_engine,
)
from enhancer.cli import main

PIPELINE_KEYS = {"resolution", "engine", "steps", "crop", "fps", "latency_ms_p50", "latency_ms_p95", "stage_ms",
                 "cpu_percent", "peak_rss_mib"}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench")
    rc = main(["bench", "--quick", "--skip-webrtc", "--runs", "5", "--engines", "torch", "--steps", "1",
               "--json", str(out / "bench.json"), "--out", str(out)])
    assert rc == 0
    return json.loads((out / "bench.json").read_text()), out


def test_report_schema(report: tuple[dict, Path]) -> None:
    rep, _ = report
    for key in ("machine", "config", "micro", "pipeline", "webrtc", "baselines", "hardware", "targets"):
        assert key in rep, key
    for key in ("cpu_model", "logical_cores", "avx512", "amx", "torch", "onnxruntime"):
        assert key in rep["machine"], key
    assert rep["config"]["quick"] and rep["config"]["runs"] == 5

    gen = [r for r in rep["micro"]["generator"] if "ms_per_face" in r]
    assert {(r["model"], r["steps"]) for r in gen} == {("student", 1), ("teacher", rep["config"]["teacher_steps"])}
    assert all(r["crop"] == 128 and r["runs"] >= 5 and r["achieved_gflops"] > 0 for r in gen)
    assert rep["micro"]["identity_encoding"]["ms"]["median"] > 0
    tr = rep["micro"]["tracker"][0]
    assert tr["detection_frame_ms"]["median"] > 0 and tr["tracking_frame_ms"]["n"] >= 1

    labels = {r["label"] for r in rep["pipeline"]}
    assert {"passthrough", "bicubic", "student torch 128", "teacher torch 128"} <= labels
    for row in rep["pipeline"]:
        assert PIPELINE_KEYS <= row.keys(), row.get("label")
        assert row["resolution"] == "480p" and row["fps"] > 0 and row["latency_ms_p95"] >= row["latency_ms_p50"] > 0
    student = next(r for r in rep["pipeline"] if r["label"] == "student torch 128")
    assert set(student["stage_ms"]) == {"track", "align", "engine", "paste"}
    assert student["enhanced_share"] > 0.5  # the source has a face the tracker keeps

    assert rep["webrtc"]["skipped"] and {"added_latency_ms_p50", "added_latency_ms_p95", "fps"} <= rep["webrtc"].keys()
    hw = rep["hardware"]
    assert hw["measured"]["fp32"]["gflops_best"] > 0 and hw["generator_gflop_per_face_step"]["128"] > 0
    nets = rep["baselines"]["restoration_networks"]
    assert all(n["available"] or n["reason"] for n in nets)
    t = rep["targets"]
    assert {"cpu_pipeline_fps", "cpu_webrtc_added_latency_p95_ms", "gpu_generator_ms_per_face_256_fp16",
            "where_time_goes"} <= t.keys()
    assert t["cpu_pipeline_fps"]["met"] in (True, False) and t["cpu_webrtc_added_latency_p95_ms"]["met"] is None
    if t["cpu_pipeline_fps"]["met"] is False:
        assert t["where_time_goes"]


def test_every_number_is_finite(report: tuple[dict, Path]) -> None:
    rep, _ = report
    bad = [(p, v) for p, v in iter_numbers(rep) if not math.isfinite(v)]
    assert not bad, bad[:5]


def test_plots_and_samples_written(report: tuple[dict, Path]) -> None:
    rep, out = report
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} == {"bench-latency.png", "bench-stages.png", "bench-sampler.png"}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    samples = json.loads(Path(rep["samples_file"]).read_text())
    assert any(k.startswith("pipeline 480p student") for k in samples)


def test_synthetic_source_has_a_trackable_moving_face() -> None:
    from enhancer.tracker import FaceTracker

    frames = synthetic_frames((640, 480), 31)
    first = FaceTracker().update(frames[0])
    later = FaceTracker().update(frames[30])
    assert len(first) == 1 and len(later) == 1
    assert abs(first[0].landmarks[:, 0].mean() - later[0].landmarks[:, 0].mean()) > 20  # it pans


def test_gpu_section_reports_committed_numbers_against_the_target() -> None:
    gpu = gpu_section()
    if gpu is None:
        pytest.skip("no committed gpu-*.json")
    assert "H200" in str(gpu["machine"]) and gpu["summary"]["crop256_steps1_batch1"]["ms_per_face"] > 0
    t = targets_section([], [], None, gpu, {}, 1)["gpu_generator_ms_per_face_256_fp16"]
    assert t["met"] == (t["value"] <= 2.0) and t["machine"]


def test_quick_preset_and_runs_override() -> None:
    q = BenchConfig.make(quick=True, runs=5)
    assert q.crops == (128,) and q.resolutions == ("480p",) and q.steps == (1,) and q.runs == 5 and q.frames == 5
    d = BenchConfig.make()
    assert d.runs >= 200 and d.crops == (128, 256) and d.resolutions == ("480p", "720p")


def test_default_int8_is_timed_where_a_call_runs_and_ratios_stay_like_for_like() -> None:
    """A default run adds onnxruntime:int8 (calibrated per config, so only at the student's own
    config); the teacher and crop-256 rows use the fastest engine timed everywhere."""
    notes: list[str] = []
    specs = resolve_engines((), notes)
    int8 = EngineSpec("onnxruntime", "int8")
    assert int8 in specs and any("int8" in n for n in notes)
    assert default_int8(int8, BenchConfig.make())
    assert not default_int8(int8, BenchConfig.make(engines=("onnxruntime:int8",)))  # asked for: timed everywhere
    assert not default_int8(EngineSpec("onnxruntime"), BenchConfig.make())

    def row(engine: str, ms: float) -> dict:
        return {"engine": engine, "model": "student", "steps": 1, "crop": 128, "ms_per_face": {"median": ms}}

    micro = [row("torch", 30.0), row("onnxruntime", 12.0), row("onnxruntime:int8", 10.0)]
    specs = [EngineSpec("torch"), EngineSpec("onnxruntime"), int8]
    assert wide_engine(specs, micro, BenchConfig.make(), 1) == EngineSpec("onnxruntime")
    assert wide_engine(specs, micro, BenchConfig.make(engines=("torch", "onnxruntime", "onnxruntime:int8")), 1) == int8


def test_a_quick_run_never_overwrites_the_days_full_run(tmp_path: Path) -> None:
    """The README quotes the day's full run; a later ``--quick`` check on the same day must land
    beside it, not on it."""
    full, _ = output_paths(None, tmp_path)
    quick, folder = output_paths(None, tmp_path, quick=True)
    assert folder == tmp_path and full.parent == quick.parent == tmp_path
    assert full != quick and quick.stem.endswith("-quick")
    assert output_paths(tmp_path / "x.json", None, quick=True)[0] == tmp_path / "x.json"  # explicit --json wins
