"""triton_metrics: Prometheus-style metrics for a Triton Python-backend model, in one file.

Copy this file next to your ``model.py`` (``<model>/1/triton_metrics.py``); the
Python backend puts that folder on ``sys.path``, so ``import triton_metrics`` works.
It needs Triton 24.08 (server 2.49.0) or later, Python 3.8 or later, and nothing
but ``pb_utils``.

    import triton_metrics as tm

    class TritonPythonModel:
        def initialize(self, args):
            tm.init(args)  # every series gets the labels model=<name>, version=<version>
            self.requests = tm.Counter("app_requests_total", "Requests handled", ["outcome"])
            self.latency = tm.Histogram("app_execute_duration_seconds", "Time per execute()",
                                        buckets=[0.001, 0.005, 0.025, 0.1, 0.5])

        @tm.gather()  # counter increments in one execute() call: one round trip per series
        def execute(self, requests):
            with self.latency.time():
                for request in requests:
                    ...
                    self.requests.labels(outcome="success").inc()
            return responses

What it does on top of ``pb_utils.MetricFamily``:

- ``Counter`` (``inc``), ``Gauge`` (``inc``, ``dec``, ``set``, ``value``,
  ``track_inprogress``), ``Histogram`` (``observe``, ``time``), with
  ``.labels(...)`` as in ``prometheus_client``. These method names are this
  file's; pb_utils itself only has ``increment``, ``set``, ``value``, ``observe``.
- Names, label names, label values and buckets are checked when the metric is
  made, with an error that says what is wrong; by default also the conventions
  that ``promtool check metrics`` enforces (counters end in ``_total``, base
  units such as ``_seconds``, not ``_ms``).
- Every ``MetricFamily`` is kept alive for the life of the process (a family
  that is garbage-collected breaks its metrics).
- Each metric may have at most ``max_series`` label combinations (default
  1000): an unbounded label value (a user id, a raw input) raises instead of
  growing ``/metrics`` without end.
- Inside ``gather()`` counter increments are added up in the model and sent
  once per series when the block ends: each metric call is a round trip to
  the Triton server process (about 15-20 us), so this saves real time in a
  batched ``execute``. Gauges and histograms are always sent at once.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Iterable, Sequence

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton: names can still be checked, metrics cannot be made
    pb_utils = None

__all__ = ["Counter", "Gauge", "Histogram", "DEFAULT_BUCKETS", "init", "gather", "check_name", "check_label_names"]

#: prometheus_client's default buckets, in seconds.
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# Name parts that `promtool check metrics` (Prometheus 2.42) rejects, and the base unit to use instead.
_ABBREVIATED = {"s", "sec", "ms", "us", "ns", "m", "h", "d", "b", "kb", "mb", "gb", "tb", "pb"}
_NOT_BASE_UNITS = {
    "milliseconds": "seconds",
    "microseconds": "seconds",
    "nanoseconds": "seconds",
    "minutes": "seconds",
    "hours": "seconds",
    "days": "seconds",
    "bits": "bytes",
    "kilobytes": "bytes",
    "megabytes": "bytes",
    "gigabytes": "bytes",
    "terabytes": "bytes",
}

_defaults: dict[str, str] | None = None
_families: dict[str, _Family] = {}  # every family, kept alive for the life of the process
_lock = threading.Lock()
_local = threading.local()  # per thread: counter increments waiting inside gather()


# ------------------------------------------------------------------ checks


def check_name(name: str, kind: str = "", conventions: bool = True) -> str:
    """Raise ``ValueError`` unless ``name`` is a valid metric name (and, by default, a conventional one)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"invalid metric name {name!r}: a name must match [a-zA-Z_:][a-zA-Z0-9_:]* "
            "(letters, digits, '_' and ':', not starting with a digit)"
        )
    if not conventions:
        return name
    hint = " (Prometheus naming convention, checked by `promtool check metrics`; pass conventions=False to skip)"
    if name.startswith("__"):
        raise ValueError(f"metric name {name!r}: names starting with '__' are reserved for Prometheus itself")
    if ":" in name:
        raise ValueError(f"metric name {name!r}: ':' is reserved for Prometheus recording rules{hint}")
    if re.search("[a-z][A-Z]", name):
        raise ValueError(f"metric name {name!r}: use snake_case, e.g. {_snake(name)!r}{hint}")
    if kind == "counter" and not name.endswith("_total"):
        raise ValueError(f"counter name {name!r} must end in '_total', e.g. {name + '_total'!r}{hint}")
    if kind != "counter" and name.endswith("_total"):
        raise ValueError(f"{kind or 'metric'} name {name!r}: only counters end in '_total'{hint}")
    if kind == "histogram" and name.endswith(("_bucket", "_count", "_sum")):
        raise ValueError(f"histogram name {name!r}: Triton adds _bucket, _count and _sum itself; drop the suffix")
    for part in name.lower().split("_"):
        if part in _ABBREVIATED:
            raise ValueError(f"metric name {name!r}: use base units spelled out (seconds, bytes), not {part!r}{hint}")
        if part in _NOT_BASE_UNITS:
            raise ValueError(
                f"metric name {name!r} uses the unit {part!r}: use the base unit, "
                f"{_NOT_BASE_UNITS[part]} (and convert the value){hint}"
            )
    return name


