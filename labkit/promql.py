"""PromQL's ``rate``, ``increase`` and ``histogram_quantile``, in pandas.

They work on the tidy frames of :mod:`labkit.scrape` (many scrapes of one
server) and follow Prometheus' own algorithms (``promql/functions.go``,
``promql/quantile.go``):

- ``increase``/``rate`` take the samples inside ``[t - window, t]`` of each
  series, add back every drop (a counter reset: the server restarted, so the
  counter began again at 0), and extrapolate to the window's edges the way
  Prometheus does, never to below zero.
- ``histogram_quantile`` interpolates linearly inside the bucket that holds the
  wanted rank; a rank in the ``+Inf`` bucket returns the highest finite bound.

As in PromQL, a ``rate`` is taken per series *before* summing series together.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from labkit.scrape import BASE_COLUMNS, select


def extrapolated_delta(
    times: Sequence[float], values: Sequence[float], t: float, window: float, *, is_rate: bool, is_counter: bool = True
) -> float:
    """Prometheus' ``extrapolatedRate`` for one series at evaluation time ``t``.

    Returns NaN when fewer than two samples lie in ``[t - window, t]``. Times are
    taken in whole milliseconds, as Prometheus stores them, so that a sample on
    the window's edge is in or out exactly as it is for Prometheus, and the
    arithmetic follows ``promql/functions.go`` step by step (results agree with
    Prometheus 2.42 to the last bit or so on the same samples).
    """
    ts = np.round(np.asarray(times, dtype=float) * 1000).astype(np.int64)
    vs = np.asarray(values, dtype=float)
    range_end = int(round(t * 1000))
    range_start = range_end - int(round(window * 1000))
    inside = (ts >= range_start) & (ts <= range_end)
    ts, vs = ts[inside], vs[inside]
    if ts.size < 2:
        return math.nan
    result = float(vs[-1] - vs[0])
    if is_counter:
        for before, after in zip(vs[:-1], vs[1:], strict=True):
            if after < before:
                result += float(before)  # a reset: the counter restarted from 0
    duration_to_start = (ts[0] - range_start) / 1000
    duration_to_end = (range_end - ts[-1]) / 1000
    sampled = (ts[-1] - ts[0]) / 1000
    average_step = sampled / (ts.size - 1)
    if is_counter and result > 0 and vs[0] >= 0:
        duration_to_zero = sampled * (vs[0] / result)  # extrapolate no further back than the counter's zero
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_step * 1.1
    interval = sampled
    interval += duration_to_start if duration_to_start < threshold else average_step / 2
    interval += duration_to_end if duration_to_end < threshold else average_step / 2
    factor = interval / sampled
    if is_rate:
        factor /= window
    return float(result * factor)


def series(frame: pd.DataFrame, sample: str, **labels: str) -> pd.DataFrame:
    """One column per distinct label set of ``sample``, indexed by scrape time."""
    rows = select(frame, sample, **labels)
    label_cols = [c for c in rows.columns if c not in (*BASE_COLUMNS, "value") and rows[c].notna().any()]
    if rows.empty:
        return pd.DataFrame()
    keys = rows[label_cols].fillna("").astype(str).agg(tuple, axis=1) if label_cols else pd.Series([()] * len(rows))
    wide = rows.assign(_series=keys.values).pivot_table(index="time", columns="_series", values="value", aggfunc="sum")
    wide.columns = pd.MultiIndex.from_tuples(wide.columns, names=label_cols) if label_cols else wide.columns
    return wide.sort_index()


def _delta_frame(
    frame: pd.DataFrame,
    sample: str,
    window: float,
    by: Iterable[str],
    step: float | None,
    is_rate: bool,
    labels: Mapping[str, str],
    at: Sequence[float] | None = None,
) -> pd.DataFrame:
    wide = series(frame, sample, **labels)
    if wide.empty:
        return pd.DataFrame()
    times = wide.index.to_numpy(dtype=float)
    if at is not None:
        eval_times = np.asarray(at, dtype=float)
    elif step is None:
        eval_times = times
    else:
        eval_times = np.arange(times[0] + step, times[-1] + step / 2, step)
    by = list(by)
    out: dict[tuple, pd.Series] = {}
    for column in wide.columns:
        col = wide[column].dropna()
        key = _group_key(wide.columns.names, column, by)
        values = [extrapolated_delta(col.index, col.to_numpy(), t, window, is_rate=is_rate) for t in eval_times]
        current = pd.Series(values, index=eval_times)
        out[key] = current if key not in out else out[key].add(current, fill_value=0.0)
    result = pd.DataFrame(out, index=eval_times)
    result.index.name = "time"
    if not by:
        result.columns = ["total"]
    elif len(by) == 1:
        result.columns = pd.Index([k[0] for k in result.columns], name=by[0])
    else:
        result.columns = pd.MultiIndex.from_tuples(list(result.columns), names=by)
    return result


def _group_key(names: Sequence[str], column, by: Sequence[str]) -> tuple:
    if not by:
        return ("total",)
    values = column if isinstance(column, tuple) else (column,)
    mapping = dict(zip(names, values, strict=False))
    return tuple(mapping.get(b, "") for b in by)


def rate(
    frame: pd.DataFrame,
    sample: str,
    window: float,
    by: Iterable[str] = (),
    step: float | None = None,
    at: Sequence[float] | None = None,
    **labels: str,
) -> pd.DataFrame:
    """``sum by (by) (rate(sample{labels}[window]))`` at each scrape time (or every ``step`` s).

    With no ``by``, the single column is named ``"total"``. Values are per second.
    ``at`` gives the evaluation times (epoch seconds) explicitly, e.g. those of a
    Prometheus ``query_range``, instead of the scrape times or ``step``.
    """
    return _delta_frame(frame, sample, window, by, step, True, labels, at)


def increase(frame: pd.DataFrame, sample: str, window: float, **options) -> pd.DataFrame:
    """``sum by (by) (increase(sample{labels}[window]))``, with :func:`rate`'s options; not divided by window."""
    by, step, at = options.pop("by", ()), options.pop("step", None), options.pop("at", None)
    return _delta_frame(frame, sample, window, by, step, False, options, at)


