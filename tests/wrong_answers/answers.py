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
