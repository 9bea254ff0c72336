"""Inference engines: ONNX export, ONNX Runtime vs torch parity on real faces, selection, errors.

Parity does not depend on training, so without the packaged student these tests build a
randomly initialised Restorer (with its zero-initialised layers re-randomised, else the
generator's output would be trivially zero and parity meaningless).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import engines
from engines import EngineError, available_engines, create_engine, engine_status
from engines.base import crops_to_float, float_to_crops
from engines.identity_sessions import IdentitySessions, SpecialiseConfig, specialised_model
from engines.onnx_export import DEFAULT_EXPORTER, OPSET, cached_onnx, info_from_onnx, op_summary, read_metadata
from engines.onnxruntime_engine import OnnxRuntimeEngine
from engines.torch_engine import TorchEngine, load_model
from enhancer.calibration import degraded_crops, personal_crops
from enhancer.metrics import psnr
from enhancer.models.config import ModelConfig
from enhancer.models.restorer import Restorer
from enhancer.weights import TEACHER_STEPS, WEIGHTS_DIR, export_weights

PACKAGED = WEIGHTS_DIR / "student.safetensors"
PARITY_TOL = 1e-3
INT8_FLOOR_DB = 43.0  # int8 vs fp32, worst crop: packaged student 46.5 dB (VNNI Xeon), 45.8 (AVX2 EPYC); refused < 40


def _random_restorer(seed: int = 0, residual_scale: float = 4.0) -> Restorer:
    """Random init, with zero-initialised layers (residual outputs, null identity) made non-zero.

    residual_scale 4.0 is what training now uses (residual diffusion); 0 is plain x0 diffusion.
    """
    torch.manual_seed(seed)
    model = Restorer(ModelConfig(residual_scale=residual_scale))
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory):
    """A private LIKENESS_HOME so the ONNX cache starts empty and never touches the user's."""
    d = tmp_path_factory.mktemp("likeness-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIKENESS_HOME", str(d))
        yield d


@pytest.fixture(scope="module")
def weights(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged student when present, else random weights in the same file format."""
    if PACKAGED.is_file():
        return PACKAGED
    path = tmp_path_factory.mktemp("weights") / "student.safetensors"
    export_weights(_random_restorer(), path, "student", {"student_steps": 1})
    return path


@pytest.fixture(scope="module")
def crops(shared_data: Path) -> np.ndarray:
    """Three aligned, severely degraded real CelebA crops (distinct identities)."""
    return degraded_crops(3, size=128, root=shared_data)


@pytest.fixture(scope="module")
def torch_engine(weights: Path) -> TorchEngine:
    return TorchEngine.from_weights(weights, device="cpu")


@pytest.fixture(scope="module")
def onnx_path(weights: Path, home: Path) -> Path:
    return cached_onnx(weights)


@pytest.fixture(scope="module")
def ort_engine(onnx_path: Path) -> OnnxRuntimeEngine:
    return OnnxRuntimeEngine(onnx_path, device="cpu")


def _identity(weights: Path, crops: np.ndarray) -> np.ndarray:
    """A real identity: the model's encoding of the crops themselves (one reference each)."""
    model, _ = load_model(weights)
    with torch.inference_mode():
        refs = torch.from_numpy(crops_to_float(crops))[:, None]  # (F, K=1, 3, S, S)
        return model.encode(refs).numpy()


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 128, 128)).astype(np.float32)


# --- the exported graph -------------------------------------------------------------------


