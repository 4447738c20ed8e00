"""labkit.promql against Prometheus' algorithms, worked out by hand for small series."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from labkit import promql


def delta(times, values, t, window, is_rate=False):
    return promql.extrapolated_delta(times, values, t, window, is_rate=is_rate)


def test_steady_counter_gives_exact_rate():
    times, values = [0, 10, 20, 30], [0, 10, 20, 30]
    assert delta(times, values, 30, 30) == pytest.approx(30)
    assert delta(times, values, 30, 30, is_rate=True) == pytest.approx(1.0)


def test_window_start_between_samples_is_extrapolated():
    # [5, 30] holds the samples at 10, 20, 30: 20 observed over 20 s, extrapolated 5 s back
    times, values = [0, 10, 20, 30], [0, 10, 20, 30]
    assert delta(times, values, 30, 25) == pytest.approx(25)
    assert delta(times, values, 30, 25, is_rate=True) == pytest.approx(1.0)


def test_counter_reset_adds_back_the_value_before_the_drop():
    # 0 -> 10 -> 20, restart, 5 -> 15: the real increase is 10 + 10 + 5 + 10 = 35
    assert delta([0, 10, 20, 30, 40], [0, 10, 20, 5, 15], 40, 40) == pytest.approx(35)


def test_gap_to_window_end_extrapolates_half_a_step_only():
    # samples at 10 and 20 in [0, 40]: start gap 10 < 1.1 * step -> +10; end gap 20 -> +step/2 = 5
    assert delta([10, 20], [100, 110], 40, 40) == pytest.approx(10 * 25 / 10)
    # both gaps under the threshold: extrapolated fully to the window
    assert delta([10, 20], [100, 110], 30, 30) == pytest.approx(30)


def test_extrapolation_never_goes_below_zero():
    # counter from 0: durationToZero = 10 * (1/10) = 1 s, shorter than the 9 s gap to the window start
    assert delta([9, 19], [1, 11], 19, 19) == pytest.approx(10 * (10 + 1) / 10)


def test_fewer_than_two_samples_is_nan():
    assert math.isnan(delta([10], [5], 10, 30))
    assert math.isnan(delta([0, 10], [1, 2], 100, 30))


def frame_of(samples):
    """Scrape-shaped frame from (time, sample, labels, value) tuples."""
    rows = [
        {"time": t, "family": s.removesuffix("_total"), "type": "counter", "sample": s, **lab, "value": v}
        for t, s, lab, v in samples
    ]
    return pd.DataFrame(rows)


def test_rate_sums_per_series_rates_and_groups_by_label():
    samples = []
    for t in range(0, 31, 5):
        samples.append((float(t), "x_total", {"outcome": "success", "inst": "a"}, 2.0 * t))
        samples.append((float(t), "x_total", {"outcome": "success", "inst": "b"}, 1.0 * t))
        samples.append((float(t), "x_total", {"outcome": "error", "inst": "a"}, 0.5 * t))
    frame = frame_of(samples)
    total = promql.rate(frame, "x_total", 10)
    assert list(total.columns) == ["total"]
    assert total["total"].iloc[-1] == pytest.approx(3.5)
    by = promql.rate(frame, "x_total", 10, by=["outcome"])
    assert by.loc[30.0, "success"] == pytest.approx(3.0)
    assert by.loc[30.0, "error"] == pytest.approx(0.5)
    assert promql.increase(frame, "x_total", 30, outcome="error").iloc[-1, 0] == pytest.approx(15.0)
    assert math.isnan(total["total"].iloc[0])  # one sample in the first window


def test_rate_handles_a_restart_midway():
    values = [0, 10, 20, 30, 2, 12, 22]  # restart between t=15 and t=20
    frame = frame_of([(5.0 * i, "x_total", {}, v) for i, v in enumerate(values)])
    assert promql.increase(frame, "x_total", 30).iloc[-1, 0] == pytest.approx(52)


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, {"0.1": 10, "0.2": 20, "+Inf": 20}, 0.1),
        (0.75, {"0.1": 10, "0.2": 20, "+Inf": 20}, 0.15),
        (1.0, {"0.1": 10, "0.2": 20, "+Inf": 20}, 0.2),
        (0.25, {"0.1": 10, "0.2": 20, "+Inf": 20}, 0.05),  # lowest bucket starts at 0
        (0.0, {"0.1": 5, "0.2": 20, "+Inf": 20}, 0.0),
        (0.0, {"0.1": 0, "0.2": 20, "+Inf": 20}, math.nan),  # 0/0 in Prometheus 2.42 (checked on the binary)
        (0.9, {"0.1": 10, "0.2": 20, "+Inf": 30}, 0.2),  # rank in +Inf: highest finite bound
        (0.5, {0.1: 10, 0.2: 8, math.inf: 20}, 0.1),  # non-monotonic input is fixed first
        (-0.1, {"0.1": 1, "+Inf": 1}, -math.inf),
        (1.5, {"0.1": 1, "+Inf": 1}, math.inf),
    ],
)
def test_histogram_quantile(q, buckets, expected):
    assert promql.histogram_quantile(q, buckets) == pytest.approx(expected, nan_ok=True)


@pytest.mark.parametrize("buckets", [{"0.1": 5, "0.2": 9}, {"0.1": 0, "+Inf": 0}, {"+Inf": 4}])
def test_histogram_quantile_nan_without_inf_or_observations(buckets):
    assert math.isnan(promql.histogram_quantile(0.5, buckets))


def test_quantiles_over_time_and_bucket_counts():
    rows = []
    for t, counts in ((0.0, (0, 0, 0)), (10.0, (10, 20, 20)), (20.0, (20, 40, 40))):
        for le, c in zip(("0.1", "0.2", "+Inf"), counts, strict=False):
            rows.append({"time": t, "family": "h", "type": "histogram", "sample": "h_bucket", "le": le, "value": c})
    frame = pd.DataFrame(rows)
    table = promql.quantiles_over_time(frame, "h", qs=(0.5, 0.75), window=10)
    assert list(table.columns) == ["p50", "p75"]
    assert table.loc[20.0, "p75"] == pytest.approx(0.15)
    counts = promql.bucket_counts(frame, "h")
    assert list(counts.to_numpy()) == [20, 20, 0]
