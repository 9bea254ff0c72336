"""Reference attention, the adversarial terms and the detail dial, on the shipped weights and on
constructed inputs whose right answer is known."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from enhancer.models.config import EncoderConfig
from enhancer.models.reference import ReferenceAttention, slot_indices, split_ref_rows, window_validity
from enhancer.models.restorer import Restorer
from enhancer.training.adversarial import (
    diff_augment,
    feature_matching,
    hinge_d_loss,
    hinge_g_loss,
    hinge_mismatch_loss,
)
from enhancer.training.blend import blend_state, zero_initialised
from enhancer.training.gan import grow_student, jitter_refs
from enhancer.weights import load_restorer


@pytest.fixture(scope="module")
def base() -> Restorer:
    """A model without reference attention (the packaged student if it has none, else rebuilt without)."""
    m, _ = load_restorer(kind="student")
    if m.cfg.encoder.ref_slots == 0:
        return m
    cfg = replace(m.cfg, encoder=replace(m.cfg.encoder, ref_slots=0))
    plain = Restorer(cfg)
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if k in plain.state_dict()
                           and plain.state_dict()[k].shape == v.shape}, strict=False)
    with torch.no_grad():
        plain.null_identity.copy_(m.null_identity[:cfg.encoder.rows()])
    return plain.eval()


def _inputs(n_refs: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    refs = torch.rand(2, n_refs, 3, 128, 128, generator=g) * 2 - 1
    lq = torch.rand(2, 3, 128, 128, generator=g) * 2 - 1
    return refs, lq, torch.randn(2, 3, 128, 128, generator=g)


def test_grown_model_starts_as_the_model_it_grew_from(base: Restorer) -> None:
    grown = grow_student(base, 4).eval()
    refs, lq, noise = _inputs(3)
    with torch.no_grad():
        a, b = base.encode(refs), grown.encode(refs)
        assert b.shape[1] == base.identity_shape()[0] + grown.cfg.encoder.ref_rows()
        assert torch.allclose(a, b[:, :a.shape[1]], atol=1e-5)
        out_a, out_b = base.restore(lq, a, noise, 1), grown.restore(lq, b, noise, 1)
    assert torch.allclose(out_a, out_b, atol=1e-5)
    # once the attention's output moves, the references' own pixels reach the output
    with torch.no_grad():
        for name, p in grown.named_parameters():
            if ".ref_up." in name and ".out.weight" in name:
                p.normal_(0, 0.05)
        other = refs.flip(1)  # the same photos in another order fill the slots differently
        moved = grown.restore(lq, grown.encode(refs), noise, 1)
        assert not torch.allclose(moved, out_a, atol=1e-3)
        assert not torch.allclose(moved, grown.restore(lq, grown.encode(other), noise, 1), atol=1e-4)


def test_slots_repeat_the_real_references_in_order() -> None:
    mask = torch.tensor([[True, False, False], [True, True, False], [True, True, True]])
    assert slot_indices(mask, 4).tolist() == [[0, 0, 0, 0], [0, 1, 0, 1], [0, 1, 2, 0]]


def test_reference_rows_split_back_into_their_maps() -> None:
    cfg = EncoderConfig(ref_slots=2, dim=64, ref_sides=(32, 16), ref_dims=(16, 32))
    base_rows = torch.randn(3, 7, 64)
    maps = {32: torch.randn(3, 2, 32, 32, 32), 16: torch.randn(3, 2, 64, 16, 16)}
    rows = torch.cat([maps[32].reshape(3, -1), maps[16].reshape(3, -1)], 1).reshape(3, -1, 64)
    assert rows.shape[1] == cfg.ref_rows()
    rest, back = split_ref_rows(torch.cat([base_rows, rows], 1), cfg)
    assert torch.equal(rest, base_rows) and all(torch.equal(back[s], maps[s]) for s in maps)


def test_attention_never_reads_the_padding_around_a_reference() -> None:
    """Values are 1 everywhere inside the reference; keys make in-map logits very negative, so
    without the validity mask the padding (logit 0, value 0) would take the weight at the borders."""
    att = ReferenceAttention(8, 4, window=3, groups=4, side=6)
    with torch.no_grad():
        att.q.weight.zero_()
        att.q.bias.fill_(1.0)
        att.k_norm.weight.fill_(0.0)
        att.k_norm.bias.fill_(-50.0)  # every in-map key: q.k = -100 / sqrt(4)... far below a padded 0
        att.out.weight.copy_(torch.eye(8, 4)[:, :, None, None])
    x = torch.zeros(1, 8, 6, 6)
    kv = torch.cat([torch.randn(1, 2, 4, 6, 6), torch.ones(1, 2, 4, 6, 6)], dim=2)
    y = att(x, kv)
    assert torch.allclose(y[0, :4], torch.ones(4, 6, 6), atol=1e-4)
    valid = window_validity(6, 6, 3, 2, torch.device("cpu"), torch.float32)
    assert valid.shape == (1, 18, 6, 6) and (valid[0, :, 0, 0] < 0).sum() == 10  # 5 of 9 offsets, 2 slots


def test_attention_prefers_the_reference_that_matches() -> None:
    """Two slots: the one whose keys agree with the query contributes its value."""
    att = ReferenceAttention(4, 4, window=1, groups=4, side=5)
    with torch.no_grad():
        att.norm = torch.nn.Identity()
        att.q.weight.copy_(torch.eye(4)[:, :, None, None] * 10)
        att.q.bias.zero_()
        att.k_norm = torch.nn.Identity()
        att.out.weight.copy_(torch.eye(4)[:, :, None, None])
        att.out.bias.zero_()
    x = torch.zeros(1, 4, 5, 5)
    x[:, 0] = 1.0
    k = torch.zeros(1, 2, 4, 5, 5)
    k[:, 0, 0] = 1.0  # slot 0 agrees with the query
    k[:, 1, 1] = 1.0
    v = torch.stack([torch.full((4, 5, 5), 3.0), torch.full((4, 5, 5), -3.0)])[None]
    y = att(x, torch.cat([k, v], dim=2)) - x
    assert (y > 2.5).all()


def test_diff_augment_moves_a_scene_as_one() -> None:
    g = torch.Generator().manual_seed(0)
    face = torch.rand(4, 3, 32, 32) * 2 - 1
    out = diff_augment(torch.cat([face, face, face], 1), g, groups=3)
    a, b, c = out.split(3, 1)
    assert torch.equal(a, b) and torch.equal(b, c)  # one colour change, shift and cutout per scene
    assert not torch.allclose(a[0], a[1]) and not torch.allclose(a, face)
    again = diff_augment(torch.cat([face] * 3, 1), torch.Generator().manual_seed(0), groups=3)
    assert torch.equal(out, again)
    assert (out == 0).flatten(1).float().mean(1).min() > 0.2  # a cutout of half the side in every sample


def test_hinge_and_feature_matching() -> None:
    real = [([torch.ones(2, 3, 4, 4)], torch.full((2, 1, 4, 4), 2.0))]
    fake = [([torch.zeros(2, 3, 4, 4, requires_grad=True)], torch.full((2, 1, 4, 4), -2.0))]
    assert hinge_d_loss(real, fake).item() == 0.0  # both beyond the margin
    assert hinge_d_loss(fake, real).item() == pytest.approx(6.0)
    assert hinge_g_loss(fake).item() == pytest.approx(2.0)
    fm = feature_matching(real, fake)
    assert fm.item() == pytest.approx(1.0)
    fm.backward()
    assert fake[0][0][0].grad is not None


def test_identity_aware_discriminator_judges_against_the_given_identity() -> None:
    from enhancer.models.discriminator import DiscriminatorConfig, MultiScaleDiscriminator

    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(DiscriminatorConfig(identity_dim=16)).eval()
    x, ident = torch.randn(2, 9, 32, 32), torch.randn(2, 16)
    a = disc(x, ident)
    b = disc(x, ident.roll(1, 0))
    assert [t.shape for t in a[0][0]] == [t.shape for t in b[0][0]]
    assert all(torch.equal(fa, fb) for fa, fb in zip(a[0][0], b[0][0], strict=True))  # features: image only
    assert not torch.allclose(a[0][1], b[0][1])  # the logits depend on whose identity it is
    with pytest.raises(ValueError, match="identity"):
        disc(x)
    plain = MultiScaleDiscriminator(DiscriminatorConfig()).eval()
    assert torch.equal(plain(x)[0][1], plain(x, ident)[0][1])  # image-only: an identity changes nothing


def test_mismatch_loss_counts_only_mismatched_rows() -> None:
    wrong = [([], torch.tensor([-3.0, 0.0, 1.0]).reshape(3, 1, 1, 1))]
    assert hinge_mismatch_loss(wrong, torch.tensor([True, False, False])).item() == 0.0  # beyond the margin
    assert hinge_mismatch_loss(wrong, torch.tensor([False, True, True])).item() == pytest.approx(1.5)
    assert hinge_mismatch_loss(wrong, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_blend_is_a_dial_between_the_two_models(base: Restorer) -> None:
    sharp = grow_student(base, 4)
    with torch.no_grad():
        for p in sharp.generator.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    zero = zero_initialised(sharp)
    assert zero and all(".ref_up." in k for k in zero)
    s0 = blend_state(base.state_dict(), sharp.state_dict(), 0.0, zero)
    s1 = blend_state(base.state_dict(), sharp.state_dict(), 1.0, zero)
    m0 = grow_student(base, 4).eval()
    m0.load_state_dict(s0)
    refs, lq, noise = _inputs(2, seed=1)
    with torch.no_grad():
        assert torch.allclose(m0.restore(lq, m0.encode(refs), noise, 1),
                              base.restore(lq, base.encode(refs), noise, 1), atol=1e-5)
    assert all(torch.equal(s1[k].float(), v.float()) for k, v in sharp.state_dict().items())
    half = blend_state(base.state_dict(), sharp.state_dict(), 0.5, zero)
    k = "generator.stem.weight"
    assert np.allclose(half[k].numpy(), ((base.state_dict()[k] + sharp.state_dict()[k]) / 2).numpy(), atol=1e-6)


def test_self_reference_jitter_moves_only_reference_zero_of_chosen_rows() -> None:
    """The curriculum's displaced self-reference: chosen rows get reference 0 moved (not copied in
    place), other rows and other references are untouched, values stay in range."""
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(3, 2, 3, 32, 32, generator=g) * 2 - 1
    rows = torch.tensor([True, False, True])
    out = jitter_refs(refs, rows, 3.0, torch.Generator().manual_seed(1))
    assert torch.equal(out[1], refs[1]) and torch.equal(out[:, 1], refs[:, 1])
    assert (out[rows, 0] - refs[rows, 0]).abs().mean() > 0.05
    assert out.min() >= -1 and out.max() <= 1
