"""One whole `likeness bench` run: every section in order, on this machine, under the same load."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import resource
import time
from pathlib import Path
from typing import Any

from benchmarks.bench.config import BenchConfig, EngineSpec, log
from benchmarks.bench.engines import model_steps, resolve_engines, wide_engine
from benchmarks.bench.machine import hardware_section, machine_info
from benchmarks.bench.micro import (
    micro_align_paste,
    micro_detail_transfer,
    micro_generator,
    micro_identity,
    micro_tracker,
    restoration_baselines,
)
from benchmarks.bench.pipeline import PIPELINE_WARM_FRAMES, pipeline_plan, pipeline_section
from benchmarks.bench.report import format_report, output_paths, write_outputs
from benchmarks.bench.sources import SOURCE_FRAMES_MAX, load_source, through_camera
from benchmarks.bench.targets import gpu_section, ratios_section, targets_section
from benchmarks.bench.webrtc import webrtc_section


def run(cfg: BenchConfig) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The whole benchmark: (report for the JSON, raw per-run samples for plots)."""
    from enhancer.models.restorer import generator_gflops
    from enhancer.weights import load_restorer

    t_start = time.perf_counter()
    notes: list[str] = []
    samples: dict[str, list[float]] = {}
    specs = resolve_engines(cfg.engines, notes)
    steps_of = model_steps()
    info = machine_info()
    log(f"likeness bench: {info['cpu_model']}, {info['cores_usable']} cores; engines "
        f"{', '.join(s.label for s in specs)}; {'quick' if cfg.quick else 'default'} run")
    n_src = min(SOURCE_FRAMES_MAX, PIPELINE_WARM_FRAMES + cfg.frames)
    src = through_camera(load_source(cfg.source, list(cfg.resolutions), n_src), cfg.camera)
    log(f"source: {src.description}, {len(next(iter(src.frames.values())))} frames at {', '.join(src.frames)}")
    model, _ = load_restorer(None, kind="student")
    gflops = {c: generator_gflops(model, c) for c in cfg.crops}
    del model

    micro = micro_generator(cfg, specs, src, steps_of, gflops, samples)
    best_row = min((r for r in micro if r["model"] == "student" and r["steps"] == steps_of["student"]
                    and r["crop"] == 128 and "ms_per_face" in r),
                   key=lambda r: r["ms_per_face"]["median"], default=None)
    if best_row is None:  # default student steps not in --steps: judge on the fastest student row at 128
        best_row = min((r for r in micro if r["model"] == "student" and r["crop"] == min(cfg.crops)
                        and "ms_per_face" in r), key=lambda r: r["ms_per_face"]["median"], default=None)
    best = EngineSpec.parse(best_row["engine"]) if best_row else specs[0]
    wide = wide_engine(specs, micro, cfg, steps_of["student"])
    micro_rest = {
        "identity_encoding": micro_identity(cfg, src),
        "tracker": [micro_tracker(cfg, src, res) for res in cfg.resolutions],
        "align_paste": [micro_align_paste(cfg, src, res, c) for res in cfg.resolutions for c in cfg.crops],
        "detail_transfer": [micro_detail_transfer(cfg, src, c) for c in cfg.crops],
    }
    baselines_nets = restoration_baselines(cfg, samples)
    pipeline = pipeline_section(cfg, pipeline_plan(cfg, specs, wide, steps_of), src, samples)
    if cfg.skip_webrtc:
        webrtc: dict[str, Any] = {"skipped": "--skip-webrtc", "added_latency_ms_p50": None,
                                  "added_latency_ms_p95": None, "fps": None}
    else:
        webrtc = webrtc_section(cfg, src, best, steps_of["student"], samples)
    hw = hardware_section(cfg, micro, gflops)
    gpu = gpu_section()
    report = {
        "benchmark": "likeness-bench",
        "schema": 1,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {**info, "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
                    "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
        "config": {**dataclasses.asdict(cfg), "engines_run": [s.label for s in specs], "best_engine": best.label,
                   "engine_at_every_config": wide.label,
                   "student_steps": steps_of["student"], "teacher_steps": steps_of["teacher"],
                   "source_description": src.description, "source_fps": src.fps,
                   "source_frames_held_mib": round(sum(f.nbytes for v in src.frames.values() for f in v) / 2**20, 1),
                   "pipeline_warm_frames": PIPELINE_WARM_FRAMES,
                   "engine_setup_s": round(sum(r.get("setup_s", 0.0) for r in micro), 1)},
        "micro": {"generator": micro, **micro_rest},
        "pipeline": pipeline,
        "webrtc": webrtc,
        "baselines": {
            "in_pipeline": ["passthrough", "bicubic", "teacher"],
            "restoration_networks": baselines_nets,
            "ratios": ratios_section(pipeline, micro, baselines_nets, wide, steps_of),
        },
        "hardware": hw,
        "gpu": gpu,
        "targets": targets_section(pipeline, micro, webrtc, gpu, hw, steps_of["student"]),
        "notes": notes,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    return report, samples


def bench(cfg: BenchConfig, json_path: Path | None = None, out_dir: Path | None = None) -> dict[str, Any]:
    """Run, print the table, write JSON + plots; returns the report."""
    jp, folder = output_paths(json_path, out_dir, cfg.quick)
    report, samples = run(cfg)
    files = write_outputs(report, samples, jp, folder, cfg.plots)
    print(format_report(report))
    print("\nwrote " + ", ".join(str(f) for f in files))
    return report