def test_onnx_graph_is_one_clean_standard_graph(onnx_path: Path, weights: Path) -> None:
    proto = onnx.load(str(onnx_path))
    onnx.checker.check_model(proto, full_check=True)
    assert {(o.domain or "ai.onnx") for o in proto.opset_import} == {"ai.onnx"}, "no custom op domains"
    assert proto.opset_import[0].version >= 18
    ops = op_summary(onnx_path)
    print(f"\nops: {ops}")
    assert read_metadata(onnx_path)["exporter"] == DEFAULT_EXPORTER == "legacy"
    assert ops.get("Conv", 0) > 0 and "GroupNormalization" not in ops  # GroupNorm as the chain ORT fuses
    assert [i.name for i in proto.graph.input] == ["lq", "identity", "noise"]
    assert [o.name for o in proto.graph.output] == ["restored"]
    for v in (*proto.graph.input, *proto.graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param, f"{v.name}: batch dimension must be dynamic"
    info = info_from_onnx(onnx_path)
    _, meta = load_model(weights)
    assert (info.model_id, info.encoder_id, info.steps) == (meta["model_id"], meta["encoder_id"], 1)
    assert {p.key for p in proto.metadata_props} >= {"model_id", "encoder_id", "steps"}
    assert int({p.key: p.value for p in proto.metadata_props}["opset"]) == OPSET


def test_onnx_export_is_cached(weights: Path, onnx_path: Path) -> None:
    mtime = onnx_path.stat().st_mtime_ns
    assert cached_onnx(weights) == onnx_path and onnx_path.stat().st_mtime_ns == mtime


# --- parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch_on_real_faces(batch: int, crops: np.ndarray, weights: Path,
                                                 torch_engine: TorchEngine, ort_engine: OnnxRuntimeEngine) -> None:
    lq = crops_to_float(crops[:batch])
    ident = _identity(weights, crops[:batch])
    noise = _noise(batch)
    for name, idn in (("personal", ident), ("generic", torch_engine.null_identities(batch))):
        ref = torch_engine.run(lq, idn, noise)
        out = ort_engine.run(lq, idn, noise)
        err = float(np.abs(out - ref).max())
        print(f"\nbatch {batch} {name}: max |ORT - torch| = {err:.2e}")
        assert out.shape == ref.shape == (batch, 3, 128, 128)
        assert err <= PARITY_TOL
        assert float(np.abs(ref - lq).max()) > 1e-2, "output must not be a copy of the input"


def test_dynamo_export_for_tensorrt_is_native_groupnorm_and_matches_torch(
        weights: Path, home: Path, crops: np.ndarray, torch_engine: TorchEngine) -> None:
    """The graph TensorRT is given: GroupNormalization as one op, same numbers as torch."""
    path = cached_onnx(weights, exporter="dynamo")
    ops = op_summary(path)
    assert ops.get("GroupNormalization", 0) > 0 and "InstanceNormalization" not in ops
    assert path != cached_onnx(weights) and read_metadata(path)["exporter"] == "dynamo"
    eng = OnnxRuntimeEngine(path, device="cpu")
    lq, noise = crops_to_float(crops), _noise(3, seed=2)
    ident = torch_engine.null_identities(3)
    err = float(np.abs(eng.run(lq, ident, noise) - torch_engine.run(lq, ident, noise)).max())
    print(f"\ndynamo graph, batch 3: max |ORT - torch| = {err:.2e}")
    assert err <= PARITY_TOL


def test_multistep_plain_export_matches_torch(crops: np.ndarray, home: Path, tmp_path: Path) -> None:
    """Two unrolled DDIM steps in one graph (as the teacher's 8 are), plain x0 parameterisation."""
    weights = tmp_path / "plain.safetensors"
    export_weights(_random_restorer(2, residual_scale=0.0), weights, "student", {"student_steps": 2})
    eng = create_engine("onnxruntime", weights=weights, device="cpu")
    ref = TorchEngine.from_weights(weights, device="cpu")
    assert eng.steps == ref.steps == 2
    lq, noise = crops_to_float(crops), _noise(3, seed=1)
    err = float(np.abs(eng.run(lq, eng.null_identities(3), noise) - ref.run(lq, ref.null_identities(3), noise)).max())
    print(f"\n2 steps, plain, batch 3: max |ORT - torch| = {err:.2e}")
    assert err <= PARITY_TOL


def test_torch_engine_is_the_models_own_sampler(weights: Path, crops: np.ndarray, torch_engine: TorchEngine) -> None:
    model, _ = load_model(weights)
    lq, noise = crops_to_float(crops), _noise(3, seed=4)
    with torch.inference_mode():
        ref = model.sample(torch.from_numpy(lq), None, torch.from_numpy(noise), torch_engine.steps).numpy()
    np.testing.assert_allclose(torch_engine.run(lq, torch_engine.null_identities(3), noise), ref, atol=1e-6)


