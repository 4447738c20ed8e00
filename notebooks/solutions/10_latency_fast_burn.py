# Solution of exercise 10: the fast-burn page of "99.5% of requests computed within 10 ms".
# Budget: 1 - 0.995 = 0.005 of the requests; the 1h/5m page fires above 14.4 x 0.005 = 0.072 in both windows.
# Slow = over the le="0.01" bucket: 1 - (bucket rate / count rate), each summed over the instances first.


def slow_share(window):
    fast = f'sum by (model) (rate(demo_request_duration_seconds_bucket{{le="0.01"}}[{window}]))'
    every = f"sum by (model) (rate(demo_request_duration_seconds_count[{window}]))"
    return f"(1 - {fast} / {every})"


latency_page_promql = f"{slow_share('1h')} > 14.4 * 0.005 and {slow_share('5m')} > 14.4 * 0.005"
