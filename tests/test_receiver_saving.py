"""The bandwidth-saving maths of ``benchmarks/receiver.py`` on constructed curves."""

import math

import pytest

from benchmarks.receiver import bandwidth_saving, equivalent_bitrate, saving_entry

RATES = [150, 250, 500, 1000]


def curve(rate: float) -> float:
    """A raw PSNR curve, linear in log(bitrate) as codecs roughly are."""
    return 20.0 + 3.0 * math.log2(rate)


RAW = [curve(r) for r in RATES]


@pytest.mark.parametrize("at", [150, 250, 500, 1000])
def test_equal_curves_save_nothing(at: int) -> None:
    assert bandwidth_saving(RATES, RAW, curve(at), at) == pytest.approx(1.0)


@pytest.mark.parametrize("at", [150, 250, 500])
def test_a_curve_shifted_by_2x_in_bitrate_saves_2x(at: int) -> None:
    # restored at `at` looks like raw at twice the rate
    assert bandwidth_saving(RATES, RAW, curve(2 * at), at) == pytest.approx(2.0)


def test_out_of_range_gives_none_with_a_reason() -> None:
    assert bandwidth_saving(RATES, RAW, curve(2000), 1000) is None  # beyond the highest rate measured
    assert bandwidth_saving(RATES, RAW, curve(100), 150) is None  # below the lowest
    e = saving_entry(RATES, RAW, curve(2000), 1000)
    assert e["saving"] is None and "beats raw at every measured rate" in e["reason"]
    assert saving_entry(RATES, RAW, curve(300), 150) == {"saving": pytest.approx(2.0), "raw_kbps_equivalent": 300.0,
                                                         "reason": None}


def test_interpolation_is_log_linear_and_takes_the_first_crossing() -> None:
    # halfway in PSNR between 250 and 1000 kbit/s (no point between): the geometric mean, 500
    assert equivalent_bitrate([250, 1000], [30.0, 34.0], 32.0) == pytest.approx(500.0)
    # a non-monotone curve: the lowest rate that reaches the target
    assert equivalent_bitrate([150, 250, 500], [30.0, 33.0, 32.0], 32.5) == pytest.approx(
        math.exp(math.log(150) + (2.5 / 3) * math.log(250 / 150)))
