"""triton_metrics: Prometheus-style metrics for a Triton Python-backend model, in one file.

Copy this file next to your ``model.py`` (``<model>/1/triton_metrics.py``); the
Python backend puts that folder on ``sys.path``, so ``import triton_metrics`` works.
It needs Triton 24.08 (server 2.49.0) or later, Python 3.8 or later, and nothing
but ``pb_utils``.

    import time
    import triton_metrics as tm

    class TritonPythonModel:
        def initialize(self, args):
            tm.init(args)  # every series gets the labels model=<name>, version=<version>
            self.requests = tm.Counter("app_requests_total", "Requests handled", ["outcome"], aggregate=True)
            self.latency = tm.Histogram("app_request_duration_seconds", "Time per request",
                                        buckets=[0.001, 0.005, 0.025, 0.1, 0.5], aggregate=True)

        def execute(self, requests):
            for request in requests:
                start = time.perf_counter()
                ...
                self.latency.observe(time.perf_counter() - start)  # every request, no round trip
                self.requests.labels(outcome="success").inc()
            return responses

        def finalize(self):
            tm.close()  # send what the last interval recorded, stop the flush thread

What it does on top of ``pb_utils.MetricFamily``:

- ``Counter`` (``inc``), ``Gauge`` (``inc``, ``dec``, ``set``, ``value``,
  ``track_inprogress``), ``Histogram`` (``observe``, ``time``), with
  ``.labels(...)`` as in ``prometheus_client``. These method names are this
  file's; pb_utils itself only has ``increment``, ``set``, ``value``, ``observe``.
- Every mistake is a Python error at the call, before anything reaches the
  server (on Triton 2.51.0 a call the server refuses, such as a negative counter
  increment, can abort the whole server): names, label names, label values
  (strings only), buckets, and the values passed to ``inc``/``set``/``observe``
  (finite numbers; counters and aggregated histograms >= 0). By default also the
  naming conventions that ``promtool check metrics`` enforces (counters end in
  ``_total``, base units such as ``_seconds``, not ``_ms``).
- Safe from threads: one lock is held around every call to the server (on
  2.51.0 metric calls from several threads at once crashed the server). Metric
  calls you make yourself with pb_utils in the same model: hold ``tm.lock``.
- Every ``MetricFamily`` is kept alive for the life of the process (a family
  that is garbage-collected breaks its metrics).
- Each metric may have at most ``max_series`` label combinations (default
  1000): an unbounded label value (a user id, a raw input) raises instead of
  growing ``/metrics`` without end.
- ``aggregate=True`` (counters, histograms): every call is recorded in the
  model's process (a few hundred nanoseconds, no round trip) and the sums are
  sent every ``flush_interval_s`` (``init``, default 1 s) by a background thread,
  on ``flush()`` and on ``close()``. A scrape sees each observation at most one
  interval late; if the model's process dies, at most the last interval is lost.
  An aggregated histogram is written as three counter families,
  ``<name>_bucket`` (cumulative, with an ``le`` label), ``<name>_sum`` and
  ``<name>_count``: the series a Prometheus histogram has, so
  ``histogram_quantile`` reads them as it reads a native one; but its
  ``# TYPE`` lines say ``counter``, so ``promtool check metrics`` flags them
  (Triton's HISTOGRAM can only ``observe`` one value per call). Its
  observations must be >= 0 (``_sum`` is a counter).
- Inside ``gather()`` immediate counter increments are added up in the model and
  sent once per series when the block ends. Gauges are always sent at once.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import numbers
import re
import threading
import time
from collections.abc import Iterable, Sequence

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # outside Triton: names and values can still be checked, metrics cannot be made
    pb_utils = None

__all__ = [
    "Counter",
    "Gauge",
    "Histogram",
    "DEFAULT_BUCKETS",
    "init",
    "gather",
    "flush",
    "close",
    "lock",
    "check_name",
    "check_label_names",
    "check_buckets",
]

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

_NOT_A_LIST = (str, bytes, dict, set, frozenset)  # iterable, but not a list of bounds
_PLAIN = (float, int)  # numbers the aggregated hot path takes without a call (bool is neither)

#: Held around every call to the server and every change of the registry. Hold it around
#: pb_utils metric calls of your own too, if any thread of the model may call this module.
lock = threading.RLock()
_defaults: dict[str, str] | None = None
_families: dict[str, _Family] = {}  # every family, by each name it writes; kept alive for the life of the process
_aggregated: list = []  # every aggregated series, in creation order
_flusher: _Flusher | None = None
_flush_interval_s = 1.0
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
    if isinstance(buckets, _NOT_A_LIST) or not isinstance(buckets, Iterable):
        raise ValueError(f"histogram buckets must be a list of upper bounds (numbers, increasing), got {buckets!r}")
    bounds = []
    for bound in buckets:
        if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
            raise ValueError(f"histogram buckets must be numbers (upper bounds), got {bound!r} in {buckets!r}")
        bounds.append(float(bound))
    if bounds and bounds[-1] == math.inf:
        bounds = bounds[:-1]  # Triton adds the +Inf bucket itself
    if not bounds:
        raise ValueError("a histogram needs at least one finite bucket upper bound")
    if any(not math.isfinite(b) for b in bounds):
        raise ValueError(f"histogram buckets must be finite numbers, got {bounds}")
    if any(bounds[i] >= bounds[i + 1] for i in range(len(bounds) - 1)):
        raise ValueError(f"histogram buckets must be strictly increasing, got {bounds}")
    return bounds


def check_value(value: object, what: str, minimum: float | None = None, why: str = "") -> float:
    """``value`` as a float; ``TypeError`` unless it is a real number, ``ValueError`` unless finite (and >= minimum)."""
    kind = type(value)
    if kind is not float:
        if kind is not int and (kind is bool or not isinstance(value, numbers.Real)):
            raise TypeError(f"{what} takes a number, got {value!r} ({kind.__name__})")
        value = float(value)
    if value - value != 0.0:  # NaN or infinity (the fast spelling of `not math.isfinite(value)`)
        raise ValueError(f"{what} takes a finite number, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{what} takes a number >= {minimum:g}, got {value}{why}")
    return value


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _le(bound: float) -> str:
    """A bucket bound written as Triton writes the ``le`` of its own histograms (``0.005``, ``1``, ``+Inf``)."""
    return "+Inf" if bound == math.inf else f"{bound:.16g}"


# ------------------------------------------------------------------ setup


def init(args: dict | None = None, *, flush_interval_s: float = 1.0, **labels: str) -> dict[str, str]:
    """Set the labels every series gets: ``model`` and ``version`` from ``args``, plus ``labels``.

    Call it once in ``initialize(self, args)`` before making metrics;
    ``init(None)`` means no default labels. ``flush_interval_s``: how often
    aggregated metrics are sent to the server. Returns the default labels.
    """
    global _defaults, _flush_interval_s
    interval = check_value(flush_interval_s, "flush_interval_s", minimum=0.001)
    defaults = {} if args is None else {"model": str(args["model_name"]), "version": str(args["model_version"])}
    for key, value in labels.items():
        if not isinstance(value, str):
            raise TypeError(f"default label {key}={value!r}: label values must be strings, e.g. {str(value)!r}")
    defaults.update(labels)
    check_label_names(defaults)
    with lock:
        _defaults = defaults
        _flush_interval_s = interval
        if _flusher is not None:
            _flusher.kick.set()  # wait the new interval from now on
    return dict(defaults)


@contextlib.contextmanager
def gather():
    """Add up immediate counter increments made inside the block; send one per series when it ends.

    Use it around the body of ``execute`` (``with tm.gather():``) or on it
    (``@tm.gather()``). Nested blocks send at the end of the outermost one;
    increments are sent even when the block raises. Each thread gathers its own.
    """
    if getattr(_local, "pending", None) is not None:
        yield  # nested: the outermost block sends
        return
    _local.pending = {}
    try:
        yield
    finally:
        pending, _local.pending = _local.pending, None
        with lock:
            for series, amount in pending.items():
                series._metric.increment(amount)


def flush() -> None:
    """Send what every aggregated metric recorded since the last flush (any thread may call it)."""
    with lock:
        for series in _aggregated:
            series._flush()


def close(timeout: float = 5.0) -> None:
    """Stop the flush thread and send what is left. Call it in ``finalize``.

    Observations made after ``close()`` wait in the model until the next ``flush()``.
    """
    global _flusher
    with lock:
        flusher, _flusher = _flusher, None
    if flusher is not None:
        flusher.stop.set()
        flusher.kick.set()
        flusher.join(timeout)
    flush()


class _Flusher(threading.Thread):
    """Calls ``flush()`` every ``flush_interval_s`` seconds; ``kick`` restarts the wait, ``stop`` ends it."""

    def __init__(self) -> None:
        super().__init__(name="triton_metrics-flush", daemon=True)
        self.stop = threading.Event()
        self.kick = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.kick.wait(_flush_interval_s):  # kicked: a new interval, or close()
                self.kick.clear()
                continue
            try:
                flush()
            except Exception as err:  # keep flushing; say why in Triton's log
                _log_error(f"triton_metrics: flush failed: {err.__class__.__name__}: {err}")


def _log_error(message: str) -> None:
    logger = getattr(pb_utils, "Logger", None)
    if logger is not None:
        logger.log_error(message)


class _Family:
    """The pb_utils.MetricFamily objects of one metric (three for an aggregated histogram), kept alive here."""

    def __init__(self, name, documentation, kind, labelnames, buckets, max_series, aggregate):
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
        self.definition = (documentation, kind, labelnames, buckets, aggregate)
        self.labelnames = labelnames
        self.buckets = buckets
        self.max_series = max_series
        self.name = name
        self.series: dict[tuple[str, ...], object] = {}
        if kind == "histogram" and aggregate:  # the series of a histogram, each written as a counter
            written = tuple(name + suffix for suffix in ("_bucket", "_sum", "_count"))
            taken = sorted(n for n in written if n in _families)
            if taken:
                raise ValueError(f"aggregated histogram {name!r} writes {list(written)}, but {taken} exist already")
            self.names = (name, *written)  # the name too: a native histogram of that name would write the same
            self.families = [
                pb_utils.MetricFamily(name=n, description=documentation, kind=pb_utils.MetricFamily.COUNTER)
                for n in written
            ]
        else:
            self.names = (name,)
            self.families = [pb_utils.MetricFamily(name=name, description=documentation, kind=kinds[kind])]


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
        aggregate: bool = False,
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
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 1:
            raise ValueError(f"max_series must be a whole number >= 1, got {max_series!r}")
        if not isinstance(aggregate, bool):
            raise TypeError(f"aggregate must be True or False, got {aggregate!r}")
        if aggregate and self._kind == "gauge":
            raise TypeError(f"{name}: a gauge cannot aggregate (it is a value now, not a sum): drop aggregate=True")
        if buckets is not None and self._kind != "histogram":
            raise TypeError(f"{name}: only a histogram has buckets")
        bounds = tuple(check_buckets(buckets)) if self._kind == "histogram" else None
        self.name = name
        self.labelnames = names
        self.aggregate = aggregate
        with lock:
            family = _families.get(name)
            if family is None:
                family = _Family(name, documentation, self._kind, names, bounds, max_series, aggregate)
                for written in family.names:
                    _families[written] = family
            elif family.name != name or family.definition != (documentation, self._kind, names, bounds, aggregate):
                raise ValueError(
                    f"metric {name!r} already exists with another definition "
                    f"(kind, description, labels, buckets or aggregate): {family.name} {family.definition}"
                )
        self._family = family
        self._series = None if names else self.labels()
        if self._series is not None:  # unlabelled: call the series' own methods, one call less per use
            for method in ("inc", "dec", "set", "value", "observe", "time", "track_inprogress"):
                if hasattr(self._series, method):
                    setattr(self, method, getattr(self._series, method))

    def labels(self, *values: str, **kwvalues: str):
        """The series with these label values (strings; positional in ``labelnames`` order, or by name)."""
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
        try:
            series = self._family.series.get(values)
        except TypeError:  # an unhashable value (a list...): said below
            series = None
        if series is None:
            for label, value in zip(names, values):  # noqa: B905 (same length; strict= needs Python 3.10)
                if not isinstance(value, str):
                    raise TypeError(
                        f"{self.name}: label values must be strings; {label}={value!r} is a "
                        f"{type(value).__name__} (write {str(value)!r})"
                    )
            series = self._new_series(tuple(values))
        return series

    def _new_series(self, key: tuple[str, ...]):
        global _flusher
        family = self._family
        with lock:
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
            if self.aggregate and self._kind == "histogram":
                buckets, sums, counts = family.families
                bounds = (*family.buckets, math.inf)
                series = _AggregatedHistogramSeries(
                    family.buckets,
                    [buckets.Metric(labels={**labels, "le": _le(b)}) for b in bounds],
                    sums.Metric(labels=labels),
                    counts.Metric(labels=labels),
                )
            elif family.buckets is not None:
                series = _HistogramSeries(family.families[0].Metric(labels=labels, buckets=list(family.buckets)))
            elif self.aggregate:
                series = _AggregatedCounterSeries(family.families[0].Metric(labels=labels))
            else:
                series = self._series_class(family.families[0].Metric(labels=labels))
            if self.aggregate:
                _aggregated.append(series)
                if _flusher is None:
                    _flusher = _Flusher()
                    _flusher.start()
            family.series[key] = series
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
        amount = check_value(amount, "inc() of a counter", minimum=0, why=": counters only go up")
        pending = getattr(_local, "pending", None)
        if pending is None:
            with lock:
                self._metric.increment(amount)
        else:
            pending[self] = pending.get(self, 0.0) + amount


class _AggregatedCounterSeries:
    """A counter added up in the model; ``_flush`` sends the sum (called under ``lock``)."""

    __slots__ = ("_metric", "_pending", "_mutex")

    def __init__(self, metric) -> None:
        self._metric = metric
        self._pending = 0.0
        self._mutex = threading.Lock()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0) here; it reaches the server at the next flush."""
        if type(amount) not in _PLAIN or not 0.0 <= amount < math.inf:  # the fast path takes no call
            amount = check_value(amount, "inc() of a counter", minimum=0, why=": counters only go up")
        with self._mutex:
            self._pending += amount

    def _flush(self) -> None:
        with self._mutex:
            amount, self._pending = self._pending, 0.0
        if amount:
            self._metric.increment(amount)


