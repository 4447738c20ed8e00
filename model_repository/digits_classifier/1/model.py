"""digits_classifier: a real classifier served with onnxruntime, with quality and drift metrics beside latency.

The model is scikit-learn's ``StandardScaler`` + ``LogisticRegression`` trained on its bundled 8x8 digits and
exported to ONNX by ``scripts/train_digits.py``, which also wrote ``training_stats.json`` next to this file
(per-pixel means and standard deviations, the pixel range, the drift baseline and the training class shares).
Input ``IMAGES`` (FP32, shape [n, 64]: n images of 8x8 pixels, values 0..16); outputs ``LABELS`` (INT64, [n])
and ``PROBABILITIES`` (FP32, [n, 10]), exactly what the ONNX model returns.

Each request goes through three timed phases: **validate** (read the tensor and check it), **inference**
(``onnxruntime``) and **postprocess** (build the response and compute the quality metrics). Metrics, all with
``model`` and ``version`` labels (``triton_metrics.init``), every label value from a fixed, small set:

- ``digits_phase_duration_seconds{phase="validate"|"inference"|"postprocess"}`` (histogram): seconds per
  accepted request in each phase; ``_count`` is the number of accepted requests.
- ``digits_predictions_total{class="0".."9"}`` (counter): accepted images by predicted class. Its mix,
  ``sum by (class) (rate(...))`` over the total, is compared with the training mix below.
- ``digits_prediction_confidence`` (histogram): the top-class probability of each accepted image. The share
  under 0.9 (``le="0.9"`` bucket over ``_count``) rises when the model meets inputs unlike its training data.
- ``digits_input_drift_score`` (histogram): per accepted image, the root mean square of its 64 per-pixel
  z-scores against the training data (standard deviations floored at 1 pixel unit), divided by the training
  set's 99th percentile of that distance. 1.0 is "as unusual as the 1 % most unusual training images", so
  the drift signal, the share of images above 1 (``1 - bucket{le="1"} / _count``), is about 1 % on
  in-distribution data and climbs with noise, shifts or rotations. A histogram (not a gauge of the latest
  batch) so that it adds up across instances and over any time window.
- ``digits_input_errors_total{reason="wrong_shape"|"empty_batch"|"not_finite"|"out_of_range"}`` (counter):
  rejected requests, by the first failed check in that order. A rejected request gets an ``INVALID_ARG``
  error response that says what is wrong; its images count nowhere else. Triton 2.51.0 counts such a request
  in ``nv_inference_request_success`` (an error *response* from a Python model is a success to Triton: server
  issue #7713), so this counter is the one that shows it. A 1-D or 3-D ``IMAGES`` never reaches the model:
  Triton refuses a rank other than the two of ``dims: [-1, -1]`` itself, with its own 400 error.
- ``digits_training_class_share{class="0".."9"}`` (gauge): each class's share of the training labels, set
  once in ``initialize``: the baseline a class-mix alert compares with.

Aggregation in the model: a metric call to the server costs 15-40 us, so nothing is sent per image or per
request. Per request, the phase times go to ``triton_metrics`` histograms with ``aggregate=True`` (a list entry
each), and the batch's class counts, confidences and drift scores are counted with numpy into
:class:`BatchCounter` and :class:`BatchHistogram` totals (a few array additions, however many images). A push
thread hands those totals to aggregated ``triton_metrics`` counters and sends everything to the server every
``flush_s`` seconds (a parameter of ``config.pbtxt``, default 1), and ``finalize`` sends the rest: a scrape
sees each image at most one interval late. ``make bench`` measures what all this costs per request.
Aggregated histograms are written as counters ``<name>_bucket{le=...}``, ``<name>_sum`` and
``<name>_count``, which ``histogram_quantile`` reads like a native histogram; their ``# TYPE`` lines say
``counter``, so ``promtool check metrics`` asks for a ``_total`` suffix on them (see ``dropin/triton_metrics.py``).

The ``metrics`` parameter ``"off"`` runs the same validation, inference and response without any metric:
``make bench`` loads both and compares them. The drop-in helper is found as in ``metrics_helper_demo``:
next to this file, else ``<repository>/../dropin`` (``/dropin`` in Docker).
"""

import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

try:
    import triton_metrics as tm  # next to model.py: the layout of your own model
except ModuleNotFoundError:  # this course's single copy: <repository>/../dropin
    sys.path.append(str(Path(__file__).resolve().parents[3] / "dropin"))
    import triton_metrics as tm

try:
    import onnxruntime as ort
except ModuleNotFoundError as err:
    raise ModuleNotFoundError(
        "digits_classifier runs onnxruntime in the model's Python: install it there "
        "(this course's .venv: pip install -r requirements.txt; a container image: pip install onnxruntime)"
    ) from err

HERE = Path(__file__).resolve().parent
FEATURES = 64
CLASSES = tuple(str(c) for c in range(10))
PHASES = ("validate", "inference", "postprocess")
REASONS = ("wrong_shape", "empty_batch", "not_finite", "out_of_range")  # checked in this order
PHASE_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1]
CONFIDENCE_BUCKETS = [0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]
DRIFT_BUCKETS = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0]


