# Solution of exercise 09: the fleet's p95 latency over the last minute.
# Rate each pod's buckets, add them up per bucket bound (sum by (le)), then take the quantile.
bucket_rates = 'rate(demo_request_duration_seconds_bucket{namespace="triton"}[1m])'
fleet_p95_promql = f"histogram_quantile(0.95, sum by (le) ({bucket_rates}))"
