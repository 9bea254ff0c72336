"""`likeness train pack|teacher|distill|gan` (long jobs: resumable, progress bar, log file)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..identity_store import FINE_SIDES, SPATIAL_SIDES
from ..training.preset_weights import ID_OUTPUT_WEIGHTS, MARGIN_ANCHORS, POOL_VARIANTS, REF_FLIPS, format_preset_weights


def register(sub) -> None:
    p = sub.add_parser("train", help="train the models (never run in CI)")
    ts = p.add_subparsers(dest="train_command", required=True, metavar="STAGE")

    pk = ts.add_parser("pack", help="degrade prepared crops with the real codec presets into a training pack")
    pk.add_argument("--data", type=Path, required=True, help="output folder of `likeness data prepare`")
    pk.add_argument("--out", type=Path, required=True, help="pack file (.npz)")
    pk.add_argument("--seed", type=int, default=0)
    pk.add_argument("--workers", type=int, default=2)
    pk.add_argument("--variants", default=format_preset_weights(POOL_VARIANTS),
                    help="degraded copies per photo and preset, PRESET=N,... (default %(default)s; "
                         "more copies: more distinct codec artefacts per photo for long runs; call-PRESET: "
                         "the face degraded as a call degrades the whole frame around it)")
    pk.set_defaults(func=_pack)

    for name in ("teacher", "distill"):
        t = ts.add_parser(name, help=f"train the {name}" if name == "teacher" else "distil the teacher to 1-2 steps")
        t.add_argument("--pack", type=Path, required=True, help="training pack from `likeness train pack`")
        t.add_argument("--run-dir", type=Path, default=Path(f"runs/{name}"), help="checkpoints and logs (resumes)")
        t.add_argument("--batch", type=int, default=16)
        t.add_argument("--lr", type=float)
        t.add_argument("--warmup", type=int, help="LR warm-up steps (default: the config's; fewer for short "
                                                  "large-batch fine-tunes)")
        t.add_argument("--ema", type=float, help="EMA decay per step (default: the config's; lower it for "
                                                 "runs of a few hundred large batches, or the export is "
                                                 "mostly the starting weights)")
        t.add_argument("--steps", type=int, help="total optimisation steps (0: no training, export the start "
                                                 "weights; for distill, the teacher's own sampler at "
                                                 "--student-steps as the student)")
        t.add_argument("--minutes", type=float, help="wall-clock budget; steps derived after a speed probe")
        t.add_argument("--device", default="auto")
        t.add_argument("--seed", type=int, default=0)
        t.add_argument("--no-bf16", action="store_true",
                       help="train in fp32 (bf16 runs only where the hardware has it)")
        if name == "teacher":
            t.add_argument("--init", type=Path, help="start from these weights (fine-tune)")
            t.add_argument("--attn-min-level", type=int, choices=[0, 1, 2, 3],
                           help="identity cross-attention from this generator level up (0: 64x64 ... 3: 8x8; "
                                "default: the model's, 2); with --init, added layers start at zero")
            t.add_argument("--spatial-identity", type=int, choices=SPATIAL_SIDES,
                           help="also a spatial identity map of this side (the references' encoder "
                                "features, averaged in place), added by the generator at 32x32 and below "
                                "(default: the model's, 0: off); with --init, added layers start at zero")
            t.add_argument("--spatial-fine", type=int, choices=FINE_SIDES,
                           help="also a fine spatial identity map of this side (the encoder's first "
                                "block, averaged in place), added by the generator at 64x64 and 32x32 "
                                "(default: the model's, 0: off); with --init, added layers start at zero")
            t.add_argument("--self-ref", type=float, default=0.0,
                           help="share of samples whose references include the target photo itself "
                                "(a diagnostic of how much identity the generator can take from references "
                                "that explain the target; default 0, as every shipped model)")
            t.add_argument("--starve-input", type=float, default=0.0,
                           help="share of samples whose degraded input is brought down to a 16-pixel face, "
                                "so only the references can supply the features (default 0)")
            t.add_argument("--id-contrast", type=float, default=0.1,
                           help="weight of the identity InfoNCE term on the encoder (default 0.1; 0: off, "
                                "the diffusion loss alone, which left the encoder collapsed)")
        if name == "distill":
            t.add_argument("--teacher", type=Path, required=True, help="teacher .safetensors")
            t.add_argument("--teacher-steps", type=int, default=8)
            t.add_argument("--student-steps", type=int, default=1, choices=[1, 2])
            t.add_argument("--gt-weight", type=float, default=0.0,
                           help="weight of an MSE to the ground truth beside the teacher match (default 0: "
                                "pure distillation)")
        t.add_argument("--id-margin", type=float, default=0.0,
                       help="weight of the personalisation margin: the personalised output must be nearer "
                            "the anchor than the generic output of the same input (held fixed), by the "
                            "encoder; weighted per preset like --id-output (default 0: off)")
        t.add_argument("--margin-anchor", choices=MARGIN_ANCHORS, default=MARGIN_ANCHORS[0],
                       help="what the margin measures nearness to: the clean target photo (default; the "
                            "eval's own criterion, pose and light cancel since both outputs come from the "
                            "same crop) or the person's references")
        t.add_argument("--ref-flip", choices=REF_FLIPS, default=REF_FLIPS[0],
                       help="mirror each reference with its target (default: the sample stays one consistent "
                            "image, as the identity map reads faces position by position) or by its own coin "
                            "(how stages 1-9 trained)")
        t.add_argument("--id-output", type=float, default=0.0,
                       help="weight of the output identity term: the restored face, read by the encoder "
                            "(held fixed for this term), must pick out its own person's references in "
                            "the batch (default 0: off)")
        t.add_argument("--id-output-weights", default=format_preset_weights(ID_OUTPUT_WEIGHTS),
                       help="per-preset multiplier of the output identity term, PRESET=W,... (default "
                            "%(default)s: sharp crops need no identity help)")
        t.set_defaults(func=_teacher if name == "teacher" else _distill)

    g = ts.add_parser("gan", help="adversarial fine-tuning of the one-step student, with reference attention")
    g.add_argument("--pack", type=Path, required=True, help="training pack from `likeness train pack`")
    g.add_argument("--init", type=Path, required=True, help="the one-step student to start from")
    g.add_argument("--run-dir", type=Path, default=Path("runs/gan"), help="checkpoints and logs (resumes)")
    g.add_argument("--ref-slots", type=int, default=4, help="reference photos the generator attends to "
                                                            "(0: none; default %(default)s)")
    g.add_argument("--batch", type=int, default=8)
    g.add_argument("--lr", type=float, default=1e-4, help="generator learning rate")
    g.add_argument("--lr-d", type=float, default=4e-4, help="discriminator learning rate")
    g.add_argument("--pixel", type=float, default=1.0, help="weight of L1 to the truth")
    g.add_argument("--feature-match", type=float, default=0.1, help="weight of the discriminator's feature matching")
    g.add_argument("--adversarial", type=float, default=0.01, help="weight of the hinge GAN term")
    g.add_argument("--id-output", type=float, default=0.1, help="weight of the output identity term")
    g.add_argument("--no-augment", action="store_true", help="no differentiable augmentation for the discriminator")
    g.add_argument("--self-ref", type=float, default=0.0,
                   help="share of samples whose first reference is the target itself, displaced a little "
                        "(teaches the reference attention to find and take matching detail; default 0)")
    g.add_argument("--starve-input", type=float, default=0.0,
                   help="share of samples whose degraded input is brought down to a 16-pixel face (default 0)")
    g.add_argument("--lr-ref", type=float, default=1.0,
                   help="learning-rate multiplier for the reference path (default 1)")
    g.add_argument("--id-disc", type=float, default=0.0,
                   help="weight of the discriminator's mismatched-identity term; > 0 makes it judge each "
                        "face against the identity the generator was given (default 0: image only)")
    g.add_argument("--steps", type=int)
    g.add_argument("--minutes", type=float)
    g.add_argument("--warmup", type=int)
    g.add_argument("--ema", type=float)
    g.add_argument("--device", default="auto")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-bf16", action="store_true", help="train in fp32 (bf16 runs only where the hardware has it)")
    g.set_defaults(func=_gan)

    w = ts.add_parser("weighting", help="train the learned weighting of the references' detail (the transfer "
                                        "after the generator) on the student's outputs for trained-on people")
    w.add_argument("--data", type=Path, required=True, help="CelebA-style folder (photos + identity labels)")
    w.add_argument("--run-dir", type=Path, default=Path("runs/weighting"), help="samples, checkpoints, log (resumes)")
    w.add_argument("--out", type=Path, required=True, help="the weights to write (.safetensors)")
    w.add_argument("--student", type=Path, help="default: the packaged student")
    w.add_argument("--identities", type=int, default=400, help="trained-on people to build samples from")
    w.add_argument("--steps", type=int, default=3000)
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=_weighting)

    b = ts.add_parser("blend", help="interpolate two students' weights (a detail dial between a PSNR-trained and "
                                    "a GAN-trained model, as ESRGAN)")
    b.add_argument("--smooth", type=Path, required=True, help="the PSNR-oriented student (alpha 0)")
    b.add_argument("--sharp", type=Path, required=True, help="the GAN-trained student (alpha 1)")
    b.add_argument("--alpha", type=float, required=True, help="0..1: share of the sharp model's weights")
    b.add_argument("--out", type=Path, required=True)
    b.set_defaults(func=_blend)


def _check(args) -> None:
    if not args.pack.is_file():
        raise InputError(f"{args.pack}: training pack not found (run `likeness train pack`)")
    if args.steps is None and args.minutes is None:
        raise InputError("give --steps or --minutes")
    if args.steps is not None and args.steps < 0:
        raise InputError(f"--steps must be >= 0, not {args.steps}")


def parse_preset_weights(text: str, option: str = "--id-output-weights",
                         call: bool = False) -> tuple[tuple[str, float], ...]:
    """"severe=1,mild=0" -> (("severe", 1.0), ("mild", 0.0)); presets must exist, weights >= 0.
    ``call``: a preset may also be named as its call variant (``call-severe``, a pack's)."""
    from ..degrade import CALL_PREFIX, PRESETS

    names = list(PRESETS) + ([CALL_PREFIX + p for p in PRESETS] if call else [])
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            w = float(value)
        except ValueError:
            w = -1.0
        if not sep or name.strip() not in names or not w >= 0:
            raise InputError(f"{option}: bad item {item!r} (want PRESET=W with W >= 0; "
                             f"presets: {', '.join(names)})")
        out.append((name.strip(), w))
    return tuple(out)


def _pack(args) -> int:
    from ..training.data import build_pack

    counts = parse_preset_weights(args.variants, "--variants", call=True)
    if any(n < 1 or n != int(n) for _, n in counts):
        raise InputError(f"--variants {args.variants!r}: want PRESET=N with a whole N >= 1")
    variants = tuple((p, int(n)) for p, n in counts)
    print(json.dumps(build_pack(args.data, args.out, args.seed, args.workers, variants), indent=2))
    return 0


def _common_overrides(cfg, args):
    if args.warmup is not None and args.warmup < 0:
        raise InputError("--warmup must be >= 0")
    if args.ema is not None and not 0 <= args.ema < 1:
        raise InputError("--ema must be in [0, 1)")
    for name in ("lr", "warmup", "ema"):
        if getattr(args, name) is not None:
            cfg = replace(cfg, **{name: getattr(args, name)})
    return cfg


def _check_shares(args) -> None:
    for flag, share in (("--self-ref", args.self_ref), ("--starve-input", args.starve_input)):
        if not 0.0 <= share <= 1.0:
            raise InputError(f"{flag} must be between 0 and 1, not {share}")


def _teacher(args) -> int:
    from ..training.teacher import TeacherConfig, train_teacher

    _check(args)
    _check_shares(args)
    cfg = TeacherConfig(pack=str(args.pack), run_dir=str(args.run_dir), batch=args.batch, steps=args.steps,
                        minutes=args.minutes, device=args.device, seed=args.seed, bf16=not args.no_bf16,
                        init=str(args.init) if args.init else None, id_contrast=args.id_contrast,
                        id_output=args.id_output, id_output_weights=parse_preset_weights(args.id_output_weights),
                        attn_min_level=args.attn_min_level, spatial_identity=args.spatial_identity,
                        spatial_fine=args.spatial_fine,
                        id_margin=args.id_margin, margin_anchor=args.margin_anchor, ref_flip=args.ref_flip,
                        self_ref=args.self_ref, starve=args.starve_input)
    if args.id_contrast < 0 or args.id_output < 0 or args.id_margin < 0:
        raise InputError("--id-contrast, --id-output and --id-margin must be >= 0")
    cfg = _common_overrides(cfg, args)
    print(json.dumps(train_teacher(cfg), indent=2, default=str))
    return 0


def _distill(args) -> int:
    from ..training.distill import DistillConfig, train_distill

    if args.gt_weight < 0 or args.id_output < 0 or args.id_margin < 0:
        raise InputError("--gt-weight, --id-output and --id-margin must be >= 0")
    weights = parse_preset_weights(args.id_output_weights)
    _check(args)
    if not args.teacher.is_file():
        raise InputError(f"{args.teacher}: teacher weights not found")
    cfg = DistillConfig(pack=str(args.pack), teacher=str(args.teacher), run_dir=str(args.run_dir),
                        batch=args.batch, steps=args.steps, minutes=args.minutes, device=args.device,
                        seed=args.seed, bf16=not args.no_bf16, teacher_steps=args.teacher_steps,
                        student_steps=args.student_steps, gt_weight=args.gt_weight, id_output=args.id_output,
                        id_output_weights=weights, id_margin=args.id_margin,
                        margin_anchor=args.margin_anchor, ref_flip=args.ref_flip)
    cfg = _common_overrides(cfg, args)
    print(json.dumps(train_distill(cfg), indent=2, default=str))
    return 0


def _gan(args) -> int:
    from ..training.gan import GanConfig, train_gan

    if not args.pack.is_file():
        raise InputError(f"{args.pack}: training pack not found (run `likeness train pack`)")
    if not args.init.is_file():
        raise InputError(f"{args.init}: starting weights not found")
    if args.steps is None and args.minutes is None:
        raise InputError("give --steps or --minutes")
    if min(args.pixel, args.feature_match, args.adversarial, args.id_output, args.id_disc) < 0 or args.ref_slots < 0:
        raise InputError("loss weights and --ref-slots must be >= 0")
    _check_shares(args)
    if args.lr_ref <= 0:
        raise InputError(f"--lr-ref must be > 0, not {args.lr_ref}")
    cfg = GanConfig(pack=str(args.pack), init=str(args.init), run_dir=str(args.run_dir), ref_slots=args.ref_slots,
                    batch=args.batch, lr=args.lr, lr_d=args.lr_d, pixel=args.pixel,
                    feature_match=args.feature_match, adversarial=args.adversarial, id_output=args.id_output,
                    augment=not args.no_augment, steps=args.steps, minutes=args.minutes, device=args.device,
                    seed=args.seed, bf16=not args.no_bf16, self_ref=args.self_ref, starve=args.starve_input,
                    lr_ref=args.lr_ref, id_disc=args.id_disc)
    cfg = _common_overrides(cfg, args)
    print(json.dumps(train_gan(cfg), indent=2, default=str))
    return 0


def _weighting(args) -> int:
    from ..training.weighting import WeightingTrainConfig, train_weighting

    if not args.data.is_dir():
        raise InputError(f"{args.data}: data folder not found")
    if args.student is not None and not args.student.is_file():
        raise InputError(f"{args.student}: weights not found")
    if args.steps < 1 or args.identities < 2:
        raise InputError("--steps must be >= 1 and --identities >= 2")
    cfg = WeightingTrainConfig(data=str(args.data), run_dir=str(args.run_dir), out=str(args.out),
                               student=str(args.student) if args.student else None, identities=args.identities,
                               steps=args.steps, seed=args.seed)
    print(json.dumps(train_weighting(cfg), indent=2, default=str))
    return 0


def _blend(args) -> int:
    from ..training.blend import blend_students

    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be between 0 and 1, not {args.alpha}")
    for p in (args.smooth, args.sharp):
        if not p.is_file():
            raise InputError(f"{p}: weights not found")
    print(json.dumps(blend_students(args.smooth, args.sharp, args.alpha, args.out), indent=2))
    return 0
