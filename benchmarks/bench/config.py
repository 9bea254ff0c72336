"""What shapes a `likeness bench` run: the configuration, the engines asked for, shared constants."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[1] / "results"
RESOLUTIONS: dict[str, tuple[int, int]] = {"480p": (640, 480), "720p": (1280, 720)}
STAGES = ("track", "align", "engine", "paste")


@dataclass(frozen=True)
class EngineSpec:
    """An engine name with an optional precision, as given on the command line (``torch:bf16``)."""

    name: str
    precision: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}:{self.precision}" if self.precision else self.name

    @staticmethod
    def parse(text: str) -> EngineSpec:
        name, _, precision = text.strip().partition(":")
        return EngineSpec(name, precision or None)


@dataclass(frozen=True)
class BenchConfig:
    """Everything that shapes a run; written into the JSON so a result says how it was made."""

    quick: bool = False
    runs: int = 200  # timed runs per micro config (per engine)
    min_runs: int = 10
    warmup: int = 5
    max_s: float = 4.0  # time budget per engine per micro config
    frames: int = 150  # timed frames per pipeline config
    min_frames: int = 20
    pipeline_max_s: float = 5.0
    steps: tuple[int, ...] = (1, 2, 4)  # student steps; the teacher always runs its default too
    crops: tuple[int, ...] = (128, 256)
    resolutions: tuple[str, ...] = ("480p", "720p")
    engines: tuple[str, ...] = ()  # empty: every available engine at its default precision
    source: str | None = None
    # the camera the source is seen through: a degradation preset applied to every source frame, so
    # that the generator has work to do (on a clean face the strength keeps nothing and the pipeline
    # skips it); "none" times the source as it is
    camera: str = "mild"
    skip_webrtc: bool = False
    webrtc_seconds: float = 10.0
    codec: str = "vp8"
    matmul_n: int = 2048
    matmul_reps: int = 10
    plots: bool = True

    @staticmethod
    def make(quick: bool = False, runs: int | None = None, **overrides: Any) -> BenchConfig:
        """Defaults, or the < 1 minute ``--quick`` preset; ``runs`` (tests) caps runs and frames."""
        cfg = BenchConfig()
        if quick:
            cfg = dataclasses.replace(cfg, quick=True, runs=20, min_runs=3, warmup=2, max_s=0.8, frames=40, steps=(1,),
                                      min_frames=10, pipeline_max_s=2.5, crops=(128,), resolutions=("480p",),
                                      webrtc_seconds=3.0, matmul_n=1024, matmul_reps=5)
        if runs is not None:  # exactly n runs and n frames per config, whatever they cost
            n = max(1, int(runs))
            cfg = dataclasses.replace(cfg, runs=n, min_runs=n, frames=n, min_frames=n, warmup=min(cfg.warmup, 2),
                                      matmul_reps=min(cfg.matmul_reps, 3))
        return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def log(msg: str) -> None:
    """Progress goes to stderr so that stdout carries only the final table."""
    print(msg, file=sys.stderr, flush=True)
