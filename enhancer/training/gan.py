"""`likeness train gan`: adversarial fine-tuning of the one-step student, with reference attention.

The student (the 1-step sampler of an identity-conditioned diffusion model) is grown with
reference attention (models/reference.py; new layers start at zero, so the start computes what
the student did) and trained on its own one-step output against the truth with
L1 + the discriminator's feature matching + hinge GAN (SPARNet-HD's 100 : 10 : 1 by default), plus
the output identity term (loss.output_identity) so identity stays the objective it was.

Why: every loss the student had is minimised by the posterior mean, so it deblocks but returns
no detail. The GAN term makes it commit to detail; the references, reachable one by one through
attention, are where detail that is this person's can come from, and the discriminator sees the
references' mean too, so detail that does not fit the person is what it learns to reject. With
``id_disc`` it also judges each face against the identity the generator was given and learns that
a real face with another person's identity is fake (models/discriminator.py), so sharpness that
is not this person's stops paying.

Trainable: the generator and the reference encoder; the identity encoder's trunk (whose global
vector, tokens and map the student was trained on) and the null identity stay fixed. Two
learning rates (G 1e-4, D 4e-4), Adam betas (0.5, 0.99), EMA of the generator, identity dropout
kept so the generic mode is trained the same way. Resumable like the other stages.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.discriminator import DiscriminatorConfig, MultiScaleDiscriminator
from ..models.restorer import Restorer, load_grown
from ..weights import export_weights, load_restorer
from .adversarial import diff_augment, feature_matching, hinge_d_loss, hinge_g_loss, hinge_mismatch_loss
from .data import RefSampler, load_pack, make_batch, prepare_split, starve_input
from .loop import StopFlag, autocast, ema_update, hardware, lr_at, pick_device, setup_logging, write_json
from .loss import identity_dropout, output_identity
from .options import RunOptions
from .preset_weights import ID_OUTPUT_WEIGHTS, check_ref_flip, preset_weights
from .run_state import RunState


@dataclass(frozen=True)
class GanConfig(RunOptions):
    pack: str
    init: str  # the one-step student to start from
    run_dir: str = "runs/gan"
    ref_slots: int = 4  # reference attention slots (0: none)
    batch: int = 8
    lr: float = 1e-4  # generator
    lr_d: float = 4e-4  # discriminator
    warmup: int = 100
    ema: float = 0.998
    pixel: float = 1.0  # L1 to the truth
    feature_match: float = 0.1
    adversarial: float = 0.01
    id_output: float = 0.1
    id_temperature: float = 0.1
    id_output_weights: tuple[tuple[str, float], ...] = ID_OUTPUT_WEIGHTS
    augment: bool = True
    ref_flip: str = "with-target"
    # the reference curriculum: samples whose references explain the target, so reading them pays
    self_ref: float = 0.0  # share of samples with the target photo itself, jittered, as reference 0
    ref_jitter: float = 3.0  # px: random shift of that self-reference (and up to 4 % scale, 3 degrees)
    starve: float = 0.0  # share of samples whose degraded input is starved to 16 px (data.starve_input)
    lr_ref: float = 1.0  # multiplier of the generator's learning rate for the reference path
    # >0: the discriminator also sees the identity the generator was given (projection) and learns,
    # with this weight, that a real face with another person's identity is fake
    id_disc: float = 0.0

    def __post_init__(self) -> None:
        check_ref_flip(self.ref_flip)
        if self.id_disc < 0:
            raise ValueError(f"id_disc must be >= 0, not {self.id_disc}")
        for name in ("self_ref", "starve"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)}")


REF_PATH = ("encoder.reference.", "generator.ref_up.")  # parameter prefixes of the reference path


class AdversarialPair(nn.Module):
    """The student and its discriminator as one module, so one checkpoint holds both."""

    def __init__(self, student: Restorer, disc: MultiScaleDiscriminator) -> None:
        super().__init__()
        self.student = student
        self.disc = disc


def grow_student(src: Restorer, ref_slots: int) -> Restorer:
    """``src`` with reference attention of ``ref_slots`` slots added (zero-initialised outputs)."""
    if ref_slots <= 0 or src.cfg.encoder.ref_slots == ref_slots:
        return copy.deepcopy(src)
    cfg = replace(src.cfg, encoder=replace(src.cfg.encoder, ref_slots=ref_slots))
    model = Restorer(cfg)
    load_grown(model, src)
    return model


def scene(face: torch.Tensor, lq: torch.Tensor, ref_mean: torch.Tensor) -> torch.Tensor:
    """What the discriminator judges: the face beside its degraded input and the references' mean."""
    return torch.cat([face, lq, ref_mean], dim=1)