def _le(value) -> float:
    return math.inf if str(value) in ("+Inf", "Inf", "inf") else float(value)


def histogram_quantile(q: float, buckets: Mapping | pd.Series) -> float:
    """Prometheus' ``histogram_quantile`` over cumulative bucket counts keyed by ``le``.

    ``buckets`` maps each upper bound (string or number, ``"+Inf"`` included) to
    its cumulative count (or rate). Returns NaN without a ``+Inf`` bucket or
    without observations. A NaN count is left out, as labkit uses NaN for "no
    rate in this window" where Prometheus would have no sample at all.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    pairs: dict[float, float] = {}
    for le, count in dict(buckets).items():
        if count is None or (isinstance(count, float) and math.isnan(count)):
            continue
        bound = _le(le)
        pairs[bound] = pairs.get(bound, 0.0) + float(count)
    bounds = sorted(pairs)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return math.nan
    counts = np.maximum.accumulate([pairs[b] for b in bounds])  # ensure monotonic, as Prometheus does
    total = counts[-1]
    if total == 0:
        return math.nan
    rank = q * total
    b = int(np.searchsorted(counts, rank, side="left"))
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    if count <= 0:  # only when q = 0 and the first bucket is empty: 0/0 in Prometheus, so NaN
        return math.nan
    return start + (end - start) * (rank / count)


def quantiles_over_time(
    frame: pd.DataFrame,
    histogram: str,
    qs: Sequence[float] = (0.5, 0.95, 0.99),
    window: float = 10.0,
    step: float | None = None,
    at: Sequence[float] | None = None,
    **labels: str,
) -> pd.DataFrame:
    """``histogram_quantile(q, sum by (le) (rate(<histogram>_bucket[window])))`` for each q.

    ``histogram`` is the family name (without ``_bucket``). Columns are named
    ``p50``, ``p95``, ... in seconds (the unit of the histogram); NaN where the
    window held no observations.
    """
    rates = rate(frame, f"{histogram}_bucket", window, by=["le"], step=step, at=at, **labels)
    if rates.empty:
        return pd.DataFrame(columns=[quantile_name(q) for q in qs])
    out = {quantile_name(q): [histogram_quantile(q, row) for _, row in rates.iterrows()] for q in qs}
    return pd.DataFrame(out, index=rates.index)


def quantile_name(q: float) -> str:
    """``0.95`` -> ``"p95"``, ``0.999`` -> ``"p99.9"``."""
    return f"p{q * 100:g}"


def bucket_counts(frame: pd.DataFrame, histogram: str, **labels: str) -> pd.Series:
    """Per-bucket (non-cumulative) counts from the latest scrape, indexed by upper bound."""
    rows = select(frame, f"{histogram}_bucket", **labels)
    if rows.empty:
        return pd.Series(dtype=float)
    rows = rows[rows["time"] == rows["time"].max()]
    cumulative = rows.groupby(rows["le"].map(_le))["value"].sum().sort_index()
    return cumulative.diff().fillna(cumulative.iloc[0])
