"""PNG plots for `likeness bench`: latency distributions, per-stage breakdown, sampler cost.

Uses ``matplotlib.figure.Figure`` directly (the Agg canvas, no pyplot), so no global backend
is switched and nothing needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

STAGE_COLOURS = {"track": "#4c72b0", "align": "#55a868", "engine": "#c44e52", "paste": "#8172b2"}
FRAME_BUDGET_MS = 1e3 / 30
# boxplot's ``vert`` is deprecated from matplotlib 3.10 on, ``orientation`` does not exist before
HORIZONTAL = ({"orientation": "horizontal"} if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
              else {"vert": False})


def latency_plot(report: dict[str, Any], samples: dict[str, list[float]], path: Path) -> Path | None:
    """Per-frame pipeline latency per config (one panel per resolution) and, when run, the WebRTC
    glass-to-glass latency with enhancement off and on."""
    resolutions = sorted({r["resolution"] for r in report["pipeline"]}, key=lambda r: int(r.rstrip("p")))
    web = [k for k in ("webrtc enhancement_off", "webrtc enhancement_on") if samples.get(k)]
    panels = len(resolutions) + (1 if web else 0)
    if panels == 0:
        return None
    fig = Figure(figsize=(6 * panels, 4.5), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, res in zip(axes, resolutions, strict=False):
        labels = [r["label"] for r in report["pipeline"] if r["resolution"] == res and samples.get(
            f"pipeline {res} {r['label']}")]
        data = [np.maximum(samples[f"pipeline {res} {lb}"], 1e-3) for lb in labels]
        if not data:
            continue
        ax.boxplot(data, whis=(1, 99), showfliers=True, flierprops={"markersize": 2}, **HORIZONTAL)
        ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
        ax.set_xscale("log")
        ax.axvline(FRAME_BUDGET_MS, color="grey", ls="--", lw=1, label="30 fps budget")
        ax.set_xlabel("ms per frame (whiskers p1-p99)")
        ax.set_title(f"FramePipeline per frame, {res}")
        ax.legend(fontsize=8, loc="lower right")
    if web:
        ax = axes[-1]
        hi = max(np.percentile(samples[k], 99.5) for k in web)
        bins = np.linspace(0, hi, 40)
        for k in web:
            ax.hist(samples[k], bins=bins, alpha=0.55, label=k.split()[1].replace("_", " "))
        w = report["webrtc"]
        ax.set_title(f"WebRTC glass-to-glass ({w.get('codec')}, {w.get('engine')}): "
                     f"+{w.get('added_latency_ms_p50')} ms p50, +{w.get('added_latency_ms_p95')} ms p95", fontsize=9)
        ax.set_xlabel("ms")
        ax.set_ylabel("frames")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def stage_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Median ms per stage for every pipeline config, stacked (one panel per resolution)."""
    rows = [r for r in report["pipeline"] if r.get("stage_ms")]
    resolutions = sorted({r["resolution"] for r in rows}, key=lambda r: int(r.rstrip("p")))
    if not resolutions:
        return None
    fig = Figure(figsize=(7 * len(resolutions), 4.5), layout="constrained")
    axes = fig.subplots(1, len(resolutions), squeeze=False)[0]
    for ax, res in zip(axes, resolutions, strict=True):
        rr = [r for r in rows if r["resolution"] == res]
        y = np.arange(len(rr))
        left = np.zeros(len(rr))
        for stage, colour in STAGE_COLOURS.items():
            v = np.array([r["stage_ms"].get(stage, {}).get("p50", 0.0) for r in rr])
            ax.barh(y, v, left=left, color=colour, label=stage)
            left += v
        # the teacher can be 10x the rest: clip the axis so the real-time configs stay readable
        xmax = max(np.sort(left)[-2] if len(left) > 1 else left.max(), FRAME_BUDGET_MS) * 1.6
        for yi, r in zip(y, rr, strict=True):
            clipped = left[yi] > xmax
            ax.text(min(left[yi], xmax * 0.72), yi, f" {r['latency_ms_p50']:.1f} ms, {r['fps']:.0f} fps"
                    + (" (bar clipped)" if clipped else ""), va="center", fontsize=7,
                    color="white" if clipped else "black")
        ax.set_yticks(y, [r["label"] for r in rr], fontsize=8)
        ax.axvline(FRAME_BUDGET_MS, color="grey", ls="--", lw=1)
        ax.set_xlabel("median ms per frame, by stage")
        ax.set_title(f"Where a frame's time goes, {res}")
        ax.set_xlim(0, xmax)
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=110)
    return path


def sampler_plot(report: dict[str, Any], path: Path) -> Path | None:
    """Sampler ms per face (median, p95 as error bar) per engine, by steps, one panel per crop."""
    rows = [r for r in report["micro"]["generator"] if "ms_per_face" in r]
    crops = sorted({r["crop"] for r in rows})
    if not crops:
        return None
    engines = sorted({r["engine"] for r in rows})
    fig = Figure(figsize=(6 * len(crops), 4.2), layout="constrained")
    axes = fig.subplots(1, len(crops), squeeze=False)[0]
    width = 0.8 / max(len(engines), 1)
    for ax, crop in zip(axes, crops, strict=True):
        configs = sorted({(r["model"], r["steps"]) for r in rows if r["crop"] == crop}, key=lambda c: c[1])
        x = np.arange(len(configs))
        for i, eng in enumerate(engines):
            med, err = [], []
            for model, steps in configs:
                r = next((r for r in rows if r["crop"] == crop and r["engine"] == eng and r["model"] == model
                          and r["steps"] == steps), None)
                med.append(r["ms_per_face"]["median"] if r else np.nan)
                err.append(r["ms_per_face"]["p95"] - r["ms_per_face"]["median"] if r else 0.0)
            ax.bar(x + (i - (len(engines) - 1) / 2) * width, med, width, yerr=[np.zeros(len(err)), err],
                   label=eng, capsize=2)
        ax.set_xticks(x, [f"{m}\n{s} step{'s' if s > 1 else ''}" for m, s in configs], fontsize=8)
        ax.set_yscale("log")
        ax.axhline(FRAME_BUDGET_MS, color="grey", ls="--", lw=1)
        ax.set_ylabel("ms per face (median; bar to p95)")
        ax.set_title(f"Sampler, crop {crop}, batch 1")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


def write_plots(report: dict[str, Any], samples: dict[str, list[float]], folder: Path, stem: str) -> list[Path]:
    """All plots into ``folder`` as ``<stem>-latency.png``, ``-stages.png``, ``-sampler.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    made = [latency_plot(report, samples, folder / f"{stem}-latency.png"),
            stage_plot(report, folder / f"{stem}-stages.png"),
            sampler_plot(report, folder / f"{stem}-sampler.png")]
    return [p for p in made if p is not None]