def jitter_refs(refs: torch.Tensor, rows: torch.Tensor, shift_px: float, gen: torch.Generator) -> torch.Tensor:
    """Reference 0 of the rows ``rows`` (B,) bool moved by a small random similarity transform
    (shift up to ``shift_px``, scale 0.96-1.04, rotation up to 3 degrees) with a brightness and
    contrast change. Why: a self-reference copied in place teaches the attention to paste the same
    position; a displaced one teaches it to find the matching part, which is what other photos of
    the person need."""
    b, size = refs.shape[0], refs.shape[-1]
    u = torch.rand(b, 6, generator=gen).to(refs.device) * 2 - 1
    ang = u[:, 0] * (3.0 * torch.pi / 180)
    scale = 1 + 0.04 * u[:, 1]
    t = u[:, 2:4] * (2 * shift_px / size)
    cos, sin = torch.cos(ang) * scale, torch.sin(ang) * scale
    theta = torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    moved = F.grid_sample(refs[:, 0], grid, mode="bilinear", padding_mode="border", align_corners=False)
    moved = ((moved * (1 + 0.1 * u[:, 4, None, None, None])) + 0.1 * u[:, 5, None, None, None]).clamp(-1, 1)
    out = refs.clone()
    out[:, 0] = torch.where(rows.to(refs.device)[:, None, None, None], moved, refs[:, 0])
    return out


