"""`likeness eval`: personalised vs generic vs bicubic vs wrong-identity restoration."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate personalised restoration on a labelled photo folder")
    p.add_argument("--data", type=Path, required=True, help="folder like celeba: identity folders + labels.csv")
    p.add_argument("--refs", type=int, default=4, help="reference photos per identity (1-8)")
    p.add_argument("--preset", default="severe", choices=["mild", "moderate", "severe"])
    p.add_argument("--json", type=Path, required=True, help="write the results JSON here")
    p.add_argument("--grid", type=Path, help="write a comparison image grid (PNG)")
    p.add_argument("--plot", type=Path, help="write a perception-distortion scatter (PNG): PSNR against the "
                                             "detail metrics hf_corr and hf_energy, one point per method")
    p.add_argument("--limit-identities", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's own)")
    p.add_argument("--model", default="teacher", choices=["teacher", "student"])
    p.add_argument("--weights", type=Path, help="weights file (default: the packaged --model)")
    p.add_argument("--identities", default="auto", choices=["auto", "val", "all", "trained"],
                   help="auto: the model's held-out validation identities if DIR has them, else all; "
                        "trained: the identities it was NOT held out from (on its training data: the people "
                        "it trained on, to tell a generalisation gap from a fitting limit)")
    p.add_argument("--max-tests", type=int, default=4, help="test photos per identity")
    p.add_argument("--ref-pool", type=int,
                   help="set aside this many photos per identity for references (>= --refs), so runs with "
                        "different --refs share the same test photos (default: --refs)")
    p.add_argument("--ordered", action="store_true",
                   help="references are each identity's first photos by file name and tests the ones after "
                        "them (e.g. enrol on one clip, test on another), instead of a seeded shuffle")
    p.add_argument("--detail-transfer", type=float, default=0.0, metavar="ALPHA",
                   help="add the references' own fine detail after the generator at this gain "
                        "(enhancer/detail_transfer.py; generic has no references; default 0: off)")
    p.add_argument("--transfer-gate", metavar="FULL,NONE",
                   help="the transfer's gate: full gain at or below this ln Laplacian variance of the degraded "
                        "crop, none at or above (default: enhancer/detail_transfer.py's)")
    p.add_argument("--transfer-weighting", choices=["learned", "hand"], default=None,
                   help="where the transferred detail goes: the packaged learned weighting or the hand-made "
                        "one (default: what the product runs, enhancer/detail_transfer.py DEFAULT_TRANSFER)")
    p.add_argument("--strength", default="full", choices=["full", "adaptive"],
                   help="full: the generator's output as is (default); adaptive: blended as the pipeline "
                        "does (enhancer/strength.py)")
    p.add_argument("--ref-mirror", action="store_true",
                   help="add each reference's mirror image to the set the encoder reads")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from ..detail_transfer import DEFAULT_TRANSFER
    from ..errors import InputError
    from ..evaluate import EvalConfig, evaluate, summary_table, write_json
    from ..plots import check_plot_path, write_perception_distortion_plot

    if not 1 <= args.refs <= 8:
        raise InputError("--refs must be between 1 and 8")
    if args.ref_pool is not None and not args.refs <= args.ref_pool <= 8:
        raise InputError("--ref-pool must be between --refs and 8")
    if args.detail_transfer < 0:
        raise InputError(f"--detail-transfer must be >= 0, not {args.detail_transfer}")
    gate = None
    if args.transfer_gate is not None:
        try:
            lo, hi = (float(v) for v in args.transfer_gate.split(","))
        except ValueError:
            raise InputError(f"--transfer-gate must be FULL,NONE (two numbers), not {args.transfer_gate!r}") from None
        if not lo < hi:
            raise InputError(f"--transfer-gate: FULL must be below NONE, not {lo:g},{hi:g}")
        gate = (lo, hi)
    if args.plot is not None:
        check_plot_path(args.plot)  # before the run, not after it
    learned = DEFAULT_TRANSFER.learned if args.transfer_weighting is None else args.transfer_weighting == "learned"
    cfg = EvalConfig(data=str(args.data), refs=args.refs, preset=args.preset, seed=args.seed, steps=args.steps,
                     model=args.model, weights=str(args.weights) if args.weights else None,
                     limit_identities=args.limit_identities, identities=args.identities, max_tests=args.max_tests,
                     strength=args.strength, ref_pool=args.ref_pool, ordered=args.ordered, ref_mirror=args.ref_mirror,
                     detail_transfer=args.detail_transfer, transfer_gate=gate,
                     transfer_learned=learned, transfer_mid=DEFAULT_TRANSFER.mid,
                     transfer_mid_none=DEFAULT_TRANSFER.mid_none)
    r = evaluate(cfg, args.grid)
    write_json(args.json, r)
    print(summary_table(r))
    print(f"wrote {args.json}")
    if args.plot is not None:
        write_perception_distortion_plot(args.plot, r)
        print(f"wrote {args.plot}")
    return 0
