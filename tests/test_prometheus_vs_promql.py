"""labkit.promql against the real Prometheus, on one run of the real Triton that restarts midway.

Prometheus scrapes Triton every second; labkit.scrape.Sampler samples the same
endpoint at the same interval, started on the same beat as Prometheus' scrapes.
Triton is stopped halfway and a new server is started on the SAME ports, so
every counter resets to 0 while Prometheus and the sampler keep going.

Two comparisons, at the evaluation times of a Prometheus ``query_range``:

1. labkit.promql on the samples Prometheus stored (``raw_samples``): the same
   input, so the same answer to float precision (relative 1e-9), across the reset.
2. labkit.promql on the sampler's own scrapes: the same run read at slightly
   different moments. Each side read the counters somewhere between the start
   of its scrape and the end of it (Prometheus: its timestamp plus its
   ``scrape_duration_seconds``; the sampler: its timestamp until its answer was
   parsed, longer when the client threads keep this Python busy). ``u`` is the
   longest span covering both readings of one scrape, measured. A request that
   lands between the two readings of one window edge is counted by one side and
   not the other, so the increase over a window may differ by the requests of
   ``u`` at each edge, rounded up to whole requests, times the extrapolation
   factor (at most 1.5 at 1 s scrapes): ``|d increase| <= 1.5 * 2 * (ceil(R * u) + 1)``
   with R the highest per-second request count. The rate's bound is that over
   the window.
   Quantiles move inside a bucket with the counts: the bound is the width of
   the bucket holding Prometheus' estimate times the count difference over the
   count in that bucket, plus a tenth of the width for the interpolation.
   Evaluation times fall half-way between scrapes, so no sample sits on a
   window's edge. Windows whose samples do not pair up (a scrape that one side
   got and the other did not, around the restart) are left out and counted.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from labkit import paths, promql, scrape, traffic, triton
from labkit import prometheus as lp
from tests.conftest import require_tool

pytestmark = pytest.mark.integration  # a real Prometheus and a real Triton

INTERVAL = 1.0  # Prometheus scrape interval = sampler interval, seconds
WINDOW = 5.0  # rate window: five scrapes
RATE = 40.0  # requests per second, open loop
PHASE_S = 6.0  # traffic before and after the restart


class TimedSampler(scrape.Sampler):
    """labkit's Sampler, also noting when each scrape began and when its answer was parsed."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.spans: list[tuple[float, float]] = []

    def scrape_once(self) -> None:
        began = time.time()
        super().scrape_once()
        self.spans.append((began, time.time()))


def align_to(phase: float, interval: float) -> None:
    """Sleep until ``time.time() % interval == phase``."""
    wait = (phase - time.time() % interval) % interval
    time.sleep(wait)


@pytest.fixture(scope="module")
def run():
    require_tool("prometheus", lp.INSTALL_HINT)
    ports = triton.Ports.pick()
    with lp.start([f"127.0.0.1:{ports.metrics}"], scrape_interval=INTERVAL) as prom:
        server = triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"], ports=ports)
        try:
            prom.wait_for('up{job="triton"} == 1')
            now = time.time()
            first = prom.raw_samples("up", now - 60, now)["time"].min()
            align_to(first % INTERVAL, INTERVAL)
            sampler = TimedSampler(server.metrics_url, interval=INTERVAL, keep="demo_").start()
            begin = time.time()
            before = traffic.open_loop(server, rate=RATE, duration=PHASE_S, error_rate=0.1, progress=False)
            server.stop()
            stopped = time.time()
            server = triton.start(
                paths.MODEL_REPOSITORY, models=["metrics_demo"], ports=ports
            )  # same ports: Prometheus' target again
            restarted = time.time()
            after = traffic.open_loop(server, rate=RATE, duration=PHASE_S, error_rate=0.1, progress=False)
            time.sleep(2 * INTERVAL)
            end = time.time()
            frame = sampler.stop()
        finally:
            server.stop()
        # evaluate half-way between scrapes: no sample sits on a window's edge
        at = np.round(np.arange(begin + WINDOW + INTERVAL / 2, end, INTERVAL), 3)
        yield {
            "prom": prom,
            "frame": frame,
            "raw": {
                name: prom.raw_samples(name, begin - 3 * INTERVAL, end)
                for name in ("demo_requests_total", "demo_request_duration_seconds_bucket")
            },
            "at": at,
            "sampler_spans": sampler.spans,
            "scrape_durations": prom.raw_samples("scrape_duration_seconds", begin - 3 * INTERVAL, end),
            "traffic": pd.concat([before, after], ignore_index=True),
            "stopped": stopped,
            "restarted": restarted,
        }


