"""Engine latency (ms per face) and quality cost per backend and precision, on this machine.

For each model/steps setting (student 1 and 2 steps, teacher 8) and batch (1 and 4 faces at
128 px) every available variant is timed: torch fp32 and bf16, ONNX Runtime fp32 and int8
(when its quality gate passes), and on a GPU TensorRT FP16 and torch CUDA fp16 (CUDA graphs).
Variants are timed in interleaved blocks so that load from other processes hits all of them
alike; the machine's load average is recorded with the numbers. Quality: PSNR of each
variant's uint8 output against torch fp32 on real degraded crops (same noise, null identity).
Speed does not depend on the weights, so untrained weights of the right architecture give
valid timings.

    python -m benchmarks.bench_engines --student S.safetensors --teacher T.safetensors
"""

from __future__ import annotations

import os

# OpenMP reads this once, when torch loads it: with the default (active) waiting, torch's CPU
# threads spin against whatever else runs and a 25 ms call can take seconds on a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import datetime as dt
import json
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from engines import engine_status
from engines.base import BaseEngine, crops_to_float
from engines.onnx_export import cached_onnx, op_summary
from engines.onnxruntime_engine import OnnxRuntimeEngine, default_threads
from engines.torch_engine import TorchEngine
from enhancer.calibration import degraded_crops, personal_crops
from enhancer.errors import LikenessError
from enhancer.metrics import psnr

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    cpu, flags = platform.processor(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", "x86_64"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    info = {
        "cpu": cpu, "cores_usable": default_threads(), "platform": platform.platform(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
        "onnx": onnx.__version__, "cpu_features": sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2"))),
        "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }
    try:
        import tensorrt

        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)),
            "mean": float(a.mean()), "min": float(a.min())}


