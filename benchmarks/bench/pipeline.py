"""End to end per frame: ``FramePipeline.process`` on the source, per stage, with baselines beside the student."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from benchmarks.bench.config import RESOLUTIONS, STAGES, BenchConfig, EngineSpec, log
from benchmarks.bench.engines import make_engine
from benchmarks.bench.sources import Source
from benchmarks.bench.timing import sig, summarize
from enhancer.errors import LikenessError

PIPELINE_WARM_FRAMES = 5  # processed before timing: first detection, allocator, caches


@dataclass(frozen=True)
class PipelineSpec:
    label: str
    engine: str  # engine label, or "passthrough" / "bicubic"
    model: str | None
    steps: int
    crop: int | None
    spec: EngineSpec | None = None
    enrolled: bool = False  # an identity enrolled from the source: the product path with the detail transfer


def pipeline_plan(cfg: BenchConfig, specs: list[EngineSpec], wide: EngineSpec,
                  steps_of: dict[str, int]) -> list[PipelineSpec]:
    """Baselines, the student at 128 on every engine (generic, and on the first engine with an enrolled
    identity, as a call runs it), then crop 256 and the teacher on ``wide``."""
    s = steps_of["student"]
    plan = [PipelineSpec("passthrough", "passthrough", None, 0, None),
            PipelineSpec("bicubic", "bicubic", None, 0, 128)]
    plan += [PipelineSpec(f"student {e.label} 128", e.label, "student", s, 128, e) for e in specs]
    if specs:
        plan.append(PipelineSpec(f"student {specs[0].label} 128 enrolled", specs[0].label, "student", s, 128,
                                 specs[0], enrolled=True))
    if 256 in cfg.crops:
        plan.append(PipelineSpec(f"student {wide.label} 256", wide.label, "student", s, 256, wide))
    plan.append(PipelineSpec(f"teacher {wide.label} 128", wide.label, "teacher", steps_of["teacher"], 128, wide))
    return plan


ENROL_FRAMES = range(0, 120, 15)  # source frames the enrolled row's identity is made from (enrolment picks 4)


def make_processor(p: PipelineSpec, src: Source | None = None) -> Any:
    from benchmarks.bench_bridge import Passthrough
    from engines.bicubic import BicubicEngine
    from enhancer.pipeline import FramePipeline
    from enhancer.strength import DEFAULT_STRENGTH

    if p.engine == "passthrough":
        return Passthrough()
    if p.engine == "bicubic":
        return FramePipeline(BicubicEngine(p.crop or 128))
    assert p.spec is not None and p.model is not None and p.crop is not None
    engine = make_engine(p.spec, p.model, p.steps, p.crop)
    if p.enrolled and src is not None:
        return _enrolled_pipeline(engine, src)
    # the product path: adaptive strength included (it is timed inside the engine stage)
    return FramePipeline(engine, strength=DEFAULT_STRENGTH)


def _enrolled_pipeline(engine: Any, src: Source) -> Any:
    """``build_pipeline`` with an identity enrolled from the source's own frames in a scratch home:
    identity, matcher and the reference detail transfer, as a call with an enrolled person runs."""
    import tempfile

    from enhancer.commands.assemble import build_pipeline
    from enhancer.enroll import enroll_from_images
    from enhancer.identity_store import IdentityStore

    with tempfile.TemporaryDirectory() as home:
        enroll_from_images("bench", [src.frame("480p", i) for i in ENROL_FRAMES], home=home)
        stored = IdentityStore(home).read("bench")
    return build_pipeline(identity=stored, engine=engine)


def run_pipeline(cfg: BenchConfig, processor: Any, src: Source, res: str) -> tuple[dict[str, Any], list[float]]:
    """Frames back to back through ``processor.process``: per-frame wall and stage times, fps, CPU, RSS."""
    proc = psutil.Process()
    for i in range(PIPELINE_WARM_FRAMES):
        processor.process(src.frame(res, i), i / src.fps)
    totals: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in STAGES}
    faces, enhanced, generated, rss_peak = [], 0, 0, proc.memory_info().rss
    proc.cpu_percent(None)
    start = time.perf_counter()
    i = PIPELINE_WARM_FRAMES
    while len(totals) < cfg.min_frames or (len(totals) < cfg.frames
                                           and time.perf_counter() - start < cfg.pipeline_max_s):
        frame = src.frame(res, i)
        t0 = time.perf_counter()
        r = processor.process(frame, i / src.fps)
        totals.append((time.perf_counter() - t0) * 1e3)
        for s in STAGES:
            if s in r.timings_ms:
                stages[s].append(r.timings_ms[s])
        faces.append(r.faces)
        enhanced += bool(r.enhanced)
        generated += r.generated
        rss_peak = max(rss_peak, proc.memory_info().rss)
        i += 1
    wall = time.perf_counter() - start
    cpu = proc.cpu_percent(None)
    st = summarize(totals)
    out = {
        "frames": len(totals), "capped_by_time_budget": len(totals) < cfg.frames,
        "fps": round(len(totals) / wall, 2),
        "latency_ms_p50": st["median"], "latency_ms_p95": st["p95"], "latency_ms_p99": st["p99"],
        "latency_ms": st,
        "stage_ms": {s: {"p50": sig(np.median(v)), "p95": sig(np.percentile(v, 95)), "mean": sig(np.mean(v))}
                     for s, v in stages.items() if v},
        "cpu_percent": round(cpu, 1), "cpu_cores_busy": round(cpu / 100, 2),
        "peak_rss_mib": round(rss_peak / 2**20, 1),
        "faces_per_frame_mean": round(float(np.mean(faces)), 3),
        "enhanced_share": round(enhanced / len(totals), 3),
        # faces the generator ran on, per face tracked (the rest kept no change and skipped it)
        "generated_share": round(generated / max(1, sum(faces)), 3),
    }
    return out, totals


def pipeline_section(cfg: BenchConfig, plan: list[PipelineSpec], src: Source,
                     samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    rows = []
    for res in cfg.resolutions:
        w, h = RESOLUTIONS[res]
        for p in plan:
            log(f"[pipeline] {res} {p.label}")
            base = {"resolution": res, "width": w, "height": h, "label": p.label, "engine": p.engine,
                    "model": p.model, "steps": p.steps, "crop": p.crop}
            try:
                processor = make_processor(p, src)
            except (LikenessError, RuntimeError, ValueError) as e:
                rows.append({**base, "error": str(e)})
                continue
            r, totals = run_pipeline(cfg, processor, src, res)
            del processor
            gc.collect()
            rows.append({**base, **r})
            samples[f"pipeline {res} {p.label}"] = totals
            log(f"  {r['fps']:7.1f} fps, p50 {r['latency_ms_p50']:.1f} ms, p95 {r['latency_ms_p95']:.1f} ms, "
                f"cpu {r['cpu_percent']:.0f}%, rss {r['peak_rss_mib']:.0f} MiB, "
                f"generator on {r['generated_share']:.0%} of faces ({r['frames']} frames)")
    return rows
