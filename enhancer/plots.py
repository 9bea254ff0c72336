"""Perception-distortion plot of an eval result (``likeness eval --plot``).

PSNR alone ranks a blurry average above a sharp, slightly wrong guess. Plotting it against the
detail metrics (enhancer/metrics.py: hf_corr, is the fine detail the truth's; hf_energy, how
much of it there is) shows which trade each method makes. Uses matplotlib's object API (no
pyplot, no global backend), so it is safe to call from any thread or process.
"""

from __future__ import annotations

import math
from pathlib import Path

from .errors import InputError

COLOURS = {"bicubic": "tab:grey", "generic": "tab:blue", "personalized": "tab:green", "wrong_identity": "tab:red"}


def check_plot_path(path: Path) -> None:
    """Fail before a long run, not after it, when the plot could not be written."""
    if not path.parent.is_dir():
        raise InputError(f"--plot {path}: folder {path.parent} does not exist")


def write_perception_distortion_plot(path: Path, r: dict) -> None:
    """Two panels, PSNR against hf_corr and against hf_energy: each method's mean as a large point
    (named, with its values, in the legend), its per-identity means as faint points."""
    from matplotlib.figure import Figure

    check_plot_path(path)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in ((axes[0], "hf_corr", "hf_corr (detail matches the truth: 1 = exact)"),
                           (axes[1], "hf_energy", "hf_energy (detail relative to the truth: 1 = as much)")):
        for m, d in r["methods"].items():
            colour = COLOURS.get(m, "black")
            pts = [(p[key][m], p["psnr"][m]) for p in r.get("per_identity", []) if key in p and m in p[key]]
            pts = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
            if pts:
                ax.scatter(*zip(*pts, strict=True), s=10, alpha=0.3, color=colour, linewidths=0)
            ax.scatter([d[key]], [d["psnr"]], s=60, color=colour, edgecolors="black", zorder=3,
                       label=f"{m} ({d[key]:.3f}, {d['psnr']:.2f} dB)")
        ax.axvline(1.0, color="black", lw=0.6, ls=":")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")  # the means often sit too close for labels beside them
    axes[0].set_ylabel("PSNR (dB)")
    c, n = r.get("config", {}), r.get("counts", {})
    fig.suptitle(f"perception-distortion: {c.get('model_id', '?')}, preset {c.get('preset', '?')}, "
                 f"{n.get('identities', '?')} identities, {n.get('test_images', '?')} test photos "
                 "(large: method mean; faint: per identity)", fontsize=10)
    fig.savefig(path, dpi=120)
