# Solution of exercise 12: the requests behind a bad p99, and why each was slow.
# Pick by the time in Triton (total_s), not by compute_s: a request can be slow because it waited in the queue.
import numpy as np
import pandas as pd


def behind_p99(traces):
    """For each request above the p99 of traces["total_s"]: "queue" or "compute", indexed by request_id."""
    slow = traces[traces["total_s"] > traces["total_s"].quantile(0.99)]
    cause = np.where(slow["queue_s"] > slow["compute_s"], "queue", "compute")
    return pd.Series(cause, index=slow["request_id"])
