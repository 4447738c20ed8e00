# Bucket upper bounds in seconds around a 200 ms objective: dense between 50 ms and 1 s,
# 0.2 itself as a bound, a few wide ones for the tail. Triton adds +Inf.
buckets = [0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