class _GaugeSeries:
    __slots__ = ("_metric",)

    def __init__(self, metric) -> None:
        self._metric = metric

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (may be negative)."""
        amount = check_value(amount, "inc() of a gauge")
        with lock:
            self._metric.increment(amount)

    def dec(self, amount: float = 1.0) -> None:
        """Subtract ``amount``."""
        amount = check_value(amount, "dec() of a gauge")
        with lock:
            self._metric.increment(-amount)

    def set(self, value: float) -> None:
        """Set the gauge to ``value``."""
        value = check_value(value, "set() of a gauge")
        with lock:
            self._metric.set(value)

    def value(self) -> float:
        """The gauge's current value (read from the server: also a round trip)."""
        with lock:
            return self._metric.value()

    def track_inprogress(self) -> _InProgress:
        """Context manager / decorator: +1 on entry, -1 on exit (two calls)."""
        return _InProgress(self)


class _HistogramSeries:
    __slots__ = ("_metric",)

    def __init__(self, metric) -> None:
        self._metric = metric

    def observe(self, value: float) -> None:
        """Record one observation, e.g. a duration in seconds (one round trip)."""
        value = check_value(value, "observe()")
        with lock:
            self._metric.observe(value)

    def time(self) -> _Timer:
        """Context manager / decorator: observe the seconds the block took (``time.perf_counter``)."""
        return _Timer(self)


