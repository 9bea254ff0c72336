"""Growing the identity pathway from trained weights (`train teacher --attn-min-level`): the
grown model must compute exactly what the trained one did, and weights that would be dropped or
reshaped are refused."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from enhancer.errors import ModelError
from enhancer.models.generator import CrossAttention
from enhancer.models.restorer import Restorer, load_grown
from enhancer.weights import WEIGHTS_DIR, load_restorer


def _with_level(model: Restorer, level: int) -> Restorer:
    cfg = model.cfg
    return Restorer(replace(cfg, generator=replace(cfg.generator, attn_min_level=level)))


def test_grown_teacher_computes_the_same_and_has_the_new_layers() -> None:
    src, _ = load_restorer(None, kind="teacher")
    grown = _with_level(src, 0)
    added = load_grown(grown, src)
    n_attn = lambda m: sum(isinstance(x, CrossAttention) for x in m.modules())  # noqa: E731
    assert n_attn(grown) == n_attn(src) + 4 and added  # down and up at 64x64 and 32x32
    g = torch.Generator().manual_seed(0)
    x, lq = torch.randn(2, 3, 128, 128, generator=g), torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    t = torch.tensor([0.3, 0.9])
    ident = src.encode(lq[:, None])
    with torch.no_grad():
        assert torch.equal(grown.eval()(x, lq, t, ident), src(x, lq, t, ident))
        # and the new layers do take part once they are no longer zero
        for m in grown.modules():
            if isinstance(m, CrossAttention) and m.out.weight.abs().sum() == 0:
                m.out.weight.normal_(0, 0.1)
        assert not torch.allclose(grown(x, lq, t, ident), src(x, lq, t, ident))


def test_weights_that_would_be_dropped_are_refused() -> None:
    src, _ = load_restorer(None, kind="teacher")
    with pytest.raises(ModelError, match="no place"):
        load_grown(_with_level(src, 3), src)  # level 3 has no 16x16 attention for src's weights


def test_cli_refuses_a_shrinking_init_in_one_line_before_reading_the_pack(tmp_path) -> None:
    from test_cli_foundation import assert_one_line_error, run_cli

    pack = tmp_path / "not-a-pack.npz"
    pack.write_bytes(b"never read: the model is built before the pack")
    r = run_cli("train", "teacher", "--pack", pack, "--steps", "1", "--run-dir", tmp_path / "run",
                "--init", WEIGHTS_DIR / "teacher.safetensors", "--attn-min-level", "3")
    assert_one_line_error(r, "no place")
