"""What releasing incoming frames on their RTP marker saves, glass to glass.

The bridge's receive side used aiortc's jitter buffer, which knows a video frame is complete
only when the next frame's first packet arrives; ``bridge/jitter.py`` releases it on its last
(marked) packet instead. This runs the same call (real clip at 640x480, aiortc publisher ->
bridge -> aiortc viewer on loopback) with both rules, alternated ``--pairs`` times so drift on
a shared machine hits both, with a passthrough processor (the bridge alone) and, with
``--enhanced``, the bicubic pipeline too. Latency is per frame (stamped indices), p50 over each run.
The test viewer is aiortc and waits a frame on its side too; ``--viewer-marker`` adds runs whose
viewer releases on the marker as a browser does, for the glass-to-glass figure a browser would see.

    python -m benchmarks.studies.frame_release [--pairs 3] [--seconds 10] [--codec vp8] [--enhanced] [--viewer-marker]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.bench_bridge import CLIP, SIZE, Passthrough, run
from benchmarks.harness.clips import load_clip
from bridge.factory import default_processor_factory, warm_detectors

MODES = ("aiortc", "marker")


def summarise(runs: list[dict]) -> dict:
    """Per mode and processor: median over runs of the per-run latency p50 (and p90), and fps."""
    out: dict[str, dict] = {}
    for r in runs:
        key = f"{r['label']}/{r['frame_release']}" + ("/viewer-marker" if r.get("viewer_release") == "marker" else "")
        out.setdefault(key, {"p50": [], "p90": [], "viewer_fps": []})
        out[key]["p50"].append(r["latency_ms"]["p50"])
        out[key]["p90"].append(r["latency_ms"]["p90"])
        out[key]["viewer_fps"].append(r["viewer_fps"])
    table = {k: {"latency_p50_ms_median": round(statistics.median(v["p50"]), 1),
                 "latency_p90_ms_median": round(statistics.median(v["p90"]), 1),
                 "viewer_fps_median": round(statistics.median(v["viewer_fps"]), 2),
                 "runs_p50": v["p50"]} for k, v in out.items()}
    saved = {}
    for label in {r["label"] for r in runs}:
        a, m = table.get(f"{label}/aiortc"), table.get(f"{label}/marker")
        if a and m:
            saved[label] = round(a["latency_p50_ms_median"] - m["latency_p50_ms_median"], 1)
    return {"table": table, "p50_saved_ms": saved}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    ap.add_argument("--enhanced", action="store_true", help="also run the bicubic pipeline (tracking, paste-back)")
    ap.add_argument("--viewer-marker", action="store_true",
                    help="also run with the test viewer releasing frames on the marker, as a browser does")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args(argv)
    if not CLIP.is_file():
        raise SystemExit(f"frame_release: clip {CLIP} not found (set LIKENESS_DATA)")
    if a.pairs < 1 or a.seconds <= 0:
        raise SystemExit("frame_release: --pairs must be >= 1 and --seconds > 0")
    frames, fps = load_clip(CLIP, 300, SIZE)
    warm_detectors()
    processors = [("passthrough", lambda _: Passthrough())]
    if a.enhanced:
        processors.append(("enhanced_bicubic", default_processor_factory))
    runs = []
    modes = [(m, False) for m in MODES] + ([("marker", True)] if a.viewer_marker else [])
    for i in range(a.pairs):
        order = modes if i % 2 == 0 else modes[::-1]
        for mode, viewer_marker in order:
            for label, factory in processors:
                r = asyncio.run(run(label, factory, frames, fps, a.seconds, a.codec, None, frame_release=mode,
                                    viewer_marker=viewer_marker))
                runs.append(r)
                tag = mode + (" viewer-marker" if viewer_marker else "")
                print(f"pair {i + 1} {label:17s} {tag:20s} latency p50 {r['latency_ms']['p50']:6.1f} ms "
                      f"p90 {r['latency_ms']['p90']:6.1f}  viewer {r['viewer_fps']:.1f} fps", flush=True)
    result = {
        "benchmark": "frame_release",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg": [round(x, 2) for x in os.getloadavg()]},
        "setup": {"clip": CLIP.name, "size": list(SIZE), "source_fps": fps, "codec": a.codec, "seconds": a.seconds,
                  "pairs": a.pairs},
        "summary": summarise(runs),
        "runs": runs,
    }
    out = a.out or Path(__file__).parents[1] / "results" / f"frame-release-{a.codec}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
