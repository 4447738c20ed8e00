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
