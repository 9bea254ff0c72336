"""The machine a run measured on: CPU facts, versions, and its dense-maths peak (measured and theoretical)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil

from benchmarks.bench.config import BenchConfig, log


def cpu_facts() -> dict[str, Any]:
    """Model, vendor, family, nominal MHz and SIMD/matrix flags from /proc/cpuinfo (Linux)."""
    facts: dict[str, Any] = {"model": platform.processor() or "unknown", "vendor": None, "family": None,
                             "mhz": None, "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and facts["model"] in ("unknown", "", "x86_64"):
            facts["model"] = value
        elif key == "vendor_id" and facts["vendor"] is None:
            facts["vendor"] = value
        elif key == "cpu family" and facts["family"] is None:
            facts["family"] = int(value)
        elif key == "cpu MHz" and facts["mhz"] is None:
            facts["mhz"] = float(value)
        elif key == "flags" and not facts["flags"]:
            facts["flags"] = value.split()
    return facts


def machine_info() -> dict[str, Any]:
    from benchmarks.bench_engines import machine_info as engines_machine_info

    info = engines_machine_info()  # cpu, cores, torch / onnxruntime / onnx / tensorrt versions, threads
    cpu = cpu_facts()
    flags = set(cpu["flags"])
    info.update({
        "cpu_model": cpu["model"], "cpu_vendor": cpu["vendor"], "cpu_family": cpu["family"],
        "cpu_mhz_nominal": cpu["mhz"], "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "avx512": sorted(f for f in flags if f.startswith("avx512")), "amx": sorted(f for f in flags if "amx" in f),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1), "numpy": np.__version__,
        "opencv": cv2.__version__, "psutil": psutil.__version__,
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    })
    for pkg in ("av", "aiortc", "dlib-bin", "matplotlib"):
        try:
            info[pkg.replace("-bin", "")] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            info[pkg.replace("-bin", "")] = None
    return info


def theoretical_peak(cpu: dict[str, Any], cores: int) -> dict[str, Any]:
    """Peak GFLOP/s from the flags, core count and nominal clock, with the assumption spelled out."""
    flags, mhz = set(cpu["flags"]), cpu["mhz"]
    zen_up_to_4 = cpu["vendor"] == "AuthenticAMD" and (cpu["family"] or 0) < 26
    if "avx512f" in flags and zen_up_to_4:
        fp32, why = 32, "Zen 4: AVX-512 issued on two 256-bit FMA pipes (2 x 8 lanes x 2 FLOP)"
    elif "avx512f" in flags:
        fp32, why = 64, "two 512-bit FMA units assumed (2 x 16 lanes x 2 FLOP; one-FMA parts have half)"
    elif "avx2" in flags and "fma" in flags:
        fp32, why = 32, "two 256-bit FMA units (2 x 8 lanes x 2 FLOP)"
    else:
        fp32, why = 8, "no FMA/AVX2: SSE estimate"
    per_cycle: dict[str, int] = {"fp32": fp32}
    if "avx512_bf16" in flags:
        per_cycle["bf16_avx512"] = 2 * fp32  # VDPBF16PS: two bf16 products per fp32 lane
    if "amx_bf16" in flags:
        per_cycle["bf16_amx"] = 1024  # TDPBF16PS: 16x16x32 MACs per 16 cycles
    if "avx512_vnni" in flags:
        per_cycle["int8_vnni"] = 4 * fp32  # VPDPBUSD: four u8 x s8 products per 32-bit lane
    out: dict[str, Any] = {"flop_per_cycle_per_core": per_cycle, "assumption": why, "cores": cores,
                           "mhz": mhz, "note": "nominal clock from /proc/cpuinfo; boost clocks raise the peak"}
    out["gflops"] = {k: round(cores * v * mhz / 1e3, 1) for k, v in per_cycle.items()} if mhz else None
    return out


def matmul_peak(n: int, reps: int) -> dict[str, Any]:
    """A large square matmul in fp32 and bf16: the practical peak of this machine for dense maths."""
    import torch

    out: dict[str, Any] = {"n": n, "reps": reps, "threads": torch.get_num_threads()}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        with torch.inference_mode():
            for _ in range(2):
                a @ b
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                a @ b
                ts.append(time.perf_counter() - t0)
        flop = 2.0 * n**3
        out[name] = {"gflops_median": round(flop / float(np.median(ts)) / 1e9, 1),
                     "gflops_best": round(flop / min(ts) / 1e9, 1)}
    return out


def hardware_section(cfg: BenchConfig, micro: list[dict[str, Any]], gflops: dict[int, float]) -> dict[str, Any]:
    import torch

    log(f"[hardware] {cfg.matmul_n}x{cfg.matmul_n} matmul, fp32 and bf16")
    cpu = cpu_facts()
    measured = matmul_peak(cfg.matmul_n, cfg.matmul_reps)
    theo = theoretical_peak(cpu, torch.get_num_threads())
    rows = []
    for r in micro:
        if "achieved_gflops" not in r:
            continue
        precision = (r.get("describe") or {}).get("precision")
        bf16, int8 = precision == "bf16", precision == "int8"
        # int8 runs integer dot products: judged against the VNNI peak, for which no matmul is measured
        peak = None if int8 else measured["bf16" if bf16 else "fp32"]["gflops_best"]
        tpeak = (theo.get("gflops") or {}).get("int8_vnni" if int8 else "bf16_avx512" if bf16 else "fp32")
        rows.append({"engine": r["engine"], "model": r["model"], "steps": r["steps"], "crop": r["crop"],
                     "achieved_gflops": r["achieved_gflops"],
                     "fraction_of_measured_peak": round(r["achieved_gflops"] / peak, 3) if peak else None,
                     "fraction_of_theoretical_peak": round(r["achieved_gflops"] / tpeak, 3) if tpeak else None})
    return {"generator_gflop_per_face_step": {str(k): round(v, 3) for k, v in gflops.items()},
            "measured": measured, "theoretical": theo, "rows": rows}
