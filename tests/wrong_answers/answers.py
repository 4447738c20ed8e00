"""Known-wrong answers to the function exercises: each must be graded "wrong"."""

import numpy as np
from tritonclient.utils import InferenceServerException

from labkit import process, traffic


def metrics_flags_all_interfaces(port):
    return [f"--metrics-port={port}", "--metrics-address=0.0.0.0", "--metrics-interval-ms=250"]


def metrics_flags_wrong_port(port):
    """A port other than the one asked for: a free one (8002 is taken whenever the Compose stack runs)."""
    other = process.free_port()
    while other == port:
        other = process.free_port()
    return [f"--metrics-port={other}", "--metrics-address=127.0.0.1", "--metrics-interval-ms=250"]


def metrics_flags_no_interval(port):
    return [f"--metrics-port={port}", "--metrics-address=127.0.0.1"]


def send_wrong_shape(server):
    """Bad requests that Triton refuses before the model: the model's error counter does not move."""
    client = traffic.make_client(server, "http")
    for i in range(50):
        values = np.ones(8, dtype=np.float32)
        if i % 5 == 0:
            values = values.reshape(2, 4)
        try:
            traffic.infer(client, values)
        except InferenceServerException:
            pass
    client.close()
    return 50


def send_random_errors(server):
    """error_rate=0.2 makes each request bad with probability 0.2: not exactly 10 of 50."""
    # one client, so the draw is reproducible: seed 3 makes 6 of the 50 bad
    frame = traffic.closed_loop(server, concurrency=1, requests=50, error_rate=0.2, seed=3, progress=False)
    assert frame["bad"].sum() != 10
    return frame


def error_ratio_error_over_success(frame, window):
    from labkit import promql

    rates = promql.rate(frame, "demo_requests_total", window, by=["outcome"])
    return rates["error"] / rates["success"]


def error_ratio_totals(frame, window):
    wide = frame.pivot_table(index="time", columns="outcome", values="value")
    return wide["error"] / (wide["error"] + wide["success"])


def error_ratio_naive_diff(frame, window):
    wide = frame.pivot_table(index="time", columns="outcome", values="value")
    steps = max(1, int(round(window / wide.index.to_series().diff().median())))
    moved = wide.diff(steps)
    return moved["error"] / moved.sum(axis=1)


def _plot_04b(xs, ys, xlabel="time since start (s)", ylabel="rate (requests/s)", title="Requests per second"):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot(xs, ys)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return ax


def plot_rate_cumulative(frame, window):
    """The raw counter, not its rate."""
    from labkit import promql

    counter = promql.series(frame, "demo_request_duration_seconds_count").sum(axis=1)
    return _plot_04b(counter.index - frame["time"].min(), counter.to_numpy(), ylabel="requests (requests)")


def plot_rate_bucket(frame, window):
    """The rate of the _bucket series (summed over every le), not of _count."""
    from labkit import promql

    rates = promql.rate(frame, "demo_request_duration_seconds_bucket", window)["total"]
    return _plot_04b(rates.index - frame["time"].min(), rates.to_numpy())


def plot_rate_sum(frame, window):
    """The rate of _sum: seconds of compute per second."""
    from labkit import promql

    rates = promql.rate(frame, "demo_request_duration_seconds_sum", window)["total"]
    return _plot_04b(rates.index - frame["time"].min(), rates.to_numpy())


def plot_rate_no_units(frame, window):
    """The right line, but axis labels without units."""
    from labkit import promql

    rates = promql.rate(frame, "demo_request_duration_seconds_count", window)["total"]
    return _plot_04b(rates.index - frame["time"].min(), rates.to_numpy(), xlabel="time", ylabel="rate")


def plot_rate_no_title(frame, window):
    """The right line and units, at the scrape times themselves, but no title."""
    from labkit import promql

    rates = promql.rate(frame, "demo_request_duration_seconds_count", window)["total"]
    return _plot_04b(rates.index, rates.to_numpy(), title="")