# --- the restore() contract ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["torch", "onnxruntime"])
def test_restore_without_identity_uses_null_identity(which: str, crops: np.ndarray, torch_engine: TorchEngine,
                                                     ort_engine: OnnxRuntimeEngine) -> None:
    eng = torch_engine if which == "torch" else ort_engine
    noise = _noise(len(crops), seed=2)
    out = eng.restore(crops, None, noise)
    assert out.dtype == np.uint8 and out.shape == crops.shape
    null = np.repeat(eng.null_identity[None], len(crops), 0)
    np.testing.assert_array_equal(out, float_to_crops(eng.run(crops_to_float(crops), null, noise)))
    assert eng.restore(crops[:0], None, noise[:0]).shape == (0, 128, 128, 3)


def test_null_identity_is_the_models(weights: Path, torch_engine: TorchEngine, ort_engine: OnnxRuntimeEngine) -> None:
    model, _ = load_model(weights)
    np.testing.assert_array_equal(torch_engine.null_identity, model.null_identity.numpy())
    np.testing.assert_array_equal(ort_engine.null_identity, model.null_identity.numpy())


def test_restore_rejects_bad_shapes(ort_engine: OnnxRuntimeEngine, crops: np.ndarray) -> None:
    with pytest.raises(EngineError, match="noise"):
        ort_engine.restore(crops, None, _noise(1))
    with pytest.raises(EngineError, match="identity"):
        ort_engine.restore(crops, np.zeros((3, 4, 256), np.float32), _noise(3))
    with pytest.raises(EngineError, match="uint8"):
        ort_engine.restore(crops.astype(np.float32), None, _noise(3))


def test_bf16_torch_stays_close_to_fp32(weights: Path, crops: np.ndarray, torch_engine: TorchEngine) -> None:
    bf16 = TorchEngine.from_weights(weights, device="cpu", precision="bf16")
    noise = _noise(3, seed=3)
    a, b = torch_engine.restore(crops, None, noise), bf16.restore(crops, None, noise)
    worst = min(psnr(x, y) for x, y in zip(a, b, strict=True))
    print(f"\nbf16 vs fp32: worst PSNR {worst:.1f} dB")
    assert worst > 30


def test_steps_default_from_weights(tmp_path: Path, home: Path) -> None:
    model = _random_restorer(1)
    t = tmp_path / "teacher.safetensors"
    s = tmp_path / "student2.safetensors"
    export_weights(model, t, "teacher")
    export_weights(model, s, "student", {"student_steps": 2})
    assert TorchEngine.from_weights(t).steps == TEACHER_STEPS
    assert TorchEngine.from_weights(s).steps == 2
    assert TorchEngine.from_weights(s, steps=3).steps == 3


# --- identity-specialised sessions -----------------------------------------------------------


def test_specialised_graph_folds_the_identity_and_matches(onnx_path: Path, weights: Path, crops: np.ndarray,
                                                          tmp_path: Path) -> None:
    import onnxruntime as ort

    ident = _identity(weights, crops[:1])
    spec = specialised_model(onnx.load(str(onnx_path)), ident[0])
    assert [i.name for i in spec.graph.input] == ["lq", "noise"]
    assert all(v.type.tensor_type.shape.dim[0].dim_value == 1 for v in (*spec.graph.input, *spec.graph.output))
    nodes = {}
    for name, model in (("general", onnx.load(str(onnx_path))), ("specialised", spec)):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(tmp_path / f"{name}.onnx")
        ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        nodes[name] = len(onnx.load(so.optimized_model_filepath).graph.node)
    print(f"\nnodes after ORT's optimisation: {nodes}")
    assert nodes["specialised"] < 0.8 * nodes["general"], "the identity-only part must fold away"
    general = OnnxRuntimeEngine(onnx_path, device="cpu", specialise=None)
    lq, noise = crops_to_float(crops[:1]), _noise(1, seed=5)
    sess = ort.InferenceSession(spec.SerializeToString(), providers=["CPUExecutionProvider"])
    out = sess.run(["restored"], {"lq": lq, "noise": noise})[0]
    assert float(np.abs(out - general.run(lq, ident, noise)).max()) <= 1e-5


