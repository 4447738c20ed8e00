"""The course's standard plots of sampled metrics; every axis names its unit.

Time axes show seconds since the first sample. Each function returns the
matplotlib ``Figure`` so a notebook can save or tweak it.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from labkit import promql


def _elapsed(index: pd.Index, origin: float) -> pd.Index:
    return pd.Index(index.to_numpy(dtype=float) - origin, name="time")


def _origin(frame: pd.DataFrame) -> float:
    return float(frame["time"].min())


def _phase_spans(phases: pd.DataFrame | None) -> pd.DataFrame | None:
    """Start and end of each traffic phase of a ``run_phases`` result (its ``attrs["phases"]``, idle
    phases included) or of any frame with ``phase``, ``start`` and ``end`` columns; None when there are none."""
    if phases is None:
        return None
    if isinstance(phases.attrs.get("phases"), pd.DataFrame):
        phases = phases.attrs["phases"]
    if phases.empty:
        return None
    return phases.groupby("phase", sort=False).agg(start=("start", "min"), end=("end", "max"))


def _shade_phases(ax, phases: pd.DataFrame | None, origin: float) -> None:
    """Shade each traffic phase (see ``_phase_spans`` for what ``phases`` may be)."""
    spans = _phase_spans(phases)
    if spans is None:
        return
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, span) in enumerate(spans.iterrows()):
        ax.axvspan(span.start - origin, span.end - origin, color=colors[i % len(colors)], alpha=0.08)
        ax.text(span.start - origin, 1.0, f" {name}", transform=ax.get_xaxis_transform(), va="top", fontsize=8)


def _finish(fig: plt.Figure, ax, ylabel: str, title: str, phases: pd.DataFrame | None, origin: float) -> plt.Figure:
    """Label a plot over time (seconds since ``origin``): ``ax`` (the lowest) gets ``ylabel`` and the time
    axis, the top one ``title``; shade the phases on every axis, and lay it out."""
    ax.set_ylabel(ylabel)
    ax.set_xlabel("time since start (s)")
    fig.axes[0].set_title(title)
    for each in fig.axes:
        _shade_phases(each, phases, origin)
    fig.tight_layout()
    return fig


def counter(
    frame: pd.DataFrame,
    sample: str,
    window: float = 5.0,
    *,
    by: Sequence[str] = (),
    phases: pd.DataFrame | None = None,
    unit: str = "requests",
    **labels: str,
) -> plt.Figure:
    """A counter two ways: its cumulative value, and its ``rate`` over ``window`` seconds."""
    origin = _origin(frame)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    wide = promql.series(frame, sample, **labels)
    if by:
        wide = wide.T.groupby(level=list(by)).sum().T
    else:
        wide = wide.sum(axis=1).to_frame("total")
    wide.index = _elapsed(wide.index, origin)
    wide.plot(ax=top, drawstyle="steps-post")
    top.set_ylabel(f"cumulative ({unit})")
    rates = promql.rate(frame, sample, window, by=by, **labels)
    rates.index = _elapsed(rates.index, origin)
    rates.plot(ax=bottom)
    title = f"{sample}: cumulative value and rate"
    return _finish(fig, bottom, f"rate over {window:g} s ({unit}/s)", title, phases, origin)


def gauge(
    frame: pd.DataFrame,
    sample: str,
    *,
    unit: str = "requests",
    phases: pd.DataFrame | None = None,
    **labels: str,
) -> plt.Figure:
    """A gauge's sampled value over time (a gauge is read as is, never ``rate``-d)."""
    origin = _origin(frame)
    fig, ax = plt.subplots(figsize=(9, 3))
    wide = promql.series(frame, sample, **labels).sum(axis=1)
    wide.index = _elapsed(wide.index, origin)
    wide.plot(ax=ax, drawstyle="steps-post", marker=".", markersize=3)
    return _finish(fig, ax, f"{sample} ({unit})", f"{sample}: sampled value", phases, origin)


def histogram_buckets(frame: pd.DataFrame, histogram: str, unit: str = "s", **labels: str) -> plt.Figure:
    """How many observations fell in each bucket (latest scrape, non-cumulative)."""
    counts = promql.bucket_counts(frame, histogram, **labels)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    bounds = list(counts.index)
    names = [f"≤{b:g}" if b != float("inf") else f">{bounds[-2]:g}" for b in bounds]
    ax.bar(names, counts.to_numpy())
    ax.set_xlabel(f"bucket upper bound le ({unit})")
    ax.set_ylabel("observations (count)")
    ax.set_title(f"{histogram}: observations per bucket")
    fig.tight_layout()
    return fig