def check_label_names(names: Iterable[str], kind: str = "", reserved: Iterable[str] = ()) -> tuple[str, ...]:
    """Raise ``ValueError`` unless ``names`` are valid, distinct label names; return them as a tuple."""
    if isinstance(names, str):
        raise ValueError(f"label names must be a list of names, not the string {names!r} (write [{names!r}])")
    names = tuple(names)
    reserved = set(reserved)
    for label in names:
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ValueError(f"invalid label name {label!r}: a label name must match [a-zA-Z_][a-zA-Z0-9_]*")
        if label.startswith("__"):
            raise ValueError(f"label name {label!r}: names starting with '__' are reserved for Prometheus itself")
        if kind == "histogram" and label == "le":
            raise ValueError("label name 'le' is reserved in a histogram: it holds the bucket bounds")
        if label in reserved:
            raise ValueError(f"label name {label!r} is already a default label (set by init()); pick another name")
    duplicates = sorted({label for label in names if names.count(label) > 1})
    if duplicates:
        raise ValueError(f"label names appear twice: {duplicates}")
    return names


def check_buckets(buckets: Iterable[float]) -> list[float]:
    """Raise ``ValueError`` unless ``buckets`` are finite and strictly increasing (a final +Inf is dropped)."""
    try:
        bounds = [float(b) for b in buckets]
    except (TypeError, ValueError) as err:
        raise ValueError(f"histogram buckets must be numbers (upper bounds), got {buckets!r}") from err
    if bounds and bounds[-1] == math.inf:
        bounds = bounds[:-1]  # Triton adds the +Inf bucket itself
    if not bounds:
        raise ValueError("a histogram needs at least one finite bucket upper bound")
    if any(not math.isfinite(b) for b in bounds):
        raise ValueError(f"histogram buckets must be finite numbers, got {bounds}")
    if any(bounds[i] >= bounds[i + 1] for i in range(len(bounds) - 1)):
        raise ValueError(f"histogram buckets must be strictly increasing, got {bounds}")
    return bounds


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# ------------------------------------------------------------------ setup


def init(args: dict | None = None, **labels: str) -> dict[str, str]:
    """Set the labels every series gets: ``model`` and ``version`` from ``args``, plus ``labels``.

    Call it once in ``initialize(self, args)`` before making metrics;
    ``init(None)`` means no default labels. Returns the default labels.
    """
    global _defaults
    defaults = {} if args is None else {"model": str(args["model_name"]), "version": str(args["model_version"])}
    defaults.update({key: str(value) for key, value in labels.items()})
    check_label_names(defaults)
    _defaults = defaults
    return dict(defaults)


