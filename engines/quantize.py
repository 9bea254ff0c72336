"""Static int8 quantisation of the exported sampler for ONNX Runtime's CPU provider, quality-gated.

Measured on this project's CPU target (benchmarks/bench_engines.py): static, per-channel int8
on the convolutions (QDQ, calibrated on real degraded face crops) is the only variant that is
both faster than fp32 and visually lossless; dynamic int8 (ConvInteger) and fp16 were slower.
Weights change what quantisation costs, so every quantised file is checked against the fp32
graph on held-out real crops and refused below ``MIN_PSNR_DB``. The crops come from the caller
(a ``Calibration``: the face pipeline makes them, and the engines do not import it).

A CPU without VNNI multiplies uint8 activations by int8 weights with 16-bit saturating adds
(AVX2 / AVX-512 ``vpmaddubsw``), which clips large products: measured on an AVX2-only AMD EPYC,
the packaged student's int8 copy fell to 41.0 dB against fp32 (46.5 dB on a VNNI Xeon). There
the weights are quantised to 7 bits (``reduce_range``), which cannot saturate: 45.8 dB on the
same crops. A VNNI CPU keeps the full 8 bits.
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

from enhancer.weights import WEIGHTS_DIR, compute_identity

from .base import Calibration, EngineError, cache_dir, crops_to_float, file_sha256, float_to_crops
from .onnx_export import INPUTS, OUTPUT, info_from_onnx, quiet
from .onnxruntime_engine import session_options
from .torch_engine import load_model

MIN_PSNR_DB = 40.0  # vs the fp32 graph's uint8 output, worst crop of either mode
# 2: convolutions fed by the spatial identity map stay fp32; 3: calibrated and checked on real
# identities as well as the null one
QUANT_VERSION = "3"
# /proc/cpuinfo names of an int8 dot product that does not saturate
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def needs_reduced_range(cpu_flags: frozenset[str] | None) -> bool:
    """7-bit weights unless the CPU is known to have VNNI (unknown flags: the safe choice)."""
    return cpu_flags is None or not (cpu_flags & VNNI_FLAGS)


def cpu_flags() -> frozenset[str] | None:
    """This CPU's feature flags from /proc/cpuinfo; None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def _feeds(crops: np.ndarray, identities: np.ndarray, seed: int) -> list[dict[str, np.ndarray]]:
    """One sampler feed per crop: the crop, its identity (F, R, D), fixed noise."""
    noise = np.random.default_rng(seed).standard_normal((len(crops), 3, *crops.shape[1:3])).astype(np.float32)
    return [dict(zip(INPUTS, (crops_to_float(c[None]), i[None].astype(np.float32), n[None]), strict=True))
            for c, i, n in zip(crops, identities, noise, strict=True)]


def _modes(crops: np.ndarray, null_identity: np.ndarray, identities: np.ndarray | None) -> dict[str, np.ndarray]:
    """The identities each mode runs: generic (the null identity) and, when known, personalised."""
    modes = {"generic": np.repeat(null_identity[None], len(crops), 0)}
    if identities is not None:
        if identities.shape != modes["generic"].shape:
            raise EngineError(f"identities {identities.shape} do not fit this sampler ({modes['generic'].shape})")
        modes["personalized"] = identities
    return modes


class _Reader(CalibrationDataReader):
    """Feeds one face at a time, in every mode the product runs: real degraded crops, fixed noise."""

    def __init__(self, crops: np.ndarray, modes: dict[str, np.ndarray], seed: int = 0) -> None:
        self._items = [f for ids in modes.values() for f in _feeds(crops, ids, seed)]
        self._i = 0

    def get_next(self) -> dict | None:
        if self._i >= len(self._items):
            return None
        self._i += 1
        return self._items[self._i - 1]


