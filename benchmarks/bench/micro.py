"""Per-stage timings: the sampler per engine x steps x crop, identity encoding, tracker, align and paste-back,
reference detail transfer, and the published restoration networks as baselines."""

from __future__ import annotations

import gc
import time
from dataclasses import replace
from functools import partial
from typing import Any

import cv2
import numpy as np

from benchmarks.bench.config import BenchConfig, EngineSpec, log
from benchmarks.bench.engines import default_int8, make_engine
from benchmarks.bench.sources import Source, face_crops
from benchmarks.bench.timing import summarize, time_interleaved, time_one
from enhancer.errors import LikenessError

# What was tried for the widely used restoration baselines (2026-11-26, PyPI only): recorded
# next to the runtime import result, so a skipped baseline carries its reason.
RESTORATION_BASELINES_TRIED = (
    "pip install --no-deps gfpgan==1.3.8 basicsr==1.4.2 codeformer-pip==0.0.4 into a scratch directory: "
    "importing their architecture modules fails with \"No module named 'torchvision'\" (gfpgan/__init__ "
    "and basicsr/__init__ import every submodule, basicsr.archs.arch_util imports torchvision; codeformer-pip "
    "bundles the same basicsr). torchvision wheels on PyPI pin their own torch build and would replace this "
    "CPU torch, so they are not installed; their code is not vendored."
)


