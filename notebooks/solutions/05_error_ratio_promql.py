# The share of requests that failed over the last 10 s: rates first (per series), then sum, then divide.
error_ratio_promql = 'sum(rate(demo_requests_total{outcome="error"}[10s])) / sum(rate(demo_requests_total[10s]))'
