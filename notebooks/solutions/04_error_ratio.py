from labkit import promql


def error_ratio(frame, window):
    """Share of requests that failed over the last `window` seconds, per time:
    sum(rate(demo_requests_total{outcome="error"}[w])) / sum(rate(demo_requests_total[w]))."""
    rates = promql.rate(frame, "demo_requests_total", window, by=["outcome"])  # rate per series, then sum by outcome
    return rates["error"] / rates.sum(axis=1)