def micro_generator(cfg: BenchConfig, specs: list[EngineSpec], src: Source, steps_of: dict[str, int],
                    gflops: dict[int, float], samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    """Sampler ms per face (batch 1) per engine x (model, steps) x crop, engines interleaved."""
    from engines.base import crops_to_float
    from engines.identity_sessions import DEFAULT_SPECIALISE
    from enhancer.pipeline import stream_noise

    plan = [("student", s) for s in cfg.steps] + [("teacher", steps_of["teacher"])]
    rows = []
    res0 = cfg.resolutions[0]
    for crop in cfg.crops:
        lq = crops_to_float(face_crops(src, res0, crop, 1))
        noise = stream_noise(0, 1, crop)
        for kind, steps in plan:
            engines: dict[str, Any] = {}
            errors: dict[str, str] = {}
            here = [sp for sp in specs if not default_int8(sp, cfg)
                    or (kind == "student" and steps == steps_of["student"] and crop == 128)]
            for spec in here:
                t0 = time.perf_counter()
                try:
                    engines[spec.label] = (make_engine(spec, kind, steps, crop), time.perf_counter() - t0)
                except (LikenessError, RuntimeError, ValueError) as e:
                    errors[spec.label] = str(e)
            fns = {k: partial(e.run, lq, e.null_identities(1), noise) for k, (e, _) in engines.items()}
            log(f"[micro] sampler {kind} {steps} step(s) crop {crop}: {', '.join(fns) or 'no engine'}")
            # ONNX Runtime specialises a repeated identity on its third call: the timed calls are
            # the ones a call's stream makes after that
            warm = replace(cfg, warmup=max(cfg.warmup, DEFAULT_SPECIALISE.after + 1))
            times = time_interleaved(fns, warm) if fns else {}
            for spec in here:
                row: dict[str, Any] = {"engine": spec.label, "model": kind, "steps": steps, "crop": crop, "batch": 1}
                if spec.label in errors:
                    rows.append({**row, "error": errors[spec.label]})
                    continue
                eng, setup_s = engines[spec.label]
                ms = times[spec.label]
                st = summarize(ms)
                gf = gflops[crop] * steps
                row.update({"runs": len(ms), "capped_by_time_budget": len(ms) < cfg.runs, "ms_per_face": st,
                            "gflop_per_face": round(gf, 3), "achieved_gflops": round(gf / (st["median"] / 1e3), 1),
                            "setup_s": round(setup_s, 2), "describe": eng.describe()})
                rows.append(row)
                samples[f"sampler {spec.label} {kind} s{steps} {crop}"] = ms
                log(f"  {spec.label:16s} {st['median']:9.2f} ms/face median, p95 {st['p95']:.2f}, "
                    f"p99 {st['p99']:.2f} ({len(ms)} runs)")
            del engines, fns
            gc.collect()
    return rows


def micro_identity(cfg: BenchConfig, src: Source) -> dict[str, Any]:
    """The identity encoder over 4 references (what enrolment runs once per person)."""
    from enhancer.weights import compute_identity, load_restorer

    model, _ = load_restorer(None, kind="student")
    refs = face_crops(src, cfg.resolutions[0], model.cfg.encoder.size, 4)
    log("[micro] identity encoder, 4 references")
    ms = time_one(lambda: compute_identity(model, refs), cfg)
    return {"refs": 4, "crop": int(model.cfg.encoder.size), "engine": "torch (eager, fp32)", "runs": len(ms),
            "ms": summarize(ms)}


def micro_tracker(cfg: BenchConfig, src: Source, res: str) -> dict[str, Any]:
    """Detection frames (HOG + landmarks, forced by reset) and tracking frames (landmarks only) apart."""
    from enhancer.tracker import FaceTracker

    log(f"[micro] tracker at {res}")
    tracker = FaceTracker()
    tracker.update(src.frame(res, 0))  # loads dlib's models
    i = 0

    def detect() -> None:
        nonlocal i
        tracker.reset()
        tracker.update(src.frame(res, i), i / src.fps)
        i += 1

    det = time_one(detect, cfg)
    steady = FaceTracker()  # a fresh one, left to its own detect/track schedule
    track_ms: list[float] = []
    all_ms: list[float] = []
    start = time.perf_counter()
    j = 0
    while len(track_ms) < cfg.min_runs or (len(track_ms) < cfg.runs and time.perf_counter() - start < cfg.max_s):
        t0 = time.perf_counter()
        steady.update(src.frame(res, j), j / src.fps)
        dt_ms = (time.perf_counter() - t0) * 1e3
        all_ms.append(dt_ms)
        if not steady.last_was_detection:
            track_ms.append(dt_ms)
        j += 1
        if j > 50 * max(cfg.runs, 1):  # no face at all: every frame is a detection
            break
    return {"resolution": res, "detect_every": steady.config.detect_every,
            "detection_frame_ms": summarize(det), "tracking_frame_ms": summarize(track_ms),
            "amortised_ms": summarize(all_ms), "amortised_fps": round(len(all_ms) / (sum(all_ms) / 1e3), 1)}


def micro_align_paste(cfg: BenchConfig, src: Source, res: str, crop: int) -> dict[str, Any]:
    """Alignment (matrix + warp) and paste-back (colour match + feathered blend) for one face."""
    from enhancer.align import alignment_matrix, paste_back, warp_crops
    from enhancer.tracker import FaceTracker

    tracker = FaceTracker()
    lm = None
    for i in range(min(10, len(src.frames[res]))):
        faces = tracker.update(src.frame(res, i), i / src.fps)
        if faces:
            lm, frame = faces[0].landmarks, src.frame(res, i)
            break
    if lm is None:
        return {"resolution": res, "crop": crop, "error": "no face found in the first frames"}
    log(f"[micro] align + paste-back at {res}, crop {crop}")
    holder: dict[str, np.ndarray] = {}

    def align() -> None:
        holder["m"] = alignment_matrix(lm, crop)[None]
        holder["c"] = warp_crops(frame, holder["m"], crop)

    align()
    restored = cv2.GaussianBlur(holder["c"][0], (0, 0), 1.0)[None]
    a = time_one(align, cfg)
    p = time_one(lambda: paste_back(frame, restored, holder["m"], holder["c"]), cfg)
    return {"resolution": res, "crop": crop, "align_ms": summarize(a), "paste_ms": summarize(p)}


def micro_detail_transfer(cfg: BenchConfig, src: Source, crop: int) -> dict[str, Any]:
    """Reference detail transfer on one restored face with 4 references (what the generator thread
    adds per face of the enrolled person), and its one-off preparation per identity."""
    from enhancer.detail_transfer import DEFAULT_TRANSFER, prepare_references, transfer_detail
    from enhancer.weighting_runtime import load_weighting_runtime

    crops = face_crops(src, cfg.resolutions[0], crop, 5)
    refs, face = crops[:4], crops[4]
    # timed at full gain on a face that arrived without detail: the most it costs
    tcfg = replace(DEFAULT_TRANSFER, alpha=max(DEFAULT_TRANSFER.alpha, 1.0))
    degraded = cv2.GaussianBlur(face, (0, 0), 3.0)
    log(f"[micro] reference detail transfer, crop {crop}")
    weighting = load_weighting_runtime() if tcfg.learned else None
    prepared = prepare_references(refs, tcfg, weighting)
    prep = time_one(lambda: prepare_references(refs, tcfg, weighting), cfg)
    run = time_one(lambda: transfer_detail(face, degraded, prepared), cfg)
    return {"crop": crop, "references": len(refs), "alpha": tcfg.alpha, "learned": tcfg.learned,
            "transfer_ms": summarize(run), "prepare_ms": summarize(prep)}


def restoration_baselines(cfg: BenchConfig, samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    """GFPGAN / CodeFormer networks with random weights at their 512 px crop, when importable."""
    import importlib

    import torch

    candidates = [
        ("GFPGANv1Clean (GFPGAN v1.3/1.4 network)", "gfpgan.archs.gfpganv1_clean_arch", "GFPGANv1Clean",
         {"out_size": 512, "num_style_feat": 512, "channel_multiplier": 2, "decoder_load_path": None,
          "fix_decoder": False, "num_mlp": 8, "input_is_latent": True, "different_w": True, "narrow": 1,
          "sft_half": True}),
        ("CodeFormer", "codeformer.basicsr.archs.codeformer_arch", "CodeFormer",
         {"dim_embd": 512, "codebook_size": 1024, "n_head": 8, "n_layers": 9,
          "connect_list": ["32", "64", "128", "256"]}),
    ]
    out = []
    for label, module, cls, kwargs in candidates:
        row: dict[str, Any] = {"name": label, "crop": 512, "weights": "random (speed only)"}
        try:
            net = getattr(importlib.import_module(module), cls)(**kwargs).eval()
        except Exception as e:  # ImportError, or a package whose import breaks in other ways
            out.append({**row, "available": False, "reason": f"{type(e).__name__}: {e}",
                        "tried": RESTORATION_BASELINES_TRIED})
            continue
        from torch.utils.flop_counter import FlopCounterMode

        x = torch.rand(1, 3, 512, 512) * 2 - 1
        log(f"[baseline] {label} at 512 px, random weights")
        with torch.inference_mode():
            with FlopCounterMode(display=False) as fc:
                net(x)
            ms = time_one(lambda net=net, x=x: net(x), cfg)
        samples[f"baseline {label}"] = ms
        st = summarize(ms)
        gf = fc.get_total_flops() / 1e9
        out.append({**row, "available": True, "runs": len(ms), "ms_per_face": st, "gflop_per_face": round(gf, 2),
                    "achieved_gflops": round(gf / (st["median"] / 1e3), 1)})
    return out