def quantiles(
    frame: pd.DataFrame,
    histogram: str,
    qs: Sequence[float] = (0.5, 0.95, 0.99),
    window: float = 5.0,
    phases: pd.DataFrame | None = None,
    scale: float = 1e3,
    unit: str = "ms",
    **labels: str,
) -> plt.Figure:
    """p50/p95/p99 over time from ``histogram_quantile`` over ``rate(..._bucket[window])``."""
    origin = _origin(frame)
    table = promql.quantiles_over_time(frame, histogram, qs, window, **labels) * scale
    table.index = _elapsed(table.index, origin)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    table.plot(ax=ax, marker=".", markersize=3)
    return _finish(fig, ax, f"latency ({unit})", f"{histogram}: quantiles over a {window:g} s window", phases, origin)


def bucket_increases(frame: pd.DataFrame, histogram: str, **labels: str) -> pd.DataFrame:
    """Observations that fell in each bucket during each scrape interval (non-cumulative).

    One row per interval, indexed by the scrape time that ends it (the first scrape
    starts the first interval and has no row); one column per bucket, indexed by its
    upper bound ``le`` as a float (``inf`` for ``+Inf``), in increasing order. Each
    ``_bucket`` series' increase between neighbouring scrapes is taken first (a drop
    is a counter reset: the increase is then the new value, as in Prometheus), then
    summed over the other labels (``sum by (le)``), then de-cumulated: the count *in* a
    bucket is its cumulative increase minus that of the bucket below.
    """
    wide = promql.series(frame, f"{histogram}_bucket", **labels)
    if wide.empty:
        return pd.DataFrame()
    moved = wide.diff()
    moved = moved.mask(moved < 0, wide)  # a reset: the counter started again from 0
    moved = moved.iloc[1:]
    cumulative = moved.T.groupby(level="le").sum().T  # sum by (le); a missing series adds 0
    cumulative.columns = cumulative.columns.map(float)
    cumulative = cumulative.sort_index(axis=1)
    per_bucket = cumulative.diff(axis=1)
    per_bucket.iloc[:, 0] = cumulative.iloc[:, 0]
    per_bucket.columns.name = "le"
    per_bucket.index.name = "time"
    return per_bucket


def histogram_heatmap(
    frame: pd.DataFrame,
    histogram: str,
    per_second: bool = True,
    phases: pd.DataFrame | None = None,
    scale: float = 1e3,
    unit: str = "ms",
    log: bool = True,
    **labels: str,
) -> plt.Figure:
    """The latency distribution over time: one column per scrape interval, one row per bucket.

    The colour of a cell is how many observations fell in that bucket during that
    interval (:func:`bucket_increases`), per second when ``per_second`` (intervals
    may differ in length), else per interval. The y axis has one equal-height row per
    bucket, with the bucket bounds ``le`` (times ``scale``, in ``unit``) at the row
    edges; empty cells are left blank, and ``log`` puts the colours on a log scale so
    that a light phase is as readable as a heavy one. ``phases`` are drawn as
    vertical lines. The drawn values are ``fig.axes[0].collections[0].get_array()``:
    shape (buckets, intervals).
    """
    from matplotlib.colors import LogNorm

    origin = _origin(frame)
    counts = bucket_increases(frame, histogram, **labels)
    times = promql.series(frame, f"{histogram}_bucket", **labels).index.to_numpy(dtype=float)
    durations = np.diff(times)
    values = counts.to_numpy(dtype=float)
    if per_second:
        values = values / durations[:, None]
    shown = np.ma.masked_less_equal(values.T, 0) if log else np.ma.masked_invalid(values.T)
    fig, ax = plt.subplots(figsize=(9, 4))
    norm = LogNorm(vmin=shown.min(), vmax=shown.max()) if log and shown.count() else None
    x_edges = times - origin
    y_edges = np.arange(len(counts.columns) + 1)
    mesh = ax.pcolormesh(x_edges, y_edges, shown, cmap="viridis", norm=norm, shading="flat")
    bounds = [0.0, *counts.columns]
    ax.set_yticks(y_edges)
    ax.set_yticklabels(["+Inf" if b == float("inf") else f"{b * scale:g}" for b in bounds])
    ax.set_ylabel(f"latency bucket bounds, le ({unit})")
    ax.set_xlabel("time since start (s)")
    what = "observations/s" if per_second else "observations per scrape interval"
    colorbar = fig.colorbar(mesh, ax=ax)
    colorbar.set_label(f"{what} ({'1/s' if per_second else 'count'})")
    ax.set_title(f"{histogram}: observations per bucket and scrape interval")
    _mark_phases(ax, phases, origin)
    fig.tight_layout()
    return fig


def _mark_phases(ax, phases: pd.DataFrame | None, origin: float) -> None:
    """Like ``_shade_phases``, but with a line at each phase's start (shading would tint a heatmap)."""
    spans = _phase_spans(phases)
    if spans is None:
        return
    for name, span in spans.iterrows():
        ax.axvline(span.start - origin, color="black", linestyle="--", linewidth=1)
        ax.text(
            span.start - origin,
            1.0,
            f" {name}",
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize=8,
            bbox={"facecolor": "white", "alpha": 0.7, "linewidth": 0, "pad": 1},
        )