def prometheus_range(run, expr: str, by: str | None = None) -> pd.DataFrame:
    frame = run["prom"].query_range(expr, run["at"][0], run["at"][-1], INTERVAL)
    if by is None:
        return frame.set_index("time")[["value"]].rename(columns={"value": "total"})
    return frame.pivot(index="time", columns=by, values="value")


def test_the_run_really_restarted(run):
    raw = run["raw"]["demo_requests_total"]
    success = raw[raw["outcome"] == "success"].sort_values("time")["value"].to_numpy()
    assert (np.diff(success) < 0).sum() == 1, "one counter reset, from the restart"
    sampled = run["frame"]
    ours = sampled[(sampled["sample"] == "demo_requests_total") & (sampled["outcome"] == "success")]
    assert (np.diff(ours.sort_values("time")["value"].to_numpy()) < 0).sum() == 1
    assert run["traffic"]["ok"].sum() > 0.8 * RATE * PHASE_S * 2 * 0.9


@pytest.mark.parametrize("fn", ["rate", "increase"])
def test_same_samples_same_answer(run, fn):
    """labkit.promql on Prometheus' stored samples = Prometheus, at every time, reset included."""
    theirs = prometheus_range(run, f"sum by (outcome) ({fn}(demo_requests_total[{WINDOW:g}s]))", by="outcome")
    ours = getattr(promql, fn)(
        run["raw"]["demo_requests_total"], "demo_requests_total", WINDOW, by=["outcome"], at=theirs.index
    )
    assert len(theirs) >= PHASE_S, "evaluation times before, across and after the restart"
    for outcome in ("success", "error"):
        pd.testing.assert_series_equal(ours[outcome], theirs[outcome], check_names=False, rtol=1e-9, atol=1e-12)
    gap = (ours - theirs).abs().max().max()
    print(f"\n{fn}: labkit.promql on Prometheus' own samples vs Prometheus, largest gap {gap:.3g}")


def test_same_samples_same_quantiles(run):
    expr = f"histogram_quantile({{q}}, sum by (le) (rate(demo_request_duration_seconds_bucket[{WINDOW:g}s])))"
    raw = run["raw"]["demo_request_duration_seconds_bucket"]
    for q in (0.5, 0.95, 0.99):
        theirs = prometheus_range(run, expr.format(q=q))["total"]
        ours = promql.quantiles_over_time(raw, "demo_request_duration_seconds", (q,), WINDOW, at=run["at"])
        ours = ours[promql.quantile_name(q)].reindex(theirs.index)
        pd.testing.assert_series_equal(ours, theirs, check_names=False, rtol=1e-9)


# ------------------------------------------------------------ the sampler's own scrapes


def pair_samples(run) -> tuple[float, pd.Series]:
    """Longest span covering both readings of a paired scrape, and for each eval time whether its window pairs up."""
    raw = run["raw"]["demo_requests_total"]
    prom_times = np.sort(raw["time"].unique())
    ours = run["frame"]
    our_times = np.sort(ours[ours["sample"] == "demo_requests_total"]["time"].unique())
    offsets = []
    for t in prom_times:
        nearest = our_times[np.argmin(np.abs(our_times - t))] if len(our_times) else math.inf
        offsets.append(abs(nearest - t))
    offsets = np.array(offsets)
    paired_prom = prom_times[offsets < INTERVAL / 4]
    durations = run["scrape_durations"].set_index("time")["value"]
    spans = np.array(run["sampler_spans"])
    delta = 0.0
    for t in paired_prom:
        ours_began, ours_done = spans[np.argmin(np.abs(spans[:, 0] - t))]
        prom_done = t + float(durations.get(t, INTERVAL))
        delta = max(delta, max(ours_done, prom_done) - min(ours_began, t))
    ok = {}
    for t in run["at"]:
        n_prom = ((prom_times >= t - WINDOW) & (prom_times <= t)).sum()
        n_paired = ((paired_prom >= t - WINDOW) & (paired_prom <= t)).sum()
        n_ours = ((our_times >= t - WINDOW) & (our_times <= t)).sum()
        ok[t] = n_prom == n_paired == n_ours
    return delta, pd.Series(ok)