def time_interleaved(fns: dict[str, Callable[[], object]], runs: int, warmup: int, block: int = 10,
                     sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """``runs`` timed calls of each fn, in round-robin blocks (so background load is shared fairly)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync()
    out: dict[str, list[float]] = {k: [] for k in fns}
    while any(len(v) < runs for v in out.values()):
        for k, fn in fns.items():
            for _ in range(min(block, runs - len(out[k]))):
                t0 = time.perf_counter()
                fn()
                sync()
                out[k].append((time.perf_counter() - t0) * 1e3)
    return out


def build_variants(weights: Path, steps: int, want_int8: bool, notes: list[str]) -> dict[str, BaseEngine]:
    v: dict[str, BaseEngine] = {
        "torch-fp32": TorchEngine.from_weights(weights, steps=steps, device="cpu", precision="fp32"),
        "torch-bf16": TorchEngine.from_weights(weights, steps=steps, device="cpu", precision="bf16"),
    }
    onnx_path = cached_onnx(weights, steps)
    v["onnxruntime-fp32"] = OnnxRuntimeEngine(onnx_path, device="cpu")
    if want_int8:
        from engines.quantize import cached_int8

        try:
            v["onnxruntime-int8"] = OnnxRuntimeEngine(cached_int8(onnx_path, weights, personal_crops), device="cpu")
        except LikenessError as e:  # refused by the quality gate (EngineError), or too few calibration faces
            notes.append(f"{weights.name} {steps} steps: int8 not kept: {e}")
    status = engine_status()
    if torch.cuda.is_available():
        v["torch-cuda-fp16-graphs"] = TorchEngine.from_weights(weights, steps=steps, device="cuda", precision="fp16",
                                                               cuda_graphs=True)
    if status["tensorrt"] is None:
        from engines.tensorrt_engine import TensorRTEngine

        v["tensorrt-fp16"] = TensorRTEngine(onnx_path, opt_batch=1, max_batch=4)
    return v


def _finite(x: float) -> float | None:
    """PSNR of identical images is infinite; JSON has no infinity, so write null."""
    return float(x) if np.isfinite(x) else None


def quality(variants: dict[str, BaseEngine], crops: np.ndarray, seed: int = 7) -> dict[str, dict]:
    """Each variant vs torch fp32 on the same real crops and noise: PSNR (uint8) and max |diff| (float)."""
    noise = np.random.default_rng(seed).standard_normal((len(crops), 3, *crops.shape[1:3])).astype(np.float32)
    ref_eng = variants["torch-fp32"]
    lq, ident = crops_to_float(crops), ref_eng.null_identities(len(crops))
    ref_f = np.concatenate([ref_eng.run(lq[i:i + 4], ident[i:i + 4], noise[i:i + 4]) for i in range(0, len(crops), 4)])
    ref_u8 = ref_eng.restore(crops, None, noise)
    out = {}
    for name, eng in variants.items():
        f = np.concatenate([eng.run(lq[i:i + 4], ident[i:i + 4], noise[i:i + 4]) for i in range(0, len(crops), 4)])
        u8 = eng.restore(crops, None, noise)
        ps = [psnr(a, b) for a, b in zip(ref_u8, u8, strict=True)]
        out[name] = {"psnr_vs_torch_fp32_min_db": _finite(min(ps)), "psnr_vs_torch_fp32_mean_db": _finite(np.mean(ps)),
                     "crops_identical": int(np.sum(~np.isfinite(ps))),
                     "max_abs_vs_torch_fp32": float(np.abs(f - ref_f).max())}
    return out


def ort_tuning(weights: Path, runs: int, warmup: int, batches: list[int], crops: np.ndarray) -> list[dict]:
    """The CPU session settings OnnxRuntimeEngine uses, each against its alternative (same graph)."""
    from engines.onnxruntime_engine import session_options

    path = cached_onnx(weights, 1)
    n = default_threads()
    base = {"threads": n, "spinning": False, "level": "all", "mode": "sequential", "mem_pattern": True}
    trials = {"chosen": {}, "threads=1": {"threads": 1}, "spinning": {"spinning": True},
              "level=extended": {"level": "extended"}, "level=basic": {"level": "basic"},
              "mode=parallel": {"mode": "parallel"}, "mem_pattern=off": {"mem_pattern": False}}
    lv = ort.GraphOptimizationLevel
    levels = {"all": lv.ORT_ENABLE_ALL, "extended": lv.ORT_ENABLE_EXTENDED, "basic": lv.ORT_ENABLE_BASIC}
    sessions = {}
    for name, change in trials.items():
        c = {**base, **change}
        so = session_options(c["threads"], c["spinning"])
        so.graph_optimization_level = levels[c["level"]]
        so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if c["mode"] == "parallel"
                             else ort.ExecutionMode.ORT_SEQUENTIAL)
        so.enable_mem_pattern = c["mem_pattern"]
        sessions[name] = (ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"]), c)
    rows = []
    null = OnnxRuntimeEngine(path).null_identity
    for b in batches:
        rng = np.random.default_rng(b)
        feed = {"lq": crops_to_float(crops[:b]), "identity": np.repeat(null[None], b, 0),
                "noise": rng.standard_normal((b, 3, 128, 128)).astype(np.float32)}
        fns = {k: partial(sess.run, None, feed) for k, (sess, _) in sessions.items()}
        la = os.getloadavg()
        for k, ms in time_interleaved(fns, runs, warmup).items():
            rows.append({"trial": k, "settings": sessions[k][1], "batch": b, "runs": len(ms),
                         "ms_per_face": stats([t / b for t in ms]), "load_avg_before": la})
            print(f"ort tuning batch {b} {k:16s} {rows[-1]['ms_per_face']['median']:7.2f} ms/face "
                  f"(p95 {rows[-1]['ms_per_face']['p95']:.2f})", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", type=Path, help="student .safetensors (default: packaged)")
    ap.add_argument("--teacher", type=Path, help="teacher .safetensors (default: packaged)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--settings", default="student:1,student:2,teacher:8", help="model:steps list")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--ort-tuning", action="store_true", help="also time the ORT CPU session settings (student 1 step)")
    ap.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/engines-<date>.json)")
    args = ap.parse_args(argv)

    from enhancer.weights import WEIGHTS_DIR

    paths = {"student": args.student or WEIGHTS_DIR / "student.safetensors",
             "teacher": args.teacher or WEIGHTS_DIR / "teacher.safetensors"}
    batches = [int(b) for b in args.batches.split(",")]
    notes: list[str] = []
    crops = degraded_crops(8, skip=200)  # evaluation faces, disjoint from int8 calibration
    want_int8 = not args.no_int8
    report: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine_info(),
                    "settings": {"runs": args.runs, "warmup": args.warmup, "crop": 128, "batches": batches,
                                 "weights": {k: str(v) for k, v in paths.items()},
                                 "ort_threads": default_threads(), "interleaved_blocks": 10},
                    "load_avg_start": os.getloadavg(), "results": [], "quality": [], "graphs": [], "notes": notes}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for item in filter(None, args.settings.split(",")):
        kind, steps = item.split(":")
        steps = int(steps)
        weights = paths[kind]
        if not weights.is_file():
            notes.append(f"{kind}: {weights} not found, skipped")
            continue
        variants = build_variants(weights, steps, want_int8, notes)
        onnx_file = variants["onnxruntime-fp32"].onnx_path  # type: ignore[attr-defined]
        ops = op_summary(onnx_file)
        report["graphs"].append({"model": kind, "steps": steps, "nodes": sum(ops.values()), "ops": ops})
        q = quality(variants, crops)
        report["quality"].append({"model": kind, "steps": steps, **{"variants": q}})
        for b in batches:
            rng = np.random.default_rng(b)
            x = crops_to_float(crops[:b]) if b <= len(crops) else rng.uniform(-1, 1, (b, 3, 128, 128))
            x = np.ascontiguousarray(x, dtype=np.float32)
            noise = rng.standard_normal((b, 3, 128, 128)).astype(np.float32)
            ident = next(iter(variants.values())).null_identities(b)
            fns = {name: partial(eng.run, x, ident, noise) for name, eng in variants.items()}
            la = os.getloadavg()
            times = time_interleaved(fns, args.runs, args.warmup, sync=sync)
            for name, ms in times.items():
                per_face = [t / b for t in ms]
                row = {"model": kind, "steps": steps, "batch": b, "variant": name, "runs": len(ms),
                       "ms_per_call": stats(ms), "ms_per_face": stats(per_face), "load_avg_before": la,
                       "engine": variants[name].describe()}
                report["results"].append(row)
                pf, db = row["ms_per_face"], q[name]["psnr_vs_torch_fp32_min_db"]
                print(f"{kind:7s} steps {steps} batch {b} {name:24s} {pf['median']:8.2f} ms/face "
                      f"(p95 {pf['p95']:.2f}, p99 {pf['p99']:.2f})  psnr vs fp32 {db or float('inf'):.1f} dB  "
                      f"load {la[0]:.1f}", flush=True)
    if args.ort_tuning and paths["student"].is_file():
        report["ort_tuning"] = ort_tuning(paths["student"], args.runs, args.warmup, batches, crops)
    report["load_avg_end"] = os.getloadavg()
    out = args.out or RESULTS / f"engines-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
