import matplotlib.pyplot as plt

from labkit import promql


def plot_rate(frame, window):
    """Plot rate(demo_request_duration_seconds_count[window]) over time; return the Axes."""
    rates = promql.rate(frame, "demo_request_duration_seconds_count", window)["total"]  # one column: "total"
    seconds = rates.index - frame["time"].min()  # seconds since the first scrape
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.plot(seconds, rates.to_numpy(), marker=".")
    ax.set_xlabel("time since the first scrape (s)")
    ax.set_ylabel(f"rate over {window:g} s (requests/s)")
    ax.set_title("Requests the model's latency histogram observed, per second")
    return ax