def peak_rate(run) -> float:
    """Highest count of requests that ended within one second, client side."""
    ends = run["traffic"]["end"].to_numpy()
    return float(max(((ends >= e - 1.0) & (ends <= e)).sum() for e in ends))


def test_sampler_rate_and_increase_within_tolerance(run):
    delta, comparable = pair_samples(run)
    peak = peak_rate(run)
    bound_increase = 1.5 * 2 * (math.ceil(peak * delta) + 1)
    gaps = {}
    for fn in ("increase", "rate"):
        theirs = prometheus_range(run, f"sum by (outcome) ({fn}(demo_requests_total[{WINDOW:g}s]))", by="outcome")
        ours = getattr(promql, fn)(run["frame"], "demo_requests_total", WINDOW, by=["outcome"], at=theirs.index)
        keep = comparable.reindex(theirs.index, fill_value=False).to_numpy()
        diff = (ours[keep] - theirs[keep]).abs()
        bound = bound_increase / (WINDOW if fn == "rate" else 1.0)
        gaps[fn] = diff.max().max()
        assert not ours[keep].isna().any().any() and not theirs[keep].isna().any().any()
        assert (diff <= bound).all().all(), f"{fn}: gaps {diff.max().to_dict()} over the bound {bound:.2f}"
        assert (theirs >= 0).all().all() and (ours.fillna(0) >= 0).all().all(), "a reset never reads as a drop"
    print(
        f"\nsampler vs Prometheus: readings within u = {delta * 1e3:.1f} ms, peak {peak:.0f} req/s, "
        f"{comparable.sum()}/{len(comparable)} windows paired; largest gap: increase {gaps['increase']:.2f} "
        f"(bound {bound_increase:.1f}), rate {gaps['rate']:.3f} req/s (bound {bound_increase / WINDOW:.2f})"
    )
    # how many windows pair up depends on how punctually a busy machine ran both scrapers; what must hold is
    # that the bound above was checked on some real windows, not on none
    assert comparable.any(), "no window paired up: the sampler's and Prometheus' scrapes never fell together"


def test_sampler_quantiles_within_tolerance(run):
    delta, comparable = pair_samples(run)
    peak = peak_rate(run)
    count_gap = 1.5 * 2 * (math.ceil(peak * delta) + 1)  # observations, as for the counter
    raw = run["raw"]["demo_request_duration_seconds_bucket"]
    bounds = sorted({float(le) for le in raw["le"].unique()})
    worst = 0.0
    for q in (0.5, 0.95):
        expr = f"histogram_quantile({q}, sum by (le) (rate(demo_request_duration_seconds_bucket[{WINDOW:g}s])))"
        theirs = prometheus_range(run, expr)["total"]
        ours = promql.quantiles_over_time(run["frame"], "demo_request_duration_seconds", (q,), WINDOW, at=theirs.index)[
            promql.quantile_name(q)
        ]
        counts = promql.increase(raw, "demo_request_duration_seconds_bucket", WINDOW, by=["le"], at=theirs.index)
        counts.columns = counts.columns.map(float)
        counts = counts[sorted(counts.columns)]
        for t in theirs.index[comparable.reindex(theirs.index, fill_value=False).to_numpy()]:
            if math.isnan(theirs[t]):
                continue
            upper = next(b for b in bounds if b >= theirs[t] - 1e-12)
            lower = max([0.0] + [b for b in bounds if b < upper])
            in_bucket = counts.loc[t, upper] - (counts.loc[t, lower] if lower > 0 else 0.0)
            width = upper - lower
            bound = width * min(1.0, count_gap / max(in_bucket, 1e-9)) + 0.1 * width
            gap = abs(ours[t] - theirs[t])
            worst = max(worst, gap / width)
            assert gap <= bound, f"p{q * 100:g} at {t}: {ours[t]} vs {theirs[t]}, bound {bound}"
    print(f"\nsampler vs Prometheus quantiles: largest gap {worst:.2f} of the bucket's width")
