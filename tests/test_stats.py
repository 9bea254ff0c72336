"""The identity-level bootstrap behind the eval's 95 % intervals."""

from __future__ import annotations

import numpy as np
import pytest

from enhancer.stats import cluster_ratio_ci, eval_intervals


def test_interval_brackets_the_estimate_and_narrows_with_more_people() -> None:
    rng = np.random.default_rng(1)
    widths = []
    for people in (20, 80, 320):
        counts = rng.integers(2, 5, people)
        wins = rng.binomial(counts, 0.85)
        lo, hi = cluster_ratio_ci(wins, counts)
        assert lo <= wins.sum() / counts.sum() <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]


def test_correlated_photos_widen_the_interval() -> None:
    """The same 80 % of 200 photos: all-or-nothing per person (50 people x 4) is far less certain
    than 200 independent people, which is why the eval resamples identities, not photos."""
    clustered = cluster_ratio_ci(np.array([4] * 40 + [0] * 10), np.full(50, 4))
    independent = cluster_ratio_ci(np.array([1] * 160 + [0] * 40), np.ones(200))
    assert clustered[1] - clustered[0] > 1.5 * (independent[1] - independent[0])


def test_no_spread_gives_a_point_and_bad_input_raises() -> None:
    assert cluster_ratio_ci(np.array([3, 2]), np.array([3, 2])) == (1.0, 1.0)
    with pytest.raises(ValueError):
        cluster_ratio_ci(np.array([1, 2]), np.array([3]))
    with pytest.raises(ValueError):
        cluster_ratio_ci(np.array([]), np.array([]))
    with pytest.raises(ValueError):
        cluster_ratio_ci(np.array([1]), np.array([2]), level=1.0)


def test_eval_intervals_read_per_identity_records() -> None:
    people = [(4, 0.05), (2, 0.01), (3, 0.03)] * 5  # (wins of 4 photos, identity gap)
    recs = [{"tests": 4, "win_vs_generic": w, "win_vs_wrong": 4,
             "id_distance": {"generic": 0.62, "personalized": 0.62 - g}} for w, g in people]
    ci = eval_intervals(recs)
    assert ci["win_personalized_vs_wrong_identity"] == [1.0, 1.0]
    lo, hi = ci["win_personalized_vs_generic"]
    assert lo < 0.75 < hi
    lo, hi = ci["id_gap_generic_minus_personalized"]
    assert 0.01 < lo < 0.03 < hi < 0.05