@contextlib.contextmanager
def gather():
    """Add up counter increments made inside the block; send one per series when it ends.

    Use it around the body of ``execute`` (``with tm.gather():``) or on it
    (``@tm.gather()``). Nested blocks send at the end of the outermost one;
    increments are sent even when the block raises.
    """
    if getattr(_local, "pending", None) is not None:
        yield  # nested: the outermost block sends
        return
    _local.pending = {}
    try:
        yield
    finally:
        pending, _local.pending = _local.pending, None
        for series, amount in pending.items():
            series._metric.increment(amount)


class _Family:
    """One pb_utils.MetricFamily, its definition and its series (kept alive here)."""

    def __init__(self, name, documentation, kind, labelnames, buckets, max_series):
        if pb_utils is None:
            raise RuntimeError(
                "triton_python_backend_utils cannot be imported: triton_metrics makes metrics only "
                "inside a Triton Python-backend model (put this file next to model.py)"
            )
        kinds = {
            "counter": pb_utils.MetricFamily.COUNTER,
            "gauge": pb_utils.MetricFamily.GAUGE,
            "histogram": pb_utils.MetricFamily.HISTOGRAM,
        }
        self.definition = (documentation, kind, labelnames, buckets)
        self.labelnames = labelnames
        self.buckets = buckets
        self.max_series = max_series
        self.family = pb_utils.MetricFamily(name=name, description=documentation, kind=kinds[kind])
        self.name = name
        self.series: dict[tuple[str, ...], object] = {}


# ------------------------------------------------------------------ metrics


class _Metric:
    """What Counter, Gauge and Histogram share: the family, labels() and the unlabelled series."""

    _kind = ""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] | None = None,
        max_series: int = 1000,
        conventions: bool = True,
    ) -> None:
        if _defaults is None:
            raise RuntimeError(
                "call triton_metrics.init(args) in initialize() before making metrics: it sets the "
                "model and version labels of every series (init(None) for no default labels)"
            )
        check_name(name, self._kind, conventions)
        if not isinstance(documentation, str) or not documentation.strip():
            raise ValueError(f"metric {name!r} needs a description (documentation), the # HELP line of /metrics")
        names = check_label_names(labelnames, self._kind, reserved=_defaults)
        if int(max_series) < 1:
            raise ValueError(f"max_series must be at least 1, got {max_series}")
        bounds = tuple(check_buckets(buckets)) if self._kind == "histogram" else None
        self.name = name
        self.labelnames = names
        with _lock:
            family = _families.get(name)
            if family is None:
                family = _families[name] = _Family(name, documentation, self._kind, names, bounds, int(max_series))
            elif family.definition != (documentation, self._kind, names, bounds):
                raise ValueError(
                    f"metric {name!r} already exists with another definition "
                    f"(kind, description, labels or buckets): {family.definition}"
                )
        self._family = family
        self._series = None if names else self.labels()

    def labels(self, *values: object, **kwvalues: object):
        """The series with these label values (positional in ``labelnames`` order, or by name)."""
        names = self.labelnames
        if values and kwvalues:
            raise ValueError(f"{self.name}: give label values by position or by name, not both")
        if kwvalues:
            if set(kwvalues) != set(names):
                missing = sorted(set(names) - set(kwvalues))
                extra = sorted(set(kwvalues) - set(names))
                raise ValueError(f"{self.name}: labels are {list(names)}; missing {missing}, unknown {extra}")
            values = tuple(kwvalues[n] for n in names)
        elif len(values) != len(names):
            raise ValueError(f"{self.name}: expected {len(names)} label values for {list(names)}, got {len(values)}")
        key = tuple(str(v) for v in values)
        series = self._family.series.get(key)
        if series is None:
            series = self._new_series(key)
        return series

    def _new_series(self, key: tuple[str, ...]):
        family = self._family
        with _lock:
            if key in family.series:
                return family.series[key]
            given = dict(zip(self.labelnames, key))  # noqa: B905 (same length; strict= needs Python 3.10)
            if len(family.series) >= family.max_series:
                raise ValueError(
                    f"{self.name} already has {family.max_series} series (label combinations); refusing {given}. "
                    "Label values must come from a small fixed set (outcome, status class), never from user ids "
                    "or raw inputs; raise max_series= if you must"
                )
            labels = {**_defaults, **given}
            if family.buckets is None:
                metric = family.family.Metric(labels=labels)
            else:
                metric = family.family.Metric(labels=labels, buckets=list(family.buckets))
            series = family.series[key] = self._series_class(metric)
            return series

    def _only(self):
        if self._series is None:
            raise ValueError(f"{self.name} has labels {list(self.labelnames)}: call .labels(...) first")
        return self._series