def test_identity_sessions_build_on_repeat_and_keep_the_recent() -> None:
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [], "g", [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["batch", 2])
                  for n in ("lq", "identity")], []))
    built: list[bytes] = []

    def build(blob: bytes) -> object:
        built.append(blob)
        return object()

    sessions = IdentitySessions(model, build, SpecialiseConfig(after=3, capacity=2, candidates=2))
    a, b, c, d = (np.full((2, 2), v, np.float32) for v in range(4))
    assert sessions.sessions_for(np.stack([a, a, a])) == [None] * 3  # one call counts once
    assert sessions.sessions_for(a[None]) == [None] and not built
    first = sessions.sessions_for(np.stack([a, b]))
    assert first[0] is not None and first[1] is None and len(built) == 1
    assert sessions.sessions_for(a[None])[0] is first[0] and len(built) == 1  # kept, not rebuilt
    for _ in range(3):
        sessions.sessions_for(b[None])
    assert len(sessions) == 2 and len(built) == 2
    for _ in range(3):
        sessions.sessions_for(c[None])  # a is the least recently used: dropped
    assert len(sessions) == 2 and sessions.sessions_for(a[None]) == [None]
    for x in (d, np.full((2, 2), 4, np.float32)):  # a third candidate forgets the oldest count (a's one)
        sessions.sessions_for(x[None])
    assert sessions.sessions_for(a[None]) == [None] and sessions.sessions_for(a[None]) == [None]
    assert sessions.sessions_for(a[None])[0] is not None


def test_engine_specialises_a_repeated_identity(onnx_path: Path, weights: Path, crops: np.ndarray) -> None:
    eng = OnnxRuntimeEngine(onnx_path, device="cpu")
    general = OnnxRuntimeEngine(onnx_path, device="cpu", specialise=None)
    ident = _identity(weights, crops[:2])
    lq, noise = crops_to_float(crops[:2]), _noise(2, seed=6)
    for _ in range(3):
        out = eng.run(lq[:1], ident[:1], noise[:1])
    assert eng.describe()["identity_specialised"] == 1
    assert float(np.abs(out - general.run(lq[:1], ident[:1], noise[:1])).max()) <= 1e-5
    mixed = eng.run(lq, ident, noise)  # one face on its own graph, the other on the general one
    assert float(np.abs(mixed - general.run(lq, ident, noise)).max()) <= 1e-5
    assert OnnxRuntimeEngine(onnx_path, device="cpu", specialise=None).describe()["identity_specialised"] is None


# --- selection and errors -----------------------------------------------------------------


def test_auto_selects_best_available(weights: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    status = engine_status()
    assert list(status) == ["tensorrt", "onnxruntime", "torch"]
    assert available_engines() == [n for n, why in status.items() if why is None]
    eng = create_engine("auto", weights=weights)
    expected = "tensorrt" if status["tensorrt"] is None else "onnxruntime"
    if expected == "onnxruntime" and torch.cuda.is_available():
        expected = eng.name  # GPU without TensorRT: onnxruntime-gpu or torch CUDA, both valid
    assert eng.name == expected
    assert create_engine("auto", weights=weights, device="cpu").name == "onnxruntime"
    monkeypatch.setattr(engines, "engine_status",
                        lambda: {"tensorrt": "absent", "onnxruntime": "absent", "torch": None})
    assert create_engine("auto", weights=weights, device="cpu").name == "torch"


def test_unknown_engine_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="unknown engine 'bogus'") as e:
        create_engine("bogus")
    assert "\n" not in str(e.value)


