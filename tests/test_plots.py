"""labkit.plots: every axis says its unit; the plots draw the data they are given."""

from __future__ import annotations

import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

from labkit import plots  # noqa: E402


@pytest.fixture
def frame():
    rows = []
    for i in range(21):
        t = 1000.0 + i
        rows.append(
            {
                "time": t,
                "family": "r",
                "type": "counter",
                "sample": "r_total",
                "outcome": "success",
                "le": None,
                "value": 10.0 * i,
            }
        )
        rows.append(
            {
                "time": t,
                "family": "r",
                "type": "counter",
                "sample": "r_total",
                "outcome": "error",
                "le": None,
                "value": float(i),
            }
        )
        rows.append(
            {
                "time": t,
                "family": "g",
                "type": "gauge",
                "sample": "g",
                "outcome": None,
                "le": None,
                "value": float(i % 3),
            }
        )
        for le, share in (("0.01", 0.5), ("0.1", 0.9), ("+Inf", 1.0)):
            rows.append(
                {
                    "time": t,
                    "family": "h",
                    "type": "histogram",
                    "sample": "h_bucket",
                    "outcome": None,
                    "le": le,
                    "value": np.floor(share * 10 * i),
                }
            )
    return pd.DataFrame(rows)


def has_unit(label: str) -> bool:
    return bool(re.search(r"\([^)]+\)", label))


def axes_of(fig):
    return [ax for ax in fig.axes if ax.get_ylabel()]


def test_counter_plot(frame):
    fig = plots.counter(frame, "r_total", window=5, by=["outcome"])
    top, bottom = fig.axes
    assert has_unit(top.get_ylabel()) and has_unit(bottom.get_ylabel()) and has_unit(bottom.get_xlabel())
    rate_line = [ln for ln in bottom.get_lines() if ln.get_label() == "success"][0]
    assert np.nanmax(rate_line.get_ydata()) == pytest.approx(10.0)


def test_gauge_plot(frame):
    fig = plots.gauge(frame, "g")
    ax = fig.axes[0]
    assert has_unit(ax.get_ylabel()) and has_unit(ax.get_xlabel())
    assert set(ax.get_lines()[0].get_ydata()) == {0.0, 1.0, 2.0}


def test_histogram_and_quantile_plots(frame):
    fig = plots.histogram_buckets(frame, "h")
    ax = fig.axes[0]
    assert has_unit(ax.get_xlabel()) and has_unit(ax.get_ylabel())
    assert sum(p.get_height() for p in ax.patches) == pytest.approx(200)
    fig = plots.quantiles(frame, "h", window=5)
    ax = fig.axes[0]
    assert has_unit(ax.get_ylabel()) and "ms" in ax.get_ylabel()
    assert {ln.get_label() for ln in ax.get_lines()} == {"p50", "p95", "p99"}


@pytest.fixture
def heatmap_frame():
    """A histogram with two series (sum by le) scraped at uneven times, with a reset of one series.

    Observations per interval, in the buckets (<=0.01, 0.01-0.1, >0.1): interval 1 s: (1, 2, 3) + (1, 0, 0);
    1 s: (0, 0, 5); 2 s: (4, 0, 0) + the second series restarts and holds (0, 2, 0).
    """
    bounds = ("0.01", "0.1", "+Inf")
    cumulative = {
        "a": [(0, 0, 0), (1, 3, 6), (1, 3, 11), (5, 7, 15)],
        "b": [(5, 5, 5), (6, 6, 6), (6, 6, 6), (0, 2, 2)],
    }
    rows = []
    for instance, values in cumulative.items():
        for t, counts in zip((0.0, 1.0, 2.0, 4.0), values, strict=True):
            for le, value in zip(bounds, counts, strict=True):
                rows.append(
                    {
                        "time": 1000.0 + t,
                        "family": "h",
                        "type": "histogram",
                        "sample": "h_bucket",
                        "instance": instance,
                        "le": le,
                        "value": float(value),
                    }
                )
    return pd.DataFrame(rows)


HEATMAP_COUNTS = np.array([[2.0, 2.0, 3.0], [0.0, 0.0, 5.0], [4.0, 2.0, 0.0]])  # intervals x buckets


def test_bucket_increases_decumulate_per_interval(heatmap_frame):
    counts = plots.bucket_increases(heatmap_frame, "h")
    assert list(counts.columns) == [0.01, 0.1, float("inf")]
    assert list(counts.index) == [1001.0, 1002.0, 1004.0]
    np.testing.assert_array_equal(counts.to_numpy(), HEATMAP_COUNTS)


def test_histogram_heatmap_draws_rates_with_units(heatmap_frame):
    fig = plots.histogram_heatmap(heatmap_frame, "h")
    ax, colorbar = fig.axes
    cells = ax.collections[0].get_array()
    per_second = HEATMAP_COUNTS / np.array([1.0, 1.0, 2.0])[:, None]
    np.testing.assert_array_equal(cells.filled(0), per_second.T)  # rows = buckets, columns = intervals
    assert cells.mask.tolist() == (per_second.T == 0).tolist()  # empty cells blank on the log scale
    assert has_unit(ax.get_xlabel()) and "(s)" in ax.get_xlabel()
    assert "(ms)" in ax.get_ylabel() and "1/s" in colorbar.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "10", "100", "+Inf"]
    np.testing.assert_array_equal(ax.collections[0].get_coordinates()[0, :, 0], [0.0, 1.0, 2.0, 4.0])

    fig = plots.histogram_heatmap(heatmap_frame, "h", per_second=False, log=False, scale=1.0, unit="s")
    ax, colorbar = fig.axes
    np.testing.assert_array_equal(ax.collections[0].get_array().filled(-1), HEATMAP_COUNTS.T)
    assert "(s)" in ax.get_ylabel() and "(count)" in colorbar.get_ylabel()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "0.01", "0.1", "+Inf"]
