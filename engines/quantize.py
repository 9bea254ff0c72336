"""Static int8 quantisation of the exported sampler for ONNX Runtime's CPU provider, quality-gated.

Measured on this project's CPU target (benchmarks/bench_engines.py): static, per-channel int8
on the convolutions (QDQ, calibrated on real degraded face crops) is the only variant that is
both faster than fp32 and visually lossless; dynamic int8 (ConvInteger) and fp16 were slower.
Weights change what quantisation costs, so every quantised file is checked against the fp32
graph on held-out real crops and refused below ``MIN_PSNR_DB``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from enhancer.metrics import psnr

from .base import EngineError, cache_dir, crops_to_float, file_sha256, float_to_crops
from .onnx_export import INPUTS, OUTPUT, info_from_onnx, quiet
from .onnxruntime_engine import session_options
from .realdata import degraded_crops

MIN_PSNR_DB = 40.0  # vs the fp32 graph's uint8 output, worst crop
QUANT_VERSION = "2"  # 2: convolutions fed by the spatial identity map stay fp32


class _Reader(CalibrationDataReader):
    """Feeds one face at a time: real degraded crop, the null identity, fixed noise."""

    def __init__(self, crops: np.ndarray, null_identity: np.ndarray, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self._items = [dict(zip(INPUTS, (crops_to_float(c[None]), null_identity[None].copy(),
                                        rng.standard_normal((1, 3, *c.shape[:2])).astype(np.float32)), strict=True))
                       for c in crops]
        self._i = 0

    def get_next(self) -> dict | None:
        if self._i >= len(self._items):
            return None
        self._i += 1
        return self._items[self._i - 1]


def _outputs(path: Path, crops: np.ndarray, ident: np.ndarray, noise: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    out = [sess.run([OUTPUT], dict(zip(INPUTS, (crops_to_float(c[None]), ident[None], n[None]), strict=True)))[0]
           for c, n in zip(crops, noise, strict=True)]
    return float_to_crops(np.concatenate(out))


def quality_vs_fp32(fp32: Path, variant: Path, crops: np.ndarray, seed: int = 1) -> dict:
    """PSNR (dB) of the variant's uint8 output against the fp32 graph's, per crop."""
    info = info_from_onnx(fp32)
    noise = np.random.default_rng(seed).standard_normal((len(crops), 3, info.size, info.size)).astype(np.float32)
    a = _outputs(fp32, crops, info.null_identity, noise)
    b = _outputs(variant, crops, info.null_identity, noise)
    ps = [psnr(x, y) for x, y in zip(a, b, strict=True)]
    return {"psnr_min_db": float(min(ps)), "psnr_mean_db": float(np.mean(ps)), "crops": len(crops)}


def quantize_int8(fp32: Path | str, out: Path | str, calib: np.ndarray, check: np.ndarray,
                  min_psnr: float = MIN_PSNR_DB) -> dict:
    """Write a static int8 (QDQ, per-channel conv weights) copy of ``fp32``; refuse it if quality drops."""
    fp32, out = Path(fp32), Path(out)
    info = info_from_onnx(fp32)
    # Calibration runs the generic mode (null identity), where the spatial identity map is all
    # zeros: its convolutions would get a zero activation range and quantise every person's map
    # away. They are tiny (1x1), so they stay fp32.
    fp32_proto = onnx.load(str(fp32), load_external_data=False)
    keep_fp32 = [n.name for n in fp32_proto.graph.node if n.op_type == "Conv" and "/spatial_" in n.name]
    tmp_pre = out.with_name(out.name + f".pre{os.getpid()}")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        with quiet():  # the quantiser prints progress to stdout
            quant_pre_process(str(fp32), str(tmp_pre), skip_symbolic_shape=True)
            quantize_static(str(tmp_pre), str(tmp), _Reader(calib, info.null_identity), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"], nodes_to_exclude=keep_fp32,
                            calibrate_method=CalibrationMethod.Percentile)
        report = quality_vs_fp32(fp32, tmp, check)
        if report["psnr_min_db"] < min_psnr:
            raise EngineError(f"int8 quantisation loses quality ({report['psnr_min_db']:.1f} dB < {min_psnr} dB "
                              "vs fp32 on real crops); use fp32")
        proto = onnx.load(str(tmp))
        props = {p.key: p.value for p in fp32_proto.metadata_props}
        props.update(precision="int8", quality=json.dumps(report))
        onnx.helper.set_model_props(proto, props)
        onnx.save_model(proto, str(tmp))
        tmp.replace(out)
        return report
    finally:
        for p in (tmp_pre, tmp):
            p.unlink(missing_ok=True)


def cached_int8(fp32: Path | str, n_calib: int = 32, n_check: int = 8) -> Path:
    """The quality-checked int8 variant of an exported sampler, made once from real crops."""
    fp32 = Path(fp32)
    path = cache_dir("engines") / f"{fp32.stem}-int8-{file_sha256(fp32)[:12]}-q{QUANT_VERSION}.onnx"
    if not path.is_file():
        size = info_from_onnx(fp32).size
        crops = degraded_crops(n_calib + n_check, size=size)
        quantize_int8(fp32, path, crops[:n_calib], crops[n_calib:])
    return path
