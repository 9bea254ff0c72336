"""Verdicts on a run: the issue's targets, ratios to the baselines, and the committed GPU figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.bench.config import RESULTS, EngineSpec

TARGET_CPU_FPS = 30.0
TARGET_WEBRTC_ADDED_P95_MS = 40.0
TARGET_GPU_MS_PER_FACE = 2.0
MIN_ENHANCED_SHARE = 0.9  # an added-latency figure only counts if the bridge really enhanced the frames


def gpu_section(results: Path = RESULTS) -> dict[str, Any] | None:
    """The newest committed ``gpu-*.json`` (measured elsewhere), labelled with its machine."""
    files = sorted(results.glob("gpu-*.json"))
    if not files:
        return None
    data = json.loads(files[-1].read_text())
    rows = [r for r in data.get("micro", []) if "ms_per_face" in r]

    def best(crop: int, steps: int, batch: int = 1) -> dict[str, Any] | None:
        m = [r for r in rows if r.get("crop") == crop and r.get("steps") == steps and r.get("batch") == batch]
        return min(m, key=lambda r: r["ms_per_face"]) if m else None

    summary = {}
    for crop in (128, 256):
        for steps in sorted({r["steps"] for r in rows}):
            b = best(crop, steps)
            if b:
                p95 = round(b["p95_ms"], 3) if "p95_ms" in b else None
                summary[f"crop{crop}_steps{steps}_batch1"] = {"ms_per_face": round(b["ms_per_face"], 3),
                                                              "p95_ms": p95, "engine": b["engine"]}
    repo = Path(__file__).resolve().parents[2]
    path = files[-1].resolve()
    return {"file": str(path.relative_to(repo)) if path.is_relative_to(repo) else str(path),
            "machine": data.get("machine"), "date": data.get("date"), "source": data.get("source"),
            "note": "measured on that machine by benchmarks/gpu_bench.py, not in this run", "summary": summary,
            "missing": data.get("missing"), "micro": data.get("micro", [])}


def where_time_goes(row: dict[str, Any] | None, gen: dict[str, Any] | None, hw: dict[str, Any],
                    webrtc: dict[str, Any] | None) -> str:
    """A few sentences from the per-stage numbers: which stage eats the frame budget, and how
    far the sampler runs from the machine's dense-maths peak."""
    parts = []
    if row and "stage_ms" in row:
        total = row["latency_ms_p50"]
        st = sorted(((k, v["p50"]) for k, v in row["stage_ms"].items()), key=lambda kv: -kv[1])
        shares = ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in st)
        parts.append(f"At {row['resolution']} one student frame ({row['engine']}, crop {row['crop']}) takes "
                     f"{total:.1f} ms p50 ({row['fps']:.1f} fps sustained): {shares}; {TARGET_CPU_FPS:g} fps "
                     f"allows {1e3 / TARGET_CPU_FPS:.1f} ms.")
    if gen and "ms_per_face" in gen:
        prec = "bf16" if (gen.get("describe") or {}).get("precision") == "bf16" else "fp32"
        peak = hw.get("measured", {}).get(prec, {}).get("gflops_best")
        txt = (f"The sampler does {gen['gflop_per_face']:.2f} GFLOP per face in {gen['ms_per_face']['median']:.1f} ms "
               f"= {gen['achieved_gflops']:.0f} GFLOP/s")
        if peak:
            txt += (f", {100 * gen['achieved_gflops'] / peak:.0f}% of the measured {prec} matmul peak "
                    f"({peak:.0f} GFLOP/s)")
        others = sum(v["p50"] for k, v in (row or {}).get("stage_ms", {}).items() if k != "engine")
        left_ms = 1e3 / TARGET_CPU_FPS - others
        if row and left_ms > 0:
            txt += (f"; to fit the frame budget beside the other stages ({others:.1f} ms) it would need "
                    f">= {gen['gflop_per_face'] / left_ms * 1e3:.0f} GFLOP/s")
        parts.append(txt + ".")
    if webrtc and webrtc.get("enhanced_share") is not None and webrtc["enhanced_share"] < MIN_ENHANCED_SHARE:
        parts.append(f"Through WebRTC the bridge enhanced only {100 * webrtc['enhanced_share']:.0f}% of frames "
                     "(the rest passed through late), so its added latency understates the engine's cost.")
    return " ".join(parts)


