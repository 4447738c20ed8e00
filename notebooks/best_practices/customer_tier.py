"""The bounded alternative: the same histogram, labelled by the customer's tier.

A tier comes from a small fixed set (``free``, ``pro``, ``enterprise``, and
``other`` for anything unexpected), so the number of series is fixed at load
time whatever the traffic. Per-customer questions belong in logs or traces.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]
TIERS = ("free", "pro", "enterprise", "other")


def tier_of(customer: str) -> str:
    """A customer's tier (here: a stand-in rule on the id; in real life, a lookup)."""
    if not customer.startswith("c") or not customer[1:].isdigit():
        return "other"
    return TIERS[int(customer[1:]) % 3]


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.family = pb_utils.MetricFamily(
            name="bounded_request_duration_seconds",
            description="Compute time per request, by customer tier",
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        # every series made up front: the set is known, and each shows 0 from the start
        self.by_tier = {tier: self.family.Metric(labels={**labels, "tier": tier}, buckets=BUCKETS) for tier in TIERS}

    def execute(self, requests):
        responses = []
        for request in requests:
            start = time.perf_counter()
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            result = np.cumsum(values, dtype=np.float32)
            customer = json.loads(request.parameters()).get("customer", "")
            self.by_tier[tier_of(customer)].observe(time.perf_counter() - start)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", result)]))
        return responses
