"""Generator latency on a CUDA GPU: fp16, eager vs CUDA graphs, crop 128/256, batch 1/4.

Runs with only torch + this repo (no PyAV/dlib), so it works on a bare GPU machine. Writes
the same machine-info-carrying JSON layout as `likeness bench` (a ``micro`` list).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from enhancer.diffusion import ddim_sample
from enhancer.models.config import ModelConfig
from enhancer.models.restorer import Restorer, generator_gflops


def _time_cuda(fn, runs: int, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(runs):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out


def _stats(ms: list[float]) -> dict:
    s = sorted(ms)
    return {"median_ms": statistics.median(s), "p95_ms": s[int(0.95 * (len(s) - 1))],
            "p99_ms": s[int(0.99 * (len(s) - 1))], "runs": len(s)}


def bench(model: Restorer, size: int, batch: int, steps: int, graphs: bool, runs: int) -> dict:
    dev = torch.device("cuda")
    lq = torch.randn(batch, 3, size, size, device=dev, dtype=torch.float16)
    noise = torch.randn_like(lq)
    ident = model.null_identity[None].expand(batch, -1, -1).contiguous()

    def run():
        # the sampler's schedule maths stays fp32; only the network runs in fp16
        return ddim_sample(lambda x, t: model.generator(x.half(), lq, t, ident).float(), noise.float(), steps)

    fn = run
    if graphs:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                run()
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            run()
        fn = g.replay
    ms = _time_cuda(fn, runs)
    st = _stats(ms)
    st.update({"engine": "torch-cuda-fp16" + ("-graphs" if graphs else ""), "crop": size, "batch": batch,
               "steps": steps, "ms_per_face": st["median_ms"] / batch})
    return st


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", type=Path, help="safetensors; random init if absent (speed only)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--teacher-steps", type=int, default=8)
    a = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    if a.weights and a.weights.is_file():
        from enhancer.weights import load_restorer

        model, _ = load_restorer(a.weights, device="cpu")
    else:
        model = Restorer(ModelConfig()).eval().requires_grad_(False)
    gf = {s: generator_gflops(model, s) for s in (128, 256)}
    model = model.cuda().half()
    rows = []
    t0 = time.time()
    with torch.no_grad():
        for size in (128, 256):
            for batch in (1, 4):
                for steps in (1, 2, 4, a.teacher_steps):
                    for graphs in (False, True):
                        try:
                            r = bench(model, size, batch, steps, graphs, a.runs)
                        except Exception as e:  # report, keep going: partial results beat none
                            r = {"crop": size, "batch": batch, "steps": steps, "graphs": graphs, "error": str(e)}
                        r["gflop_per_face_step"] = gf[size]
                        if "ms_per_face" in r:
                            r["achieved_tflops"] = gf[size] * steps / r["ms_per_face"]
                        rows.append(r)
                        print(json.dumps(r))
    out = {"machine": {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
                       "cuda": torch.version.cuda, "python": platform.python_version()},
           "micro": rows, "wall_s": round(time.time() - t0, 1), "tensorrt": _trt()}
    a.json.write_text(json.dumps(out, indent=2))


def _trt() -> str:
    try:
        import tensorrt  # noqa: F401

        return "present"
    except ImportError:
        return "not installed on this machine"


if __name__ == "__main__":
    main()
