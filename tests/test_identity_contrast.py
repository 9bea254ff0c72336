"""The identity InfoNCE term used in teacher training: low when each view matches its own
identity, high when views are swapped, and same-identity rows are not counted as negatives."""

from __future__ import annotations

import math

import numpy as np
import torch

from enhancer.training.loss import identity_contrast


def test_matching_views_score_low_and_swapped_views_high() -> None:
    a = torch.eye(4, 8) * 3 + 0.01 * torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    labels = np.arange(4)
    good = identity_contrast(a, a.clone(), labels, 0.1).item()
    bad = identity_contrast(a, a.roll(1, 0), labels, 0.1).item()
    assert good < 0.01 < math.log(4) < bad


def test_collapsed_encoder_scores_chance() -> None:
    """Every vector the same (what the diffusion loss alone left us with): loss = ln(batch)."""
    a = torch.ones(6, 16)
    assert abs(identity_contrast(a, a, np.arange(6), 0.1).item() - math.log(6)) < 1e-4


def test_same_identity_rows_are_not_negatives() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # rows 0 and 1 are the same person with the same vector: masked, so only row 2 competes
    with_mask = identity_contrast(a, a, np.array([7, 7, 9]), 0.1).item()
    without = identity_contrast(a, a, np.array([7, 8, 9]), 0.1).item()
    assert with_mask < 0.01 and without > 0.3
    assert torch.isfinite(torch.tensor(with_mask))


def test_output_identity_moves_the_image_never_the_encoder() -> None:
    """The output term must train the generator (gradient reaches the restored image) and leave
    the encoder alone (no gradient on its weights), or the encoder could game it by collapsing."""
    from enhancer.models.config import EncoderConfig
    from enhancer.models.identity import IdentityEncoder
    from enhancer.training.loss import output_identity

    torch.manual_seed(0)
    enc = IdentityEncoder(EncoderConfig(widths=(8, 8, 16, 16), dim=32, tokens=2))
    restored = torch.rand(4, 3, 128, 128, requires_grad=True)
    anchor = torch.randn(4, 32, requires_grad=True)
    loss = output_identity(enc, restored * 2 - 1, anchor, np.arange(4), 0.1)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert restored.grad is not None and restored.grad.abs().sum() > 0
    assert anchor.grad is None  # the references' vector is a fixed target too
    assert all(p.grad is None for p in enc.parameters())


def test_output_identity_prefers_the_right_person() -> None:
    """Restoring each face as itself scores lower than restoring it as the next person."""
    from enhancer.models.config import EncoderConfig
    from enhancer.models.identity import IdentityEncoder
    from enhancer.training.loss import output_identity

    torch.manual_seed(1)
    enc = IdentityEncoder(EncoderConfig(widths=(8, 8, 16, 16), dim=32, tokens=2)).eval()
    faces = torch.rand(4, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        anchor = enc(faces[:, None])[:, 0]
        right = output_identity(enc, faces, anchor, np.arange(4), 0.1).item()
        wrong = output_identity(enc, faces.roll(1, 0), anchor, np.arange(4), 0.1).item()
    assert right < wrong


def test_zero_weight_rows_get_no_gradient_and_ones_change_nothing() -> None:
    """The output term is weighted by degradation preset (mild crops: 0); a zero-weight sample
    must be left entirely alone, and all-ones weights must equal the unweighted term."""
    from enhancer.models.config import EncoderConfig
    from enhancer.models.identity import IdentityEncoder
    from enhancer.training.loss import output_identity

    torch.manual_seed(2)
    enc = IdentityEncoder(EncoderConfig(widths=(8, 8, 16, 16), dim=32, tokens=2))
    restored = torch.rand(4, 3, 128, 128, requires_grad=True)
    anchor = torch.randn(4, 32)
    plain = output_identity(enc, restored, anchor, np.arange(4), 0.1)
    ones = output_identity(enc, restored, anchor, np.arange(4), 0.1, np.ones(4, np.float32))
    assert abs(plain.item() - ones.item()) < 1e-5
    output_identity(enc, restored, anchor, np.arange(4), 0.1, np.array([1, 0, 0.5, 1], np.float32)).backward()
    g = restored.grad.abs().flatten(1).sum(1)
    assert g[1] == 0 and (g[[0, 2, 3]] > 0).all()


def test_preset_weights_follow_each_samples_variant() -> None:
    from enhancer.training.preset_weights import preset_weights

    w = preset_weights(["severe", "severe", "moderate", "mild"], np.array([3, 0, 2, 1]),
                       (("severe", 1.0), ("mild", 0.0)))
    assert w.tolist() == [0.0, 1.0, 1.0, 1.0]  # moderate unnamed: 1


def test_bad_preset_weights_are_refused() -> None:
    import pytest

    from enhancer.commands.train import parse_preset_weights
    from enhancer.errors import InputError

    assert parse_preset_weights("severe=1, mild=0") == (("severe", 1.0), ("mild", 0.0))
    for bad in ("severe", "blurry=1", "mild=-1", "mild=x", "mild=nan"):
        with pytest.raises(InputError):
            parse_preset_weights(bad)


def test_cli_default_output_weights_are_the_training_default() -> None:
    """The CLI spells its default from the constant the configs use, so the two cannot drift."""
    from enhancer.commands.train import parse_preset_weights
    from enhancer.training.distill import DistillConfig
    from enhancer.training.preset_weights import ID_OUTPUT_WEIGHTS, format_preset_weights
    from enhancer.training.teacher import TeacherConfig

    assert parse_preset_weights(format_preset_weights(ID_OUTPUT_WEIGHTS)) == ID_OUTPUT_WEIGHTS
    assert TeacherConfig(pack="p").id_output_weights == DistillConfig(pack="p", teacher="t").id_output_weights \
        == ID_OUTPUT_WEIGHTS


def test_identity_margin_rewards_only_the_margin_and_never_moves_the_generic() -> None:
    """Equal outputs score ln 2 per weighted row; gradient reaches only the personalised rows with
    weight > 0, never the generic output (the baseline stays fair) nor the encoder; a personalised
    output that is the person's own face scores lower than one that is someone else's."""
    from enhancer.models.config import EncoderConfig
    from enhancer.models.identity import IdentityEncoder
    from enhancer.training.loss import identity_margin

    torch.manual_seed(3)
    enc = IdentityEncoder(EncoderConfig(widths=(8, 8, 16, 16), dim=32, tokens=2))
    faces = torch.rand(4, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        anchor = enc(faces[:, None])[:, 0]
    w = np.array([1, 0, 0.5, 1], np.float32)
    restored = faces.clone().requires_grad_(True)
    generic = faces.clone().requires_grad_(True)
    loss = identity_margin(enc, restored, generic, anchor, w, 0.1)
    assert abs(loss.item() - math.log(2) * w.sum() / 4) < 1e-5
    loss.backward()
    g = restored.grad.abs().flatten(1).sum(1)
    assert g[1] == 0 and (g[[0, 2, 3]] > 0).all()
    assert generic.grad is None and all(p.grad is None for p in enc.parameters())
    with torch.no_grad():
        other = faces.roll(1, 0)
        right = identity_margin(enc, faces, other, anchor, np.ones(4, np.float32), 0.1).item()
        wrong = identity_margin(enc, other, faces, anchor, np.ones(4, np.float32), 0.1).item()
    assert right < math.log(2) < wrong
    assert identity_margin(enc, faces, faces, anchor, np.zeros(4, np.float32), 0.1).item() == 0.0
