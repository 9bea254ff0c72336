"""What a run leaves behind: the terminal table, the JSON with its raw samples, the plots."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.bench.config import RESULTS, STAGES


def _f(v: Any, fmt: str = ".1f") -> str:
    return "-" if v is None else format(v, fmt)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))
    return [line, "-" * len(line)] + ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]


def format_report(rep: dict[str, Any]) -> str:
    """The terminal summary: sampler, other stages, pipeline, WebRTC, hardware, GPU, targets."""
    out: list[str] = []
    m = rep["machine"]
    out.append(f"likeness bench {rep['date']}  {m['cpu_model']}  {m['cores_usable']} cores  "
               f"torch {m['torch']}  onnxruntime {m['onnxruntime']}  load {m['load_average_at_start']}")
    out += ["", "Sampler, ms per face (batch 1)"]
    hw_rows = {(r["engine"], r["model"], r["steps"], r["crop"]): r for r in rep["hardware"]["rows"]}
    rows = []
    for r in rep["micro"]["generator"]:
        if "error" in r:
            rows.append([r["engine"], r["model"], str(r["steps"]), str(r["crop"]), "error: " + r["error"][:60],
                         "", "", "", "", ""])
            continue
        st, h = r["ms_per_face"], hw_rows.get((r["engine"], r["model"], r["steps"], r["crop"]), {})
        frac, theoretical = h.get("fraction_of_measured_peak"), h.get("fraction_of_theoretical_peak")
        peak = f"{100 * frac:.0f}%" if frac is not None else f"{100 * theoretical:.0f}%*" if theoretical else "-"
        rows.append([r["engine"], r["model"], str(r["steps"]), str(r["crop"]), _f(st["median"], ".2f"),
                     _f(st["p95"], ".2f"), _f(st["p99"], ".2f"), str(r["runs"]), _f(r["achieved_gflops"], ".0f"),
                     peak])
    out += _table(["engine", "model", "steps", "crop", "median", "p95", "p99", "runs", "GFLOP/s", "of peak"], rows)
    out += ["of peak: of the measured matmul peak at that precision; * of the theoretical int8 (VNNI) peak"]
    mi = rep["micro"]
    ide = mi["identity_encoding"]["ms"]
    out += ["", f"Identity encoding (4 refs): median {_f(ide.get('median'), '.2f')} ms, "
                f"p95 {_f(ide.get('p95'), '.2f')}"]
    for t in mi["tracker"]:
        d, k = t["detection_frame_ms"], t["tracking_frame_ms"]
        out.append(f"Tracker {t['resolution']}: detection frame median {_f(d.get('median'), '.2f')} ms "
                   f"(p95 {_f(d.get('p95'), '.2f')}), tracking frame median {_f(k.get('median'), '.2f')} ms "
                   f"(p95 {_f(k.get('p95'), '.2f')}), amortised {t['amortised_fps']} fps")
    for a in mi["align_paste"]:
        if "error" in a:
            out.append(f"Align/paste {a['resolution']} crop {a['crop']}: {a['error']}")
            continue
        out.append(f"Align {a['resolution']} crop {a['crop']}: median {_f(a['align_ms']['median'], '.2f')} ms; "
                   f"paste-back median {_f(a['paste_ms']['median'], '.2f')} ms (p95 {_f(a['paste_ms']['p95'], '.2f')})")
    for d in mi.get("detail_transfer", []):
        out.append(f"Reference detail transfer crop {d['crop']} ({d['references']} references): median "
                   f"{_f(d['transfer_ms']['median'], '.2f')} ms per face (p95 {_f(d['transfer_ms']['p95'], '.2f')}); "
                   f"preparation once per identity {_f(d['prepare_ms']['median'], '.2f')} ms")
    out += ["", "Pipeline, per frame (one face; stage medians in ms)"]
    rows = []
    for r in rep["pipeline"]:
        if "error" in r:
            rows.append([r["resolution"], r["label"], "error: " + r["error"][:60]] + [""] * 9)
            continue
        s = r["stage_ms"]
        rows.append([r["resolution"], r["label"], _f(r["fps"]), _f(r["latency_ms_p50"]), _f(r["latency_ms_p95"]),
                     *[_f(s.get(k, {}).get("p50"), ".2f") for k in STAGES], _f(r["cpu_percent"], ".0f"),
                     _f(r["peak_rss_mib"], ".0f"), _f(r["enhanced_share"], ".2f")])
    out += _table(["res", "config", "fps", "p50", "p95", *STAGES, "cpu%", "rssMiB", "enh"], rows)
    w = rep["webrtc"]
    out.append("")
    if w.get("skipped"):
        out.append(f"WebRTC: skipped ({w['skipped']})")
    else:
        off, on = w["enhancement_off"]["latency_ms"], w["enhancement_on"]["latency_ms"]
        out.append(f"WebRTC {w['resolution']} {w['codec']} ({w['engine']}, student, crop 128): glass-to-glass p50/p95 "
                   f"off {_f(off['p50'])}/{_f(off['p95'])} ms, on {_f(on['p50'])}/{_f(on['p95'])} ms -> added "
                   f"p50 {_f(w['added_latency_ms_p50'])} ms, p95 {_f(w['added_latency_ms_p95'])} ms; "
                   f"{_f(w['fps'])} fps; {_f(w['enhanced_share'], '.2f')} of frames enhanced")
    out += ["", "Baselines"]
    for b in rep["baselines"]["restoration_networks"]:
        out.append(f"  {b['name']}: " + (f"{b['ms_per_face']['median']:.1f} ms per face at 512 (random weights)"
                                         if b.get("available") else f"skipped ({b['reason']})"))
    for k, v in rep["baselines"]["ratios"].items():
        out.append(f"  {k}: {v}")
    hw = rep["hardware"]
    th = hw["theoretical"].get("gflops") or {}
    out += ["", f"Hardware: generator {hw['generator_gflop_per_face_step']} GFLOP per face per step; matmul "
                f"{hw['measured']['n']}^2 best fp32 {hw['measured']['fp32']['gflops_best']} / bf16 "
                f"{hw['measured']['bf16']['gflops_best']} GFLOP/s measured; theoretical {th} GFLOP/s "
                f"({hw['theoretical']['assumption']})"]
    g = rep.get("gpu")
    if g:
        out.append(f"GPU ({(g.get('machine') or {}).get('gpu')}, {g.get('date')}, from {g['file']}, not this run):")
        for k, v in g["summary"].items():
            out.append(f"  {k}: {v['ms_per_face']:.2f} ms/face ({v['engine']})")
    out += ["", "Targets (reported, not asserted)"]
    for k, t in rep["targets"].items():
        if k == "where_time_goes":
            continue
        state = {True: "MET", False: "NOT MET", None: "n/a"}[t["met"]]
        out.append(f"  {state:8s} {k}: {t['value']} (target {t['target']})")
    if rep["targets"]["where_time_goes"]:
        out.append(f"  where the time goes: {rep['targets']['where_time_goes']}")
    return "\n".join(out)


def output_paths(json_path: Path | None, out_dir: Path | None, quick: bool = False) -> tuple[Path, Path]:
    """(JSON file, folder for plots): default benchmarks/results/<date>/bench-<date>[-quick].json
    (a quick check must not overwrite the day's full run, which the README quotes)."""
    date = dt.date.today().isoformat()
    folder = out_dir or (json_path.parent if json_path else RESULTS / date)
    return (json_path or folder / f"bench-{date}{'-quick' if quick else ''}.json"), folder


def write_outputs(report: dict[str, Any], samples: dict[str, list[float]], json_path: Path, folder: Path,
                  plots: bool) -> list[Path]:
    """The JSON, its raw samples beside it (compact), and the PNG plots."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if plots:
        from benchmarks.plots import write_plots

        written = write_plots(report, samples, folder, json_path.stem)
        report["plots"] = [str(p) for p in written]
    samples_path = json_path.with_name(json_path.stem + "-samples.json")
    samples_path.write_text(json.dumps({k: [round(x, 3) for x in v] for k, v in samples.items()},
                                       separators=(",", ":")) + "\n")
    report["samples_file"] = str(samples_path)
    json_path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return [json_path, samples_path, *written]


def iter_numbers(obj: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number in a report with its path (tests check they are finite)."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, int | float):
        yield path, float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from iter_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from iter_numbers(v, f"{path}[{i}]")