class InputError(ValueError):
    """A request the model refuses: ``reason`` is one of :data:`REASONS`, the message says what to send."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_images(images: np.ndarray, low: float, high: float) -> None:
    """Raise :class:`InputError` unless ``images`` is a non-empty [n, 64] batch of finite values in low..high."""
    if images.ndim != 2 or images.shape[1] != FEATURES:
        raise InputError(
            "wrong_shape",
            f"IMAGES must have shape [n, {FEATURES}] (n images of 8x8 pixels), got {list(images.shape)}",
        )
    if images.shape[0] == 0:
        raise InputError("empty_batch", f"IMAGES is an empty batch (shape [0, {FEATURES}]): send at least one image")
    if not np.isfinite(images).all():
        bad = np.argwhere(~np.isfinite(images))
        raise InputError(
            "not_finite",
            f"IMAGES has {len(bad)} NaN or infinite values (first in image {bad[0][0]}, pixel {bad[0][1]})",
        )
    if images.min() < low or images.max() > high:
        bad = np.argwhere((images < low) | (images > high))
        raise InputError(
            "out_of_range",
            f"IMAGES values must lie in the training pixel range {low:g}..{high:g}; {len(bad)} do not "
            f"(min {images.min():g}, max {images.max():g}, first in image {bad[0][0]}, pixel {bad[0][1]})",
        )


class BatchHistogram:
    """A histogram counted a whole batch at a time, with numpy, in the model; ``push()`` hands the counts over.

    ``observe_many(values)`` adds the batch's count per bucket (``np.searchsorted``, ``np.bincount``) and its sum
    to numpy totals: no call per value, none to the server. ``push()`` (every ``flush_s``, from the model's push
    thread, and in ``finalize``) adds the totals to aggregated counters written like an aggregated
    ``tm.Histogram``: ``<name>_bucket{le}`` (cumulative), ``<name>_sum``, ``<name>_count``.
    """

    def __init__(self, name: str, documentation: str, buckets: list[float]) -> None:
        self.bounds = np.asarray(tm.check_buckets(buckets), dtype=np.float64)
        les = [f"{b:.16g}" for b in self.bounds] + ["+Inf"]  # Triton's spelling of le: 0.5, 1, +Inf
        family = tm.Counter(f"{name}_bucket", documentation, ["le"], aggregate=True, conventions=False)
        self.buckets = [family.labels(le=le) for le in les]
        self.sum = tm.Counter(f"{name}_sum", documentation + " (sum)", aggregate=True, conventions=False)
        self.count = tm.Counter(f"{name}_count", documentation + " (count)", aggregate=True, conventions=False)
        self.mutex = threading.Lock()
        self.pending = np.zeros(len(les), dtype=np.int64)  # per bucket, not cumulative
        self.total = 0.0

    def observe_many(self, values: np.ndarray) -> None:
        """Record every value of ``values`` (finite, >= 0)."""
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.pending))
        total = float(values.sum())
        with self.mutex:
            self.pending += counts
            self.total += total

    def push(self) -> None:
        """Add what was observed since the last push to the aggregated counters."""
        with self.mutex:
            counts, self.pending = self.pending, np.zeros_like(self.pending)
            total, self.total = self.total, 0.0
        cumulative = np.cumsum(counts).tolist()
        if cumulative[-1]:
            for series, count in zip(self.buckets, cumulative):  # noqa: B905 (same length)
                if count:
                    series.inc(count)
            self.sum.inc(total)
            self.count.inc(cumulative[-1])


class BatchCounter:
    """A counter with one label whose values are ``0..size-1`` (class ids), counted a batch at a time with numpy."""

    def __init__(self, name: str, documentation: str, label: str, size: int) -> None:
        family = tm.Counter(name, documentation, [label], aggregate=True)
        self.series = [family.labels(str(i)) for i in range(size)]  # every value at 0 from the start
        self.mutex = threading.Lock()
        self.pending = np.zeros(size, dtype=np.int64)

    def add(self, ids: np.ndarray) -> None:
        """Count each id of ``ids`` once (ints in 0..size-1)."""
        counts = np.bincount(ids, minlength=len(self.pending))
        with self.mutex:
            self.pending += counts

    def push(self) -> None:
        """Add what was counted since the last push to the aggregated counter."""
        with self.mutex:
            counts, self.pending = self.pending, np.zeros_like(self.pending)
        for series, count in zip(self.series, counts.tolist()):  # noqa: B905 (same length)
            if count:
                series.inc(count)


class TritonPythonModel:
    def initialize(self, args):
        parameters = json.loads(args["model_config"]).get("parameters", {})
        setting = {key: value["string_value"] for key, value in parameters.items()}
        self.metrics = setting.get("metrics", "on") != "off"
        stats = json.loads((HERE / "training_stats.json").read_text())
        self.low, self.high = (float(v) for v in stats["pixel_range"])
        # drift score = sqrt(mean_j ((x_j - mean_j) / std_j)^2) / p99, expanded so that a batch costs two
        # matrix-vector products: sum_j x_j^2 w_j - x . (2 mean w) + sum_j mean_j^2 w_j, with w = 1 / std^2
        means = np.asarray(stats["feature_means"], dtype=np.float64)
        weights = 1.0 / np.asarray(stats["feature_stds"], dtype=np.float64) ** 2
        self.drift_terms = (weights, 2.0 * means * weights, float(np.sum(means * means * weights)))
        self.drift_scale = 1.0 / (FEATURES * float(stats["drift_distance_p99"]) ** 2)
        # one thread, no thread pool: the model is a 64 x 10 matrix product, far too small to split, and on a
        # small machine a pool's spinning threads would take CPU from Triton and the other models
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(HERE / "digits.onnx"), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        if not self.metrics:
            return
        flush_s = float(setting.get("flush_s", "1"))
        tm.init(args, flush_interval_s=flush_s)
        phases = tm.Histogram(
            "digits_phase_duration_seconds",
            "Seconds the model spends per accepted request in each phase (validate, inference, postprocess)",
            ["phase"],
            buckets=PHASE_BUCKETS,
            aggregate=True,
        )
        self.phase = [phases.labels(phase=p) for p in PHASES]
        self.predictions = BatchCounter("digits_predictions_total", "Accepted images by predicted class", "class", 10)
        errors = tm.Counter("digits_input_errors_total", "Rejected requests by reason", ["reason"], aggregate=True)
        self.errors = {reason: errors.labels(reason) for reason in REASONS}
        self.confidence = BatchHistogram(
            "digits_prediction_confidence", "Top-class probability of each accepted image", CONFIDENCE_BUCKETS
        )
        self.drift = BatchHistogram(
            "digits_input_drift_score",
            "Per accepted image: RMS z-score distance from the training data over the training 99th percentile",
            DRIFT_BUCKETS,
        )
        share = tm.Gauge("digits_training_class_share", "Share of each class in the training labels", ["class"])
        for label in CLASSES:
            share.labels(label).set(float(stats["class_shares"][label]))
        # the batch counts reach the aggregated counters, and the server, every flush_s: one thread does both
        self.batched = (self.predictions, self.confidence, self.drift)
        self.stop = threading.Event()
        self.pusher = threading.Thread(target=self.push_every, args=(flush_s,), name="digits-push", daemon=True)
        self.pusher.start()

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self.handle(request))
            except InputError as err:
                if self.metrics:
                    self.errors[err.reason].inc()
                error = pb_utils.TritonError(f"digits_classifier: {err}", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
            except Exception as err:  # a bug or a runtime failure: an error response, the server stays up
                error = pb_utils.TritonError(f"digits_classifier: {err.__class__.__name__}: {err}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        return responses

    def handle(self, request) -> "pb_utils.InferenceResponse":
        """One request: validate, run the ONNX model, build the response (and record its metrics)."""
        start = time.perf_counter()
        images = pb_utils.get_input_tensor_by_name(request, "IMAGES").as_numpy()
        check_images(images, self.low, self.high)
        validated = time.perf_counter()
        labels, probabilities = self.session.run(None, {self.input_name: np.ascontiguousarray(images)})
        inferred = time.perf_counter()
        response = pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("LABELS", labels.astype(np.int64, copy=False)),
                pb_utils.Tensor("PROBABILITIES", probabilities.astype(np.float32, copy=False)),
            ]
        )
        if not self.metrics:
            return response
        self.record_quality(images, labels, probabilities)
        done = time.perf_counter()
        for series, seconds in zip(self.phase, (validated - start, inferred - validated, done - inferred)):  # noqa: B905
            series.observe(seconds)
        return response

    def record_quality(self, images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray) -> None:
        """Class counts, top-class probabilities and drift scores of one accepted batch: numpy sums only."""
        self.predictions.add(labels)
        self.confidence.observe_many(probabilities.max(axis=1))
        self.drift.observe_many(self.drift_scores(images))

    def drift_scores(self, images: np.ndarray) -> np.ndarray:
        """Per image: RMS of its per-pixel z-scores against the training data, over the training p99."""
        x = images.astype(np.float64)
        weights, cross, constant = self.drift_terms
        squares = (x * x) @ weights - x @ cross + constant
        return np.sqrt(np.maximum(squares, 0.0) * self.drift_scale)

    def push(self) -> None:
        """Hand the batch counts to the aggregated counters, then send every aggregated metric to the server."""
        for batched in self.batched:
            batched.push()
        tm.flush()

    def push_every(self, seconds: float) -> None:
        while not self.stop.wait(seconds):
            try:
                self.push()
            except Exception as err:  # keep pushing; say why in Triton's log
                pb_utils.Logger.log_error(f"digits_classifier: push failed: {err.__class__.__name__}: {err}")

    def finalize(self):
        if self.metrics:
            self.stop.set()
            self.pusher.join(5)
            self.push()  # what the last interval gathered
            tm.close()
