"""Engines and weights for a run: which engines can run here, at which crop, steps and precision."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from benchmarks.bench.config import BenchConfig, EngineSpec, log
from benchmarks.bench.machine import cpu_facts
from enhancer.errors import InputError


def weights_path(kind: str, crop: int) -> Path:
    """The packaged ``kind`` weights, or a cached copy whose generator crop side is ``crop``."""
    from engines.base import cache_dir, file_sha256
    from enhancer.models.restorer import Restorer
    from enhancer.weights import WEIGHTS_DIR, export_weights, load_restorer

    src = WEIGHTS_DIR / f"{kind}.safetensors"
    model, meta = load_restorer(src, kind=kind)
    if model.cfg.generator.size == crop:
        return src
    path = cache_dir("bench") / f"{kind}-{file_sha256(src)[:12]}-crop{crop}.safetensors"
    if not path.is_file():
        cfg = dataclasses.replace(model.cfg, generator=dataclasses.replace(model.cfg.generator, size=crop))
        resized = Restorer(cfg)
        resized.load_state_dict(model.state_dict())
        export_weights(resized, path, kind=meta.get("kind", kind), extra=meta.get("extra"))
    return path


def model_steps() -> dict[str, int]:
    """Default DDIM steps of the packaged student and teacher (read from their metadata)."""
    from enhancer.weights import WEIGHTS_DIR, default_steps, read_metadata

    out = {}
    for kind in ("student", "teacher"):
        meta = read_metadata(WEIGHTS_DIR / f"{kind}.safetensors")
        out[kind] = default_steps(meta.get("kind", kind), json.loads(meta.get("extra", "{}")))
    return out


def make_engine(spec: EngineSpec, kind: str, steps: int, crop: int) -> Any:
    """An engine via ``engines.create_engine``; prints a note first because the first use of an
    onnxruntime config exports (and caches) its ONNX graph, which takes a while; int8 calibrates
    on real faces (``enhancer.calibration``) the first time too."""
    from engines import create_engine
    from enhancer.calibration import personal_crops

    if spec.name != "torch":
        log(f"  preparing {spec.label} {kind} {steps} step(s) crop {crop} (ONNX export on first use, then cached)")
    options = {"precision": spec.precision} if spec.precision else {}
    return create_engine(spec.name, weights=weights_path(kind, crop), steps=steps, calibration=personal_crops,
                         **options)


def resolve_engines(requested: tuple[str, ...], notes: list[str]) -> list[EngineSpec]:
    """Requested (or every available) engine, those that cannot run here dropped with a note."""
    from engines import ENGINES, engine_status

    status = engine_status()
    if requested:
        specs = [EngineSpec.parse(e) for e in requested]
    else:
        specs = [EngineSpec(n) for n, w in status.items() if w is None]
        if status["onnxruntime"] is None:
            # static int8 is the fastest CPU engine when it passes its quality gate; each config needs
            # its own calibration (5-60 s), so a default run times it where a call runs: see default_int8
            specs.append(EngineSpec("onnxruntime", "int8"))
            notes.append("onnxruntime:int8 timed only at the student's own steps and crop 128 (each other "
                         "config needs its own calibration); ask for it with --engines to time it everywhere")
        flags = set(cpu_facts()["flags"])
        if status["torch"] is None and flags & {"avx512_bf16", "amx_bf16"}:
            # this CPU has bf16 dot products: torch bf16 autocast is a real candidate for the best CPU engine
            specs.append(EngineSpec("torch", "bf16"))
            notes.append("torch:bf16 included because the CPU has " + ", ".join(sorted(flags & {"avx512_bf16",
                                                                                             "amx_bf16"})))
    for s in specs:
        if s.name not in ENGINES:
            raise InputError(f"unknown engine {s.name!r}: choose from {', '.join(ENGINES)}")
    kept = []
    for s in specs:
        if status[s.name] is None:
            kept.append(s)
        else:
            notes.append(f"engine {s.label} skipped: {status[s.name]}")
    for n, why in status.items():
        if why is not None and not requested:
            notes.append(f"engine {n} not available here: {why}")
    if not kept:
        raise InputError("none of the requested engines can run on this machine")
    return kept


def default_int8(spec: EngineSpec, cfg: BenchConfig) -> bool:
    """An int8 engine the run added by itself (not asked for): timed only where a call runs."""
    return spec.precision == "int8" and spec.label not in cfg.engines


def wide_engine(specs: list[EngineSpec], micro: list[dict[str, Any]], cfg: BenchConfig, steps: int) -> EngineSpec:
    """The fastest engine timed at every config: the one the teacher and crop-256 rows use, so
    that student-vs-teacher ratios compare like with like."""
    wide = [s for s in specs if not default_int8(s, cfg)] or specs
    rows = {r["engine"]: r["ms_per_face"]["median"] for r in micro if r["model"] == "student" and r["steps"] == steps
            and r["crop"] == min(cfg.crops) and "ms_per_face" in r}
    return min(wide, key=lambda s: rows.get(s.label, math.inf))
