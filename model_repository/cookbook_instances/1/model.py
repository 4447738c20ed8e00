"""cookbook_instances: per-instance series vs one shared series.

Triton runs ``count`` copies (instances) of this model, each in its own Python
process. Each one creates the same two metric families:

- ``cookbook_instance_requests_total{instance=...}``: the ``instance`` label is
  ``args["model_instance_name"]`` (e.g. ``cookbook_instances_0_1``), so each
  instance owns its own series;
- ``cookbook_shared_requests_total``: no instance label, so the instances'
  ``Metric`` objects point at one and the same series (same name, same labels).

It returns its input doubled, after ``SLEEP_S`` of pretend work, so requests
spread over both instances.

There is deliberately no ``finalize`` that deletes the families: on Triton
2.51.0 deleting a family that another instance still uses crashed the server
on an in-place reload (notebook 08, section 5).
"""

import time

import triton_python_backend_utils as pb_utils

SLEEP_S = 0.002


class TritonPythonModel:
    def initialize(self, args):
        labels = {"model": args["model_name"], "version": args["model_version"]}
        self.per_instance_family = pb_utils.MetricFamily(
            name="cookbook_instance_requests_total",
            description="Requests handled, one series per model instance",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.per_instance = self.per_instance_family.Metric(labels={**labels, "instance": args["model_instance_name"]})
        self.shared_family = pb_utils.MetricFamily(
            name="cookbook_shared_requests_total",
            description="Requests handled, one series shared by all instances",
            kind=pb_utils.MetricFamily.COUNTER,
        )
        self.shared = self.shared_family.Metric(labels=labels)

    def execute(self, requests):
        responses = []
        for request in requests:
            values = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            time.sleep(SLEEP_S)
            self.per_instance.increment(1)
            self.shared.increment(1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT0", values * 2)]))
        return responses
