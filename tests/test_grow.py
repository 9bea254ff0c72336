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
        # same up to float summation order (oneDNN may pick other kernels for the grown graph)
        assert torch.allclose(grown.eval()(x, lq, t, ident), src(x, lq, t, ident), atol=1e-5)
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


def _with_spatial(model: Restorer, side: int) -> Restorer:
    cfg = model.cfg
    return Restorer(replace(cfg, encoder=replace(cfg.encoder, spatial=side)))


def _without_spatial(model: Restorer) -> Restorer:
    """The shipped model minus its spatial map: a trained model of the kind the map grows from."""
    cfg = model.cfg
    out = Restorer(replace(cfg, encoder=replace(cfg.encoder, spatial=0)))
    state = {k: v for k, v in model.state_dict().items() if "spatial" not in k}
    state["null_identity"] = state["null_identity"][: out.null_identity.shape[0]]
    out.load_state_dict(state)
    return out.eval()


def test_spatial_identity_map_grows_in_unchanged_and_is_used_in_place() -> None:
    shipped, _ = load_restorer(None, kind="teacher")
    src = _without_spatial(shipped)
    grown = _with_spatial(src, 16).eval()
    added = load_grown(grown, src)
    assert any(k.startswith("encoder.spatial_proj") for k in added)
    assert grown.identity_shape() == (1 + src.cfg.encoder.tokens + 256, src.cfg.encoder.dim)
    assert torch.equal(grown.null_identity[:5], src.null_identity) and not grown.null_identity[5:].any()
    g = torch.Generator().manual_seed(1)
    refs = torch.rand(2, 3, 3, 128, 128, generator=g) * 2 - 1
    mask = torch.tensor([[True, True, False], [True, False, False]])
    x, lq = torch.randn(2, 3, 128, 128, generator=g), torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    t = torch.tensor([0.2, 0.7])
    with torch.no_grad():
        ident_src, ident = src.encode(refs, mask), grown.encode(refs, mask)
        assert ident.shape == (2, *grown.identity_shape())
        assert torch.allclose(ident[:, :5], ident_src, atol=1e-5)  # the old rows are the old identity
        assert torch.allclose(grown(x, lq, t, ident), src(x, lq, t, ident_src), atol=1e-5)
        # padding references never leak into the map: a masked-out slot may hold anything
        refs2 = refs.clone()
        refs2[0, 2] = 5.0
        assert torch.allclose(grown.encode(refs2, mask), ident, atol=1e-6)
        # once the in-place convolutions are trained, the map changes the output, and changes it
        # where it changed: perturbing the map's top-left corner moves the top of the face most
        for conv in [*grown.generator.spatial_down, *grown.generator.spatial_up]:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0, 0.05, generator=g)
        base = grown(x, lq, t, ident)
        moved = ident.clone()
        moved[:, 5:5 + 16 * 4] += 1.0  # first 4 rows of the 16x16 map
        d = (grown(x, lq, t, moved) - base).abs().mean(dim=(0, 1))
        assert d[:32].mean() > 3 * d[-32:].mean()


def test_spatial_side_must_match_an_encoder_level() -> None:
    src, _ = load_restorer(None, kind="teacher")
    with pytest.raises(ValueError, match="sides"):
        _with_spatial(src, 12)


def test_spatial_model_copies_to_another_crop_size() -> None:
    """The bench times crop 256 with the shipped weights in a 256 net (speed does not depend on
    the values): the map's layers are chosen by level, so the copy has exactly the same layers and
    runs, the map resized to each level's side."""
    shipped, _ = load_restorer(None, kind="student")
    big = Restorer(replace(shipped.cfg, generator=replace(shipped.cfg.generator, size=256))).eval()
    big.load_state_dict(shipped.state_dict())  # strict: no missing, no unexpected keys
    g = torch.Generator().manual_seed(2)
    ident = shipped.encode(torch.rand(1, 2, 3, 128, 128, generator=g) * 2 - 1)
    x, lq = torch.randn(1, 3, 256, 256, generator=g), torch.rand(1, 3, 256, 256, generator=g) * 2 - 1
    with torch.no_grad():
        out = big(x, lq, torch.tensor([0.5]), ident)
    assert out.shape == (1, 3, 256, 256) and torch.isfinite(out).all()


def test_fine_identity_map_grows_in_unchanged_and_is_used_in_place() -> None:
    """The fine (32x32) map, stored space-to-depth after the coarse map's rows: the grown model
    computes what the shipped one did, and once its convolutions are trained a change to the
    fine map's top rows moves the top of the face, at 64x64 detail."""
    src, _ = load_restorer(None, kind="teacher")
    cfg = src.cfg
    grown = Restorer(replace(cfg, encoder=replace(cfg.encoder, spatial_fine=32))).eval()
    added = load_grown(grown, src)
    assert any(k.startswith("encoder.fine_proj") for k in added)
    assert any(k.startswith("generator.spatial_fine_down.0") for k in added)  # 64x64 too
    n_old = src.identity_shape()[0]
    assert grown.identity_shape() == (n_old + 256, cfg.encoder.dim)
    assert torch.equal(grown.null_identity[:n_old], src.null_identity) and not grown.null_identity[n_old:].any()
    g = torch.Generator().manual_seed(3)
    refs = torch.rand(2, 3, 3, 128, 128, generator=g) * 2 - 1
    mask = torch.tensor([[True, True, True], [True, False, False]])
    x, lq = torch.randn(2, 3, 128, 128, generator=g), torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    t = torch.tensor([0.4, 0.8])
    with torch.no_grad():
        ident_src, ident = src.encode(refs, mask), grown.encode(refs, mask)
        assert ident.shape == (2, *grown.identity_shape())
        assert torch.allclose(ident[:, :n_old], ident_src, atol=1e-5)
        assert torch.allclose(grown(x, lq, t, ident), src(x, lq, t, ident_src), atol=1e-5)
        # the fine map averages the references position by position, like the coarse one
        one = grown.encode(refs[:1, :1])
        assert not torch.allclose(one[:, n_old:], ident[:1, n_old:], atol=1e-3)
        for conv in [*grown.generator.spatial_fine_down, *grown.generator.spatial_fine_up]:
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.normal_(0, 0.05, generator=g)
        base = grown(x, lq, t, ident)
        moved = ident.clone()
        moved[:, n_old:n_old + 16 * 2] += 1.0  # first 2 rows of 16 space-to-depth cells: image rows 0-3 of 32
        d = (grown(x, lq, t, moved) - base).abs().mean(dim=(0, 1))
        assert d[:16].mean() > 3 * d[-64:].mean()


@pytest.mark.parametrize("flag", ["--self-ref", "--starve-input"])
def test_cli_refuses_a_share_outside_0_1(tmp_path, flag: str) -> None:
    from test_cli_foundation import assert_one_line_error, run_cli

    pack = tmp_path / "not-a-pack.npz"
    pack.write_bytes(b"never read")
    r = run_cli("train", "teacher", "--pack", pack, "--steps", "1", "--run-dir", tmp_path / "run", flag, "1.5")
    assert_one_line_error(r, flag)