def test_bicubic_comes_from_the_same_registry() -> None:
    """'bicubic' is built by ``create_engine`` like the model backends, takes no model, and is never 'auto'."""
    from engines.bicubic import BicubicEngine

    eng = create_engine("bicubic")
    assert isinstance(eng, BicubicEngine) and eng.size == 128 and "bicubic" not in engine_status()
    assert create_engine("bicubic", size=64).size == 64
    with pytest.raises(EngineError, match="no weights or steps"):
        create_engine("bicubic", steps=2)


def test_unavailable_engine_is_a_clear_error(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "engine_status",
                        lambda: {"tensorrt": "no GPU here", "onnxruntime": None, "torch": None})
    with pytest.raises(EngineError, match="tensorrt engine unavailable: no GPU here") as e:
        create_engine("tensorrt", weights=weights)
    assert "\n" not in str(e.value)


def test_missing_weights_is_a_clear_error(tmp_path: Path) -> None:
    from enhancer.errors import LikenessError

    with pytest.raises(LikenessError, match="not found"):
        create_engine("torch", weights=tmp_path / "nope.safetensors")


def test_cli_list_and_tensorrt_build() -> None:
    run = [sys.executable, "-m", "enhancer.cli", "engines"]
    ls = subprocess.run([*run, "list"], capture_output=True, text=True, timeout=60)
    assert ls.returncode == 0 and ls.stdout.splitlines()[0].startswith("tensorrt")
    if engine_status()["tensorrt"] is not None:
        bd = subprocess.run([*run, "build", "--engine", "tensorrt"], capture_output=True, text=True, timeout=60)
        assert bd.returncode != 0
        assert len(bd.stderr.strip().splitlines()) == 1 and "tensorrt engine unavailable" in bd.stderr


# --- int8 -----------------------------------------------------------------------------------


def test_int8_is_quality_gated(onnx_path: Path, weights: Path, shared_data: Path, tmp_path: Path) -> None:
    """int8 is kept only at or above MIN_PSNR_DB (40 dB) vs fp32 on real crops, generic and personalised, and
    the packaged student's int8 copy stays above INT8_FLOOR_DB (measured 46.5 dB worst crop, 47.2 dB mean),
    both in the quantiser's own report and through the engines a call runs."""
    from engines.quantize import MIN_PSNR_DB, cpu_flags, encode_references, needs_reduced_range, quantize_int8

    faces, refs = personal_crops(12, refs=2, root=shared_data, skip=10)
    ids = encode_references(onnx_path, refs, weights)
    assert ids is not None and ids.shape[0] == 12
    q = tmp_path / "q.onnx"
    report = quantize_int8(onnx_path, q, faces[:8], faces[8:],  # the default floor: MIN_PSNR_DB
                           calib_identities=ids[:8], check_identities=ids[8:])
    print(f"\nint8 vs fp32: {report}")
    assert report["modes"] == ["generic", "personalized"]
    assert report["psnr_min_db"] == min(report["generic_min_db"], report["personalized_min_db"])
    assert report["psnr_min_db"] >= max(MIN_PSNR_DB, INT8_FLOOR_DB)
    assert report["weight_bits"] == (7 if needs_reduced_range(cpu_flags()) else 8)
    # measured again, independently of the report: the int8 engine vs the fp32 engine on the same inputs
    fp32_engine, int8_engine = OnnxRuntimeEngine(onnx_path), OnnxRuntimeEngine(q)
    assert (fp32_engine.precision, int8_engine.precision) == ("fp32", "int8")
    noise = _noise(4, seed=5)
    for mode, ident in (("generic", None), ("personalized", ids[8:])):
        a, b = fp32_engine.restore(faces[8:], ident, noise), int8_engine.restore(faces[8:], ident, noise)
        worst = min(psnr(x, y) for x, y in zip(a, b, strict=True))
        print(f"{mode}: int8 engine vs fp32 engine, worst crop {worst:.2f} dB")
        assert worst >= max(MIN_PSNR_DB, INT8_FLOOR_DB), (mode, worst)
    # the null identity's spatial map is zero: the convolutions reading the map must stay fp32
    # (weights not behind a DequantizeLinear), or calibration can quantise a person's map away
    graph = onnx.load(str(q)).graph
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    spatial = [n for n in graph.node if n.op_type == "Conv" and "/spatial_" in n.name]
    others = [n for n in graph.node if n.op_type == "Conv" and "/spatial_" not in n.name]
    assert spatial and all(n.input[1] not in dq_outputs for n in spatial)
    assert sum(n.input[1] in dq_outputs for n in others) > len(others) // 2  # the rest is int8
    # a copy below the floor asked for is refused and not written
    with pytest.raises(EngineError, match="loses quality"):
        quantize_int8(onnx_path, tmp_path / "q2.onnx", faces[:8], faces[8:], min_psnr=report["psnr_min_db"] + 1,
                      calib_identities=ids[:8], check_identities=ids[8:])
    assert not (tmp_path / "q2.onnx").exists()


