"""`likeness engines list|export|build`: inference backends for the restorer.

``list`` says which backends run here and, for those that don't, why; ``export`` writes the
whole sampler as one ONNX graph; ``build`` prepares a backend ahead of a call (the ONNX export
for onnxruntime, the FP16 plan for tensorrt) so the first frame does not wait for it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError


def register(sub) -> None:
    p = sub.add_parser("engines", help="list, export and build inference engines")
    es = p.add_subparsers(dest="engines_command", required=True, metavar="ACTION")

    ls = es.add_parser("list", help="which engines run on this machine, and why not")
    ls.set_defaults(func=_list)

    ex = es.add_parser("export", help="export the whole sampler as one ONNX graph")
    ex.add_argument("--weights", type=Path, help=".safetensors weights (default: the packaged student)")
    ex.add_argument("--steps", type=int,
                    help="DDIM steps (default: what the weights record, else the student's distilled steps)")
    ex.add_argument("--opset", type=int, default=None, help="ONNX opset (default 21)")
    ex.add_argument("--exporter", choices=["legacy", "dynamo"], default="legacy",
                    help="legacy: fast export, fastest in ONNX Runtime (default); dynamo: native "
                         "GroupNormalization, what TensorRT is given")
    ex.add_argument("-o", "--out", type=Path, required=True, help="output .onnx file")
    ex.set_defaults(func=_export)

    bd = es.add_parser("build", help="prepare an engine (export / quantise / TensorRT plan) into the cache")
    bd.add_argument("--engine", choices=["auto", "onnxruntime", "tensorrt", "torch"], default="auto")
    bd.add_argument("--weights", type=Path, help=".safetensors weights or an exported .onnx")
    bd.add_argument("--steps", type=int)
    bd.add_argument("--precision", help="onnxruntime: fp32 or int8; torch: fp32, bf16 or fp16")
    bd.add_argument("--device", help="cpu or cuda (default: best available)")
    bd.set_defaults(func=_build)


def _list(args) -> int:
    from engines import engine_status

    status = engine_status()
    best = next((n for n, why in status.items() if why is None), None)
    for name, why in status.items():
        state = "available" if why is None else f"unavailable: {why}"
        note = " (auto picks this)" if name == best else ""
        print(f"{name:12s} {state}{note}")
    return 0


def _export(args) -> int:
    from engines.onnx_export import OPSET, export_sampler, op_summary
    from engines.torch_engine import load_model

    if args.out.suffix != ".onnx":
        raise InputError(f"{args.out}: output must end in .onnx")
    if args.steps is not None and args.steps < 1:
        raise InputError("--steps must be >= 1")
    model, meta = load_model(args.weights)
    out = export_sampler(model, meta, args.out, steps=args.steps, opset=args.opset or OPSET, exporter=args.exporter)
    ops = op_summary(out)
    norms = {k: v for k, v in ops.items() if k in ("GroupNormalization", "InstanceNormalization")}
    print(f"{out}: {sum(ops.values())} nodes ({args.exporter} exporter), "
          + ", ".join(f"{k} x{v}" for k, v in norms.items()) + f", {out.stat().st_size / 1e6:.1f} MB")
    return 0


def _build(args) -> int:
    from engines import create_engine

    from ..calibration import personal_crops

    opts = {"precision": args.precision} if args.precision else {}
    eng = create_engine(args.engine, weights=args.weights, steps=args.steps, device=args.device,
                        calibration=personal_crops, **opts)  # int8 calibrates on real faces
    print(json.dumps(eng.describe()))
    return 0