def targets_section(pipeline: list[dict[str, Any]], micro: list[dict[str, Any]], webrtc: dict[str, Any] | None,
                    gpu: dict[str, Any] | None, hw: dict[str, Any], steps: int) -> dict[str, Any]:
    """The issue's targets, reported (never asserted), with the row each figure comes from."""
    cands = [r for r in pipeline if r.get("model") == "student" and r.get("crop") == 128
             and r.get("resolution") == "480p" and "fps" in r]
    best = max(cands, key=lambda r: r["fps"], default=None)
    cpu_fps = {"what": "student, crop 128, best CPU engine, one face at 640x480: sustained fps through FramePipeline",
               "target": f">= {TARGET_CPU_FPS:g}", "value": best["fps"] if best else None,
               "engine": best["engine"] if best else None,
               "met": bool(best["fps"] >= TARGET_CPU_FPS) if best else None}
    web: dict[str, Any] = {"what": "added glass-to-glass latency p95 of enhancement through the WebRTC loopback bridge",
                           "target": f"<= {TARGET_WEBRTC_ADDED_P95_MS:g} ms, with >= {MIN_ENHANCED_SHARE:.0%} "
                                     "of frames enhanced", "value": None, "met": None}
    if webrtc and webrtc.get("added_latency_ms_p95") is not None:
        share = webrtc.get("enhanced_share") or 0.0
        web.update({"value": webrtc["added_latency_ms_p95"], "enhanced_share": share, "engine": webrtc["engine"],
                    "reused_share": webrtc.get("reused_share"),  # of those, enhanced with earlier detail
                    "met": bool(webrtc["added_latency_ms_p95"] <= TARGET_WEBRTC_ADDED_P95_MS
                                and share >= MIN_ENHANCED_SHARE)})
    elif webrtc is not None:
        web["note"] = webrtc.get("skipped") or "no latency samples"
    g = (gpu or {}).get("summary", {}).get("crop256_steps1_batch1")
    gpu_t = {"what": "generator ms per face at crop 256, fp16, one step, batch 1",
             "target": f"<= {TARGET_GPU_MS_PER_FACE:g} ms", "value": g["ms_per_face"] if g else None,
             "engine": g["engine"] if g else None, "machine": ((gpu or {}).get("machine") or {}).get("gpu"),
             "source": (gpu or {}).get("file"), "met": bool(g["ms_per_face"] <= TARGET_GPU_MS_PER_FACE) if g else None}
    out: dict[str, Any] = {"cpu_pipeline_fps": cpu_fps, "cpu_webrtc_added_latency_p95_ms": web,
                           "gpu_generator_ms_per_face_256_fp16": gpu_t, "where_time_goes": None}
    if cpu_fps["met"] is False or web["met"] is False:
        gen = next((r for r in micro if r.get("engine") == cpu_fps["engine"] and r.get("model") == "student"
                    and r.get("steps") == steps and r.get("crop") == 128 and "ms_per_face" in r), None)
        out["where_time_goes"] = where_time_goes(best, gen, hw, webrtc)
    return out


def ratios_section(pipeline: list[dict[str, Any]], micro: list[dict[str, Any]], baselines: list[dict[str, Any]],
                   engine: EngineSpec, steps_of: dict[str, int]) -> dict[str, Any]:
    """Our speed as ratios to the baselines measured in the same run (> 1: we are slower); student
    and teacher on the same ``engine``."""
    out: dict[str, Any] = {}
    for res in sorted({r["resolution"] for r in pipeline}):
        by = {r["label"]: r for r in pipeline if r["resolution"] == res and "fps" in r}
        stu = by.get(f"student {engine.label} 128")
        if not stu:
            continue
        d: dict[str, Any] = {"student": stu["label"]}
        for name in ("passthrough", "bicubic", f"teacher {engine.label} 128"):
            b = by.get(name)
            if not b:
                continue
            key = name.split()[0]
            d[f"added_ms_p50_over_{key}"] = round(stu["latency_ms_p50"] - b["latency_ms_p50"], 2)
            if key != "passthrough":  # a ratio to a no-op loop says nothing
                d[f"latency_p50_vs_{key}"] = round(stu["latency_ms_p50"] / max(b["latency_ms_p50"], 1e-6), 2)
                d[f"fps_vs_{key}"] = round(stu["fps"] / max(b["fps"], 1e-6), 3)
        out[f"pipeline_{res}"] = d

    def gen(kind: str, steps: int, crop: int) -> float | None:
        r = next((r for r in micro if r.get("engine") == engine.label and r["model"] == kind and r["steps"] == steps
                  and r["crop"] == crop and "ms_per_face" in r), None)
        return r["ms_per_face"]["median"] if r else None

    s128 = gen("student", steps_of["student"], 128)
    t128 = gen("teacher", steps_of["teacher"], 128)
    if s128 and t128:
        out["sampler_teacher_over_student_128"] = round(t128 / s128, 2)
    for b in baselines:
        if b.get("available") and s128:
            out[f"sampler_{b['name'].split()[0]}_512_over_student_128"] = round(b["ms_per_face"]["median"] / s128, 2)
    return out