def test_int8_weights_lose_a_bit_only_where_the_cpu_would_saturate(onnx_path: Path) -> None:
    """Without VNNI the uint8 x int8 products are summed with 16-bit saturation: 7-bit weights there
    (on an AVX2-only EPYC 8-bit gave 41.0 dB vs fp32, 7-bit 45.8 dB); with VNNI, or AMX, all 8 bits."""
    from engines.quantize import cpu_flags, int8_path, needs_reduced_range

    assert needs_reduced_range(frozenset({"avx2", "avx512f", "avx512bw"}))
    assert needs_reduced_range(None)  # flags unknown: the safe choice
    assert not needs_reduced_range(frozenset({"avx2", "avx512_vnni"}))
    assert not needs_reduced_range(frozenset({"avx2", "avx_vnni"}))
    assert not needs_reduced_range(frozenset({"amx_int8", "amx_tile"}))
    flags = cpu_flags()
    assert flags is None or "fpu" in flags  # a real /proc/cpuinfo line was read, not an empty set
    # the cache keeps the two kinds of copy apart, so a home moved between CPUs never reuses the wrong one
    assert int8_path(onnx_path).name.endswith("-w7.onnx") == needs_reduced_range(flags)


def test_int8_calibrates_on_the_callers_faces_or_uses_a_cached_copy(onnx_path: Path) -> None:
    """The engines make no faces: an int8 build asks the caller's ``calibration`` for 32 + 8 crops at the
    sampler's size; without one it is refused in one line, unless an int8 copy is already cached."""
    from engines.quantize import int8_path

    class Asked(Exception):
        pass

    def calibration(n: int, *, size: int) -> tuple[np.ndarray, np.ndarray]:
        raise Asked(n, size)

    with pytest.raises(Asked) as asked:
        create_engine("onnxruntime", weights=onnx_path, precision="int8", calibration=calibration)
    assert asked.value.args == (40, 128)
    with pytest.raises(EngineError, match="calibration") as refused:
        create_engine("onnxruntime", weights=onnx_path, precision="int8")
    assert len(str(refused.value).splitlines()) == 1
    cached = int8_path(onnx_path)
    cached.write_bytes(onnx_path.read_bytes())  # stands in for an int8 copy made before
    try:
        eng = create_engine("onnxruntime", weights=onnx_path, precision="int8")
        assert eng.onnx_path == cached
    finally:
        cached.unlink()


def test_int8_check_without_the_exports_encoder_is_generic_only(onnx_path: Path, shared_data: Path,
                                                                 tmp_path: Path) -> None:
    """An export whose encoder no weight file at hand has cannot be checked personalised; the
    report says which modes were checked rather than claiming both."""
    from engines.quantize import encode_references, quality_vs_fp32

    other = tmp_path / "other.safetensors"
    export_weights(_random_restorer(seed=3), other, "student", {"student_steps": 1})
    faces, refs = personal_crops(2, refs=1, root=shared_data, skip=10)
    assert encode_references(onnx_path, refs, other) is None
    report = quality_vs_fp32(onnx_path, onnx_path, faces)
    assert report["modes"] == ["generic"] and "personalized_min_db" not in report
    with pytest.raises(EngineError, match="do not fit"):
        quality_vs_fp32(onnx_path, onnx_path, faces, np.zeros((2, 5, 256), np.float32))
