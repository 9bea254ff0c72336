"""Training can be interrupted at any moment and resumes *exactly*: a run stopped half-way and
resumed ends with the same weights, EMA and optimizer state, bit for bit, as one that never
stopped. Tiny models on a tiny real pack (CelebA crops, real codec degradations) keep it quick."""

from __future__ import annotations

import csv
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import celeba_by_identity
from safetensors import safe_open
from safetensors.torch import load_file

from enhancer.dataprep import PrepareConfig, prepare
from enhancer.models.config import EncoderConfig, GeneratorConfig, ModelConfig
from enhancer.training import distill, teacher
from enhancer.training.data import build_pack, load_pack
from enhancer.weights import load_restorer

TINY = ModelConfig(generator=GeneratorConfig(widths=(8, 8, 8, 8), emb_dim=16, groups=4, heads=1),
                   encoder=EncoderConfig(widths=(8, 8, 8, 8), dim=16, tokens=2), residual_scale=4.0)


@pytest.fixture(scope="module")
def pack(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 identities x 5 real CelebA crops, prepared and packed like the real training data."""
    d = tmp_path_factory.mktemp("pack")
    by_id = celeba_by_identity(shared_data)
    chosen = [i for i in sorted(by_id) if len(by_id[i]) >= 6][:6]
    src = d / "src"
    src.mkdir()
    with (src / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "identity"])
        for ident in chosen:
            for p in by_id[ident][:5]:
                (src / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shared_data / "celeba" / p, src / p)  # temp dir only
                w.writerow([p, ident])
    prepare(src, d / "prepared", PrepareConfig(workers=1))
    build_pack(d / "prepared", d / "pack.npz", seed=0, workers=1)
    return d / "pack.npz"


class _StopAfter:
    """Stands in for the SIGTERM flag: reads False ``n`` times, then True (a signal mid-run)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def stop(self) -> bool:
        self.n -= 1
        return self.n < 0


def _same_checkpoints(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), f"{k} differs after resume"


def _interrupted(monkeypatch: pytest.MonkeyPatch, module, train, cfg, at: int) -> dict:
    with monkeypatch.context() as m:
        m.setattr(module, "StopFlag", lambda: _StopAfter(at))
        first = train(cfg)
    assert first["steps"] == at
    return train(cfg)  # the same command again: resumes from the checkpoint


def test_teacher_resumes_exactly(pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)

    def cfg(run: str, **terms) -> teacher.TeacherConfig:
        return teacher.TeacherConfig(pack=str(pack), run_dir=str(tmp_path / run), model=TINY, batch=4, steps=8,
                                     warmup=3, n_val=1, log_every=1, id_output=0.1, ckpt_minutes=60, **terms)

    whole = teacher.train_teacher(cfg("whole"))
    resumed = _interrupted(monkeypatch, teacher, teacher.train_teacher, cfg("resumed"), 3)
    assert whole["steps"] == resumed["steps"] == 8
    _same_checkpoints(tmp_path / "whole" / "ckpt.safetensors", tmp_path / "resumed" / "ckpt.safetensors")
    assert whole["model_id"] == resumed["model_id"]
    # the margin term (its generic pass draws no random numbers): exact on resume, and it acts
    m_whole = teacher.train_teacher(cfg("margin-whole", id_margin=0.5))
    m_resumed = _interrupted(monkeypatch, teacher, teacher.train_teacher, cfg("margin-resumed", id_margin=0.5), 5)
    _same_checkpoints(tmp_path / "margin-whole" / "ckpt.safetensors",
                      tmp_path / "margin-resumed" / "ckpt.safetensors")
    assert m_whole["model_id"] == m_resumed["model_id"] != whole["model_id"]
    assert m_whole["final_id_margin"] > 0
    # starved inputs (drawn from the checkpointed generator): exact on resume, and they act
    s_whole = teacher.train_teacher(cfg("starve-whole", starve=0.5))
    s_resumed = _interrupted(monkeypatch, teacher, teacher.train_teacher, cfg("starve-resumed", starve=0.5), 4)
    _same_checkpoints(tmp_path / "starve-whole" / "ckpt.safetensors",
                      tmp_path / "starve-resumed" / "ckpt.safetensors")
    assert s_whole["model_id"] == s_resumed["model_id"] != whole["model_id"]


def test_distill_resumes_exactly(pack: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    t = teacher.train_teacher(teacher.TeacherConfig(pack=str(pack), run_dir=str(tmp_path / "t"), model=TINY,
                                                    batch=4, steps=2, n_val=1))
    assert t["steps"] == 2

    def cfg(run: str, **terms: float) -> distill.DistillConfig:
        return distill.DistillConfig(pack=str(pack), teacher=str(tmp_path / "t" / "teacher.safetensors"),
                                     run_dir=str(tmp_path / run), teacher_steps=2, batch=4, steps=6, warmup=2,
                                     n_val=1, log_every=1, ckpt_minutes=60, **terms)

    whole = distill.train_distill(cfg("whole"))
    resumed = _interrupted(monkeypatch, distill, distill.train_distill, cfg("resumed"), 2)
    assert whole["steps"] == resumed["steps"] == 6
    _same_checkpoints(tmp_path / "whole" / "ckpt.safetensors", tmp_path / "resumed" / "ckpt.safetensors")
    assert whole["model_id"] == resumed["model_id"]
    # the optional ground-truth, output-identity and margin terms: still exact on resume, and they act
    terms = {"gt_weight": 1.0, "id_output": 0.5, "id_margin": 0.5}
    t_whole = distill.train_distill(cfg("terms-whole", **terms))
    t_resumed = _interrupted(monkeypatch, distill, distill.train_distill, cfg("terms-resumed", **terms), 3)
    _same_checkpoints(tmp_path / "terms-whole" / "ckpt.safetensors", tmp_path / "terms-resumed" / "ckpt.safetensors")
    assert t_whole["model_id"] == t_resumed["model_id"] != whole["model_id"]
    # the margin's anchor matters: the clean target photo and the references train differently
    refs = distill.train_distill(cfg("terms-refs", **terms, margin_anchor="references"))
    assert refs["model_id"] != t_whole["model_id"]
    # 0 steps exports the teacher itself as the student at --student-steps (how the shipped
    # student was made: the teacher's own 1-step sampler measured above its distilled students)
    zero = distill.train_distill(replace(cfg("zero"), steps=0, teacher_steps=1, student_steps=1))
    t_sd = load_file(str(tmp_path / "t" / "teacher.safetensors"))
    z_sd = load_file(str(tmp_path / "zero" / "student.safetensors"))
    assert t_sd.keys() == z_sd.keys() and all(torch.equal(t_sd[k], z_sd[k]) for k in t_sd)
    _, z_meta = load_restorer(tmp_path / "zero" / "student.safetensors")
    assert zero["steps"] == 0 and z_meta["kind"] == "student" and z_meta["extra"]["student_steps"] == 1
    assert z_meta["model_id"] == "student-" + t["model_id"].removeprefix("teacher-")


def test_pack_variants_option(pack: Path, tmp_path: Path) -> None:
    """`train pack --variants` stores that many distinct degradations per photo, named by preset;
    a bad count is a one-line error and writes no pack."""
    from test_cli_foundation import assert_one_line_error, run_cli

    out = tmp_path / "p.npz"
    r = run_cli("train", "pack", "--data", pack.parent / "prepared", "--out", out, "--workers", "1",
                "--variants", "severe=1,mild=2")
    assert r.returncode == 0, r.stderr
    pool = load_pack(out, torch.device("cpu"))
    assert pool.presets == ["severe", "mild", "mild"]
    assert pool.lq[0].shape[-1] < pool.lq[1].shape[-1]  # severe is smaller than mild
    assert not torch.equal(pool.lq[1], pool.lq[2])  # two mild copies are two different draws
    for bad in ("severe=0", "severe=1.5", "blurry=2", "call-blurry=1"):
        r = run_cli("train", "pack", "--data", pack.parent / "prepared", "--out", tmp_path / "bad.npz",
                    "--variants", bad)
        assert_one_line_error(r, "--variants", bad)
        assert not (tmp_path / "bad.npz").exists()


def test_call_variants_are_stored_at_full_size_and_weighted_as_their_preset(pack: Path, tmp_path: Path) -> None:
    """A ``call-`` variant (the face degraded as a call degrades its frame) has no small size of its
    own: it is stored at the crop's size, comes out of a batch unchanged, and takes its preset's
    per-preset weights."""
    from enhancer.training.data import RefSampler, make_batch
    from enhancer.training.preset_weights import ID_OUTPUT_WEIGHTS, preset_weights

    out = tmp_path / "c.npz"
    build_pack(pack.parent / "prepared", out, seed=0, workers=1, variants=(("severe", 1), ("call-moderate", 1)))
    pool = load_pack(out, torch.device("cpu"))
    assert pool.presets == ["severe", "call-moderate"]
    assert pool.lq[1].shape[-1] == pool.hq.shape[-1] > pool.lq[0].shape[-1]
    assert float(np.load(out)["scales"][1]) == 1.0
    draw = list(RefSampler(pool, 4, seed=0).sample(6))
    draw[3] = np.ones(6, np.int64)  # every sample from the call variant
    draw[4] = np.zeros(6, bool)  # no flips, to compare with the stored images
    _, lq, _, _ = make_batch(pool, tuple(draw), pool.hq.shape[-1], torch.device("cpu"))
    stored = pool.lq[1][torch.as_tensor(draw[0])].float() / 127.5 - 1
    assert torch.allclose(lq, stored, atol=1e-5)
    w = preset_weights(pool.presets, np.array([0, 1]), ID_OUTPUT_WEIGHTS)
    assert w.tolist() == [dict(ID_OUTPUT_WEIGHTS)["severe"], dict(ID_OUTPUT_WEIGHTS)["moderate"]]


def test_references_are_mirrored_with_their_target_unless_asked_otherwise(pack: Path) -> None:
    """The identity map reads references position by position, so a reference must be mirrored
    exactly when its target is ("with-target", the default); "independent" (stages 1-9) flips
    each by its own coin. Checked on the decoded tensors, not only the sampler's flags."""
    from enhancer.training.data import RefSampler, make_batch

    pool = load_pack(pack, torch.device("cpu"))
    flips = {}
    for mode in ("with-target", "independent"):
        draw = RefSampler(pool, 5, seed=3, ref_flip=mode).sample(32, (2, 4))
        tgt, refs, mask, _, flip, ref_flip = draw
        _, _, r, m = make_batch(pool, draw, pool.hq.shape[-1], torch.device("cpu"))
        raw = pool.hq[torch.as_tensor(refs)].float() / 127.5 - 1.0
        mirrored = torch.isclose(r, raw.flip(-1)).all(dim=(2, 3, 4)) & ~torch.isclose(r, raw).all(dim=(2, 3, 4))
        assert torch.equal(mirrored[m], torch.as_tensor(ref_flip)[m])  # the flags are what was applied
        flips[mode] = (ref_flip[mask], np.repeat(flip[:, None], 5, axis=1)[mask])
    assert np.array_equal(*flips["with-target"]) and flips["with-target"][1].any() and not flips["with-target"][1].all()
    assert not np.array_equal(*flips["independent"])
    with pytest.raises(ValueError, match="ref_flip"):
        RefSampler(pool, 5, seed=0, ref_flip="sometimes")


def test_self_reference_share_puts_the_target_among_its_references(pack: Path) -> None:
    """``--self-ref`` (a diagnostic) makes the target its own first reference in that share of
    samples; the default never does, and keeps the sampler's random stream unchanged."""
    from enhancer.training.data import RefSampler

    pool = load_pack(pack, torch.device("cpu"))
    tgt, refs, mask, *_ = RefSampler(pool, 5, seed=4, self_ref=1.0).sample(32, (1, 3))
    assert (refs[:, 0] == tgt).all() and mask[:, 0].all()
    tgt0, refs0, *_ = RefSampler(pool, 5, seed=4).sample(32, (1, 3))
    assert not (refs0[mask] == np.repeat(tgt0[:, None], 5, axis=1)[mask]).any()  # never the target
    assert np.array_equal(tgt0, tgt) and np.array_equal(refs0[:, 1:], refs[:, 1:])
    half = RefSampler(pool, 5, seed=4, self_ref=0.5).sample(64, (1, 3))
    share = (half[1][:, 0] == half[0]).mean()
    assert 0.25 < share < 0.75


def test_starved_inputs_keep_only_a_16_pixel_face() -> None:
    """``--starve-input``: chosen rows lose everything finer than 16 px (a 16-px image comes back
    unchanged through the same down/up, a detailed one does not), other rows are left bit for bit."""
    from enhancer.training.data import STARVE_SIDE, starve_input

    g = torch.Generator().manual_seed(0)
    detailed = torch.rand(3, 3, 128, 128, generator=g) * 2 - 1
    which = torch.tensor([True, False, True])
    out = starve_input(detailed, which)
    assert torch.equal(out[1], detailed[1])
    assert (out[0] - detailed[0]).abs().mean() > 0.3  # the pixel noise is gone
    again = starve_input(out, torch.ones(3, dtype=torch.bool))
    assert (again[0] - out[0]).abs().mean() < 0.05 * (out[0] - detailed[0]).abs().mean()
    assert out[0].std() < 0.2 * detailed[0].std() and STARVE_SIDE == 16
    assert out.min() >= -1 and out.max() <= 1
    with pytest.raises(ValueError, match="starve"):
        teacher.TeacherConfig(pack="p", run_dir="r", starve=1.5)


def test_teacher_records_the_model_it_built(pack: Path, tmp_path: Path) -> None:
    """Overrides such as ``--spatial-identity`` change the model; the log's start line and the
    weights' ``train_cfg`` must describe that model, not the default the config started from."""
    import json

    torch.set_num_threads(1)
    cfg = teacher.TeacherConfig(pack=str(pack), run_dir=str(tmp_path / "t"), model=TINY, batch=4, steps=1, n_val=1,
                                spatial_identity=16)
    teacher.train_teacher(cfg)
    _, meta = load_restorer(tmp_path / "t" / "teacher.safetensors")
    assert TINY.encoder.spatial != 16
    assert meta["extra"]["train_cfg"]["model"]["encoder"]["spatial"] == 16
    assert meta["extra"]["train_cfg"]["model"] == json.loads(meta["config"])
    start = next(line for line in (tmp_path / "t" / "train.log").read_text().splitlines() if " start " in line)
    assert json.loads(start.split(" start ", 1)[1])["config"]["model"]["encoder"]["spatial"] == 16


def test_gan_resumes_exactly_and_grows_reference_attention(pack: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`likeness train gan`: generator, reference encoder, discriminator, both optimiser groups and
    the augmentation's random stream all come back on resume, bit for bit; the export carries the
    reference slots, keeps the start's held-out people, and its adversarial terms act."""
    from enhancer.training import gan

    torch.set_num_threads(1)
    t = teacher.train_teacher(teacher.TeacherConfig(pack=str(pack), run_dir=str(tmp_path / "t"), model=TINY,
                                                    batch=4, steps=2, n_val=1))
    start = tmp_path / "t" / "teacher.safetensors"

    def cfg(run: str, **terms) -> gan.GanConfig:
        # 4 steps of 2, interrupted after 2 (inside the warm-up): every state is past its first update
        # when it is saved (6 steps of 4 took 4.4 min on a 2-core AVX2 CPU)
        return gan.GanConfig(pack=str(pack), init=str(start), run_dir=str(tmp_path / run), batch=2, steps=4,
                             warmup=3, n_val=1, log_every=1, ckpt_minutes=60, **terms)

    # the identity-aware discriminator (its projection and mismatched-identity term) resumes too
    whole = gan.train_gan(cfg("whole", id_disc=0.5))
    resumed = _interrupted(monkeypatch, gan, gan.train_gan, cfg("resumed", id_disc=0.5), 2)
    assert whole["steps"] == resumed["steps"] == 4
    _same_checkpoints(tmp_path / "whole" / "ckpt.safetensors", tmp_path / "resumed" / "ckpt.safetensors")
    assert whole["model_id"] == resumed["model_id"]
    with safe_open(str(tmp_path / "whole" / "ckpt.safetensors"), "pt") as f:
        assert any(".embed." in k for k in f.keys())
    model, meta = load_restorer(tmp_path / "whole" / "student.safetensors")
    assert model.cfg.encoder.ref_slots == 4 and model.identity_shape()[0] > TINY.encoder.rows()
    assert meta["extra"]["val_identities"] == load_restorer(start)[1]["extra"]["val_identities"]
    no_gan = gan.train_gan(cfg("pixel-only", adversarial=0.0, feature_match=0.0))
    assert no_gan["model_id"] != whole["model_id"]
    assert t["steps"] == 2
