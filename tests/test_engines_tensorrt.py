"""TensorRT engine (FP16 plan from the exported ONNX): runs only where tensorrt and a CUDA GPU exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.tensorrt_engine import unavailable_reason

REASON = unavailable_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(REASON is not None, reason=f"tensorrt engine: {REASON}")]

FP16_TOL = 0.05  # max abs in [-1, 1] after the whole sampler in FP16 vs fp32 torch


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path):
    from engines.onnx_export import cached_onnx
    from engines.tensorrt_engine import TensorRTEngine
    from engines.torch_engine import TorchEngine
    from enhancer.calibration import degraded_crops
    from enhancer.weights import WEIGHTS_DIR, export_weights

    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIKENESS_HOME", str(home))
        weights = WEIGHTS_DIR / "student.safetensors"
        if not weights.is_file():  # parity needs no training: random weights, zero-init layers made non-zero
            import torch

            from enhancer.models.config import ModelConfig
            from enhancer.models.restorer import Restorer

            torch.manual_seed(0)
            model = Restorer(ModelConfig())
            with torch.no_grad():
                for p in model.parameters():
                    if not p.any():
                        p.normal_(0.0, 0.05)
            weights = home / "student.safetensors"
            export_weights(model, weights, "student", {"student_steps": 1})
        onnx_path = cached_onnx(weights, exporter="dynamo")  # what create_engine gives TensorRT
        trt = TensorRTEngine(onnx_path, opt_batch=2, max_batch=4)
        ref = TorchEngine.from_weights(weights, device="cpu")
        yield trt, ref, degraded_crops(5, root=shared_data), onnx_path, home


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_tensorrt_matches_torch(setup, batch: int) -> None:
    from engines.base import crops_to_float

    trt, ref, crops, _, _ = setup
    lq = crops_to_float(crops[:batch])
    noise = np.random.default_rng(batch).standard_normal((batch, 3, 128, 128)).astype(np.float32)
    ident = trt.null_identities(batch)
    err = float(np.abs(trt.run(lq, ident, noise) - ref.run(lq, ident, noise)).max())
    print(f"\nbatch {batch} (max profile 4, 5 is split): max |TRT fp16 - torch fp32| = {err:.3e}")
    assert err < FP16_TOL


def test_tensorrt_plan_is_cached(setup) -> None:
    from engines.tensorrt_engine import build_plan

    trt, _, _, onnx_path, home = setup
    plans = sorted((home / "engines").glob("trt-*.plan"))
    assert len(plans) == 1
    mtime = plans[0].stat().st_mtime_ns
    assert build_plan(onnx_path, opt_batch=2, max_batch=4) == plans[0]
    assert plans[0].stat().st_mtime_ns == mtime
    assert trt.restore(np.zeros((2, 128, 128, 3), np.uint8), None, np.zeros((2, 3, 128, 128), np.float32)).shape == (
        2, 128, 128, 3)