_NEGATIVE_AGGREGATED = (
    ": an aggregated histogram's _sum is a counter, which only goes up (use aggregate=False for values below 0)"
)


class _AggregatedHistogramSeries:
    """A histogram counted in the model: per-bucket counts and a sum, sent as counter deltas by ``_flush``.

    ``observe`` only takes a small lock and adds 1 to a list entry; ``_flush``
    (called under ``lock``) swaps the counts for zeros and increments each
    cumulative bucket counter (``le``), ``_sum`` and ``_count`` by what was added.
    """

    __slots__ = ("_bounds", "_buckets", "_sum", "_count", "_counts", "_total", "_mutex")

    def __init__(self, bounds, buckets, sum_metric, count_metric) -> None:
        self._bounds = tuple(bounds)  # finite upper bounds; index len(bounds) is +Inf
        self._buckets = buckets  # one counter per bound and +Inf: observations <= bound
        self._sum = sum_metric
        self._count = count_metric
        self._counts = [0] * (len(bounds) + 1)  # NOT cumulative: observations in (bound[i-1], bound[i]]
        self._total = 0.0
        self._mutex = threading.Lock()

    def observe(self, value: float) -> None:
        """Record one observation (>= 0) here; it reaches the server at the next flush."""
        if type(value) not in _PLAIN or not 0.0 <= value < math.inf:  # the fast path takes no call
            value = check_value(value, "observe() of an aggregated histogram", minimum=0, why=_NEGATIVE_AGGREGATED)
        index = bisect.bisect_left(self._bounds, value)  # the first bound >= value: `le` semantics
        with self._mutex:
            self._counts[index] += 1
            self._total += value

    def time(self) -> _Timer:
        """Context manager / decorator: observe the seconds the block took (``time.perf_counter``)."""
        return _Timer(self)

    def _flush(self) -> None:
        with self._mutex:
            counts, self._counts = self._counts, [0] * len(self._counts)
            total, self._total = self._total, 0.0
        cumulative = 0
        for metric, count in zip(self._buckets, counts):  # noqa: B905 (same length)
            cumulative += count
            if cumulative:
                metric.increment(cumulative)
        if cumulative:
            self._sum.increment(total)
            self._count.increment(cumulative)


class _Timer(contextlib.ContextDecorator):
    def __init__(self, series) -> None:
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
    """A value that only goes up. Name it ``..._total``.

    ``aggregate=True``: increments are added up in the model and sent every
    flush interval (see ``init``), on ``flush()`` and on ``close()``.
    """

    _kind = "counter"
    _series_class = _CounterSeries

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        self._only().inc(amount)


class Gauge(_Metric):
    """A value that goes up and down (in-flight requests, queue length, memory). Always sent at once."""

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
    ``aggregate=False``: a Triton HISTOGRAM, one round trip per ``observe``.
    ``aggregate=True``: counted in the model and sent as ``<name>_bucket``,
    ``_sum`` and ``_count`` counters every flush interval (see the module's help).
    """

    _kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        max_series: int = 1000,
        conventions: bool = True,
        aggregate: bool = False,
    ) -> None:
        super().__init__(
            name,
            documentation,
            labelnames,
            buckets=buckets,
            max_series=max_series,
            conventions=conventions,
            aggregate=aggregate,
        )

    def observe(self, value: float) -> None:
        """Record one observation."""
        self._only().observe(value)

    def time(self) -> _Timer:
        """Context manager / decorator: observe the seconds the block took."""
        return self._only().time()