def reference_mean(refs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(refs.dtype)[:, :, None, None, None]
    return (refs * m).sum(1) / m.sum(1).clamp(min=1)


def train_gan(cfg: GanConfig) -> dict:
    run = Path(cfg.run_dir)
    log = setup_logging(run, "gan")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    src, smeta = load_restorer(Path(cfg.init), device="cpu")
    student = grow_student(src, cfg.ref_slots).to(device).train()
    val_ids = smeta["extra"].get("val_identities")
    train_ids, split_val = prepare_split(Path(cfg.pack), cfg.n_val, cfg.split_seed)
    if val_ids:  # never train on the people the starting model held out
        train_ids = [i for i in train_ids + split_val if i not in set(val_ids)]
    else:
        val_ids = split_val
    pool = load_pack(Path(cfg.pack), device, keep=set(train_ids))
    sampler = RefSampler(pool, 5, cfg.seed + 7, cfg.ref_flip, cfg.self_ref)
    student.requires_grad_(False)
    student.generator.requires_grad_(True)
    if cfg.ref_slots > 0:
        student.encoder.reference.requires_grad_(True)
    id_dim = int(student.null_identity.shape[-1]) if cfg.id_disc > 0 else 0
    disc = MultiScaleDiscriminator(DiscriminatorConfig(identity_dim=id_dim)).to(device)
    pair = AdversarialPair(student, disc)
    ema = copy.deepcopy(pair).requires_grad_(False)
    trainable = [(n, p) for n, p in student.named_parameters() if p.requires_grad]
    g_params = [p for _, p in trainable]
    g_ref = [p for n, p in trainable if n.startswith(REF_PATH)]
    g_main = [p for n, p in trainable if not n.startswith(REF_PATH)]
    groups = [{"params": g_main, "lr": cfg.lr, "base_lr": cfg.lr}]
    if g_ref:
        groups.append({"params": g_ref, "lr": cfg.lr * cfg.lr_ref, "base_lr": cfg.lr * cfg.lr_ref})
    opt = torch.optim.AdamW([*groups,
                             {"params": list(disc.parameters()), "lr": cfg.lr_d, "base_lr": cfg.lr_d}],
                            weight_decay=0.0, betas=(0.5, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    state = RunState.open(run, pair, ema, opt, sampler, gen, cfg, device, log)
    size = student.cfg.generator.size
    state.open_bar("gan")
    flag = StopFlag()
    parts: dict[str, list[float]] = {}
    while state.running(flag):
        draw = sampler.sample(cfg.batch)
        x0, lq, refs, mask = make_batch(pool, draw, size, device)
        noise = torch.randn(lq.shape, generator=gen).to(device)
        if cfg.self_ref > 0:  # drawn only when asked, so the default keeps the old RNG stream
            own = torch.as_tensor(draw[1][:, 0] == draw[0])
            refs = jitter_refs(refs, own, cfg.ref_jitter, gen)
        if cfg.starve > 0:
            lq = starve_input(lq, torch.rand(x0.shape[0], generator=gen) < cfg.starve)
        for g in opt.param_groups:
            g["lr"] = lr_at(state.step, state.lr_total(), g["base_lr"], cfg.warmup)
        with autocast(device, cfg.bf16):
            ident = student.encode(refs, mask)
            anchor = ident[:, 0].detach()
            ident, dropped = identity_dropout(ident, student.null_identity, cfg.id_dropout, gen)
            # what the discriminator judges against: the identity the generator was given
            vec = ident[:, 0].detach().float() if cfg.id_disc > 0 else None
            out = student.restore(lq, ident, noise, 1).float()
            cond = torch.cat([lq, reference_mean(refs, mask)], dim=1)
            fake_s, real_s = scene(out, *cond.split(3, 1)), scene(x0, *cond.split(3, 1))
            both = torch.cat([fake_s, real_s], dim=1)
            if cfg.augment:  # one augmentation for both, so feature matching compares like with like
                both = diff_augment(both, gen, groups=6)
            fake_a, real_a = both.split(fake_s.shape[1], dim=1)
            # generator step
            disc.requires_grad_(False)
            d_fake = disc(fake_a, vec)
            with torch.no_grad():
                d_real = disc(real_a, vec)
            l_pix = F.l1_loss(out, x0)
            l_fm = feature_matching(d_real, d_fake)
            l_adv = hinge_g_loss(d_fake)
            loss_g = cfg.pixel * l_pix + cfg.feature_match * l_fm + cfg.adversarial * l_adv
            if cfg.id_output > 0:
                l_id = output_identity(student.encoder, out, anchor, pool.labels[draw[0]], cfg.id_temperature,
                                       preset_weights(pool.presets, draw[3], cfg.id_output_weights))
                loss_g = loss_g + cfg.id_output * l_id
        opt.zero_grad(set_to_none=True)
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_(g_params, cfg.grad_clip)
        opt.step()
        # discriminator step
        disc.requires_grad_(True)
        with autocast(device, cfg.bf16):
            loss_d = hinge_d_loss(disc(real_a.detach(), vec), disc(fake_a.detach(), vec))
            if cfg.id_disc > 0:  # the truth with the next row's identity, where that is another person
                labels = torch.as_tensor(pool.labels[draw[0]])
                kept = ~dropped.cpu()
                rows = (labels != labels.roll(1)) & kept & kept.roll(1)
                loss_d = loss_d + cfg.id_disc * hinge_mismatch_loss(disc(real_a.detach(), vec.roll(1, 0)),
                                                                    rows.to(device))
        opt.zero_grad(set_to_none=True)
        loss_d.backward()
        opt.step()
        ema_update(ema, pair, cfg.ema)
        for k, v in (("pix", l_pix), ("fm", l_fm), ("adv", l_adv), ("d", loss_d)):
            parts.setdefault(k, []).append(float(v.detach()))
        state.finish_step(float(l_pix.detach()), ".4f")
        if state.step % cfg.log_every == 0:
            log.info("step %d %s", state.step,
                     " ".join(f"{k} {sum(v[-cfg.log_every:]) / len(v[-cfg.log_every:]):.4f}" for k, v in parts.items()))
    wall = state.close()
    step = state.step
    extra = {"steps": step, "student_steps": 1, "init_id": smeta["model_id"], "val_identities": val_ids,
             "train_cfg": asdict(cfg)}
    model_id = export_weights(ema.student.eval(), run / "student.safetensors", "student", extra)
    metrics = {"steps": step, "wall_time_s": round(wall, 1), "final_pixel_loss": state.mean_loss(200),
               "model_id": model_id, "init_id": smeta["model_id"], "hardware": hardware(), "config": asdict(cfg)}
    write_json(run / "metrics.json", metrics)
    log.info("done %s", json.dumps(metrics))
    return metrics