class _CounterSeries:
    __slots__ = ("_metric",)

    def __init__(self, metric) -> None:
        self._metric = metric

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0); inside ``gather()`` it is sent when the block ends."""
        if not amount >= 0:
            raise ValueError(f"counters only go up: inc() takes an amount >= 0, got {amount}")
        pending = getattr(_local, "pending", None)
        if pending is None:
            self._metric.increment(amount)
        else:
            pending[self] = pending.get(self, 0.0) + amount


class _GaugeSeries:
    __slots__ = ("_metric",)

    def __init__(self, metric) -> None:
        self._metric = metric

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        self._metric.increment(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self._metric.increment(-amount)

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        self._metric.set(value)

    def value(self) -> float:
        """The gauge's current value (read from the server: also a round trip)."""
        return self._metric.value()

    def track_inprogress(self) -> _InProgress:
        """Context manager / decorator: +1 on entry, -1 on exit (two calls)."""
        return _InProgress(self)


class _HistogramSeries:
    __slots__ = ("_metric",)

    def __init__(self, metric) -> None:
        self._metric = metric

    def observe(self, value: float) -> None:
        """Record one observation, e.g. a duration in seconds."""
        self._metric.observe(value)

    def time(self) -> _Timer:
        """Context manager / decorator: observe the seconds the block took (``time.perf_counter``)."""
        return _Timer(self)


class _Timer(contextlib.ContextDecorator):
    def __init__(self, series: _HistogramSeries) -> None:
        self._series = series
        self.elapsed_s: float | None = None

    def __enter__(self) -> _Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed_s = time.perf_counter() - self._start
        self._series.observe(self.elapsed_s)

    def _recreate_cm(self) -> _Timer:  # a fresh timer per call when used as a decorator
        return _Timer(self._series)


class _InProgress(contextlib.ContextDecorator):
    def __init__(self, series: _GaugeSeries) -> None:
        self._series = series

    def __enter__(self) -> _InProgress:
        self._series.inc(1)
        return self

    def __exit__(self, *exc) -> None:
        self._series.dec(1)


class Counter(_Metric):
    """A value that only goes up. Name it ``..._total``."""

    _kind = "counter"
    _series_class = _CounterSeries

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0); inside ``gather()`` it is sent when the block ends."""
        self._only().inc(amount)


class Gauge(_Metric):
    """A value that goes up and down (in-flight requests, queue length, memory)."""

    _kind = "gauge"
    _series_class = _GaugeSeries

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        self._only().inc(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        self._only().dec(amount)

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        self._only().set(value)

    def value(self) -> float:
        """The gauge's current value."""
        return self._only().value()

    def track_inprogress(self) -> _InProgress:
        """Context manager / decorator: +1 on entry, -1 on exit."""
        return self._only().track_inprogress()


class Histogram(_Metric):
    """Observations counted into buckets (durations in seconds, sizes in bytes).

    ``buckets`` are the upper bounds, strictly increasing; choose them around
    the values you care about (your latency objective). Default: ``DEFAULT_BUCKETS``.
    """

    _kind = "histogram"
    _series_class = _HistogramSeries

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_series: int = 1000,
        conventions: bool = True,
    ) -> None:
        super().__init__(
            name, documentation, labelnames, buckets=buckets, max_series=max_series, conventions=conventions
        )

    def observe(self, value: float) -> None:
        """Record one observation."""
        self._only().observe(value)

    def time(self) -> _Timer:
        """Context manager / decorator: observe the seconds the block took."""
        return self._only().time()
