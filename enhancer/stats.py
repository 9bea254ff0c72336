"""Confidence intervals for eval results, resampling identities rather than photos.

Why identities: a person's test photos share their references, so their wins are correlated;
treating 167 photos of 50 people as 167 independent draws would make the interval too narrow.
A percentile bootstrap over whole identities keeps that correlation. Pure functions, seeded.
"""

from __future__ import annotations

import numpy as np

BOOTSTRAP_RESAMPLES = 2000


def cluster_ratio_ci(sums: np.ndarray, counts: np.ndarray, level: float = 0.95,
                     resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of sum(sums) / sum(counts) when whole clusters are resampled.

    ``sums[i]`` is cluster i's total (e.g. wins), ``counts[i]`` its number of items (photos)."""
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if sums.shape != counts.shape or sums.ndim != 1 or len(sums) == 0:
        raise ValueError("sums and counts must be equal-length, non-empty 1-D arrays")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(resamples, len(sums)))
    ratios = sums[idx].sum(1) / np.maximum(counts[idx].sum(1), 1e-12)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return float(lo), float(hi)


def eval_intervals(per_identity: list[dict], level: float = 0.95) -> dict[str, list[float]]:
    """95 % intervals for the eval's headline numbers from its ``per_identity`` records: both win
    rates and the identity-distance gap (generic minus personalised; positive = personalisation helps)."""
    n = np.array([p["tests"] for p in per_identity], dtype=np.float64)
    d = [p["id_distance"] for p in per_identity]
    gap = np.array([x["generic"] - x["personalized"] for x in d]) * n  # per-identity means -> sums
    wins_g = np.array([p["win_vs_generic"] for p in per_identity])
    wins_w = np.array([p["win_vs_wrong"] for p in per_identity])
    out = {
        "win_personalized_vs_generic": cluster_ratio_ci(wins_g, n, level),
        "win_personalized_vs_wrong_identity": cluster_ratio_ci(wins_w, n, level),
        "id_gap_generic_minus_personalized": cluster_ratio_ci(gap, n, level),
    }
    return {k: [round(lo, 4), round(hi, 4)] for k, (lo, hi) in out.items()}