def _outputs(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    return float_to_crops(np.concatenate([sess.run([OUTPUT], f)[0] for f in feeds]))


def quality_vs_fp32(fp32: Path, variant: Path, crops: np.ndarray, identities: np.ndarray | None = None,
                    seed: int = 1) -> dict:
    """PSNR (dB) of the variant's uint8 output against the fp32 graph's, per crop and mode.

    ``identities`` (F, R, D): the crops' own people, encoded from their references; without them
    only the generic mode is checked (and the report says so).
    """
    modes = _modes(crops, info_from_onnx(fp32).null_identity, identities)
    report: dict = {"crops": len(crops), "modes": list(modes)}
    for mode, ids in modes.items():
        feeds = _feeds(crops, ids, seed)
        # PSNR per crop, as enhancer.metrics.psnr computes it (that module brings the face detector with it)
        err = (_outputs(fp32, feeds).astype(np.float64) - _outputs(variant, feeds)) ** 2
        with np.errstate(divide="ignore"):  # an identical crop is inf dB
            ps = 10.0 * np.log10(255.0**2 / err.mean(axis=(1, 2, 3)))
        report[f"{mode}_min_db"] = float(min(ps))
        report[f"{mode}_mean_db"] = float(np.mean(ps))
    report["psnr_min_db"] = min(report[f"{m}_min_db"] for m in modes)
    return report


def quantize_int8(fp32: Path | str, out: Path | str, calib: np.ndarray, check: np.ndarray,
                  min_psnr: float = MIN_PSNR_DB, calib_identities: np.ndarray | None = None,
                  check_identities: np.ndarray | None = None, reduce_range: bool | None = None) -> dict:
    """Write a static int8 (QDQ, per-channel conv weights) copy of ``fp32``; refuse it if quality drops.

    Identities (F, R, D) of the crops' own people add the personalised mode to calibration and
    to the check; the generic mode (null identity) always runs. ``reduce_range`` (7-bit weights)
    defaults to this CPU's need (``needs_reduced_range``).
    """
    if reduce_range is None:
        reduce_range = needs_reduced_range(cpu_flags())
    fp32, out = Path(fp32), Path(out)
    info = info_from_onnx(fp32)
    # The null identity's spatial map is all zeros: calibrated on it alone, the map's convolutions
    # would get a zero activation range and quantise every person's map away. They are tiny (1x1),
    # so they stay fp32 whatever the calibration set.
    fp32_proto = onnx.load(str(fp32), load_external_data=False)
    keep_fp32 = [n.name for n in fp32_proto.graph.node
                 if n.op_type == "Conv" and ("/spatial_" in n.name or "/ref_up" in n.name)]
    tmp_pre = out.with_name(out.name + f".pre{os.getpid()}")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        reader = _Reader(calib, _modes(calib, info.null_identity, calib_identities))
        with quiet():  # the quantiser prints progress to stdout
            quant_pre_process(str(fp32), str(tmp_pre), skip_symbolic_shape=True)
            quantize_static(str(tmp_pre), str(tmp), reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=reduce_range,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv"], nodes_to_exclude=keep_fp32,
                            calibrate_method=CalibrationMethod.Percentile)
        report = {**quality_vs_fp32(fp32, tmp, check, check_identities), "weight_bits": 7 if reduce_range else 8}
        if report["psnr_min_db"] < min_psnr:
            raise EngineError(f"int8 quantisation loses quality ({report['psnr_min_db']:.1f} dB < {min_psnr} dB "
                              f"vs fp32 on real crops, {'/'.join(report['modes'])}); use fp32")
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


def encode_references(fp32: Path | str, refs: np.ndarray, weights: Path | str | None = None) -> np.ndarray | None:
    """Identities (F, R, D) of reference sets (F, K, S, S, 3), by the encoder this export was made
    with: ``weights`` if given, else a packaged model with the same encoder id. None if no weight
    file at hand has that encoder (an .onnx from elsewhere): then only the generic mode is checked.
    """
    want = info_from_onnx(fp32).encoder_id
    candidates = [Path(weights)] if weights else [WEIGHTS_DIR / f"{k}.safetensors" for k in ("student", "teacher")]
    for path in candidates:
        if not path.is_file():
            continue
        model, meta = load_model(path)
        if meta["encoder_id"] != want:
            continue
        return np.stack([compute_identity(model, r) for r in refs])  # as enrollment makes them
    return None


def int8_path(fp32: Path) -> Path:
    """Where the int8 copy of an exported sampler is cached: by the graph's hash, QUANT_VERSION and
    the weight bits this CPU needs (a home moved to a CPU without VNNI makes its own copy)."""
    bits = "-w7" if needs_reduced_range(cpu_flags()) else ""
    return cache_dir("engines") / f"{fp32.stem}-int8-{file_sha256(fp32)[:12]}-q{QUANT_VERSION}{bits}.onnx"


def cached_int8(fp32: Path | str, weights: Path | str | None = None, calibration: Calibration | None = None,
                n_calib: int = 32, n_check: int = 8) -> Path:
    """The quality-checked int8 variant of an exported sampler, made once from the real crops and
    identities ``calibration`` gives (``weights``: the file the export came from, default the
    packaged ones); without ``calibration`` only an int8 copy made before can be had."""
    fp32 = Path(fp32)
    path = int8_path(fp32)
    if not path.is_file():
        if calibration is None:
            raise EngineError(f"no int8 copy of {fp32.name} is cached, and making one needs real faces to calibrate "
                              "on: pass calibration= (enhancer.calibration.personal_crops), as "
                              "'likeness engines build --engine onnxruntime --precision int8' does")
        size = info_from_onnx(fp32).size
        crops, refs = calibration(n_calib + n_check, size=size)
        ids = encode_references(fp32, refs, weights)
        quantize_int8(fp32, path, crops[:n_calib], crops[n_calib:],
                      calib_identities=None if ids is None else ids[:n_calib],
                      check_identities=None if ids is None else ids[n_calib:])
    return path
