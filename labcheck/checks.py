"""Exercise checkers: each says "not attempted", "correct", or what is wrong.

Every checker takes the learner's answer (a function, or the path of a
``model.py``) and checks it for real: model folders are loaded in a real Triton,
traffic functions send real requests. While an exercise is unsolved its cell
still runs clean and the checker answers "not attempted".

Solutions live in ``notebooks/solutions/``; load one into a cell with
``%load solutions/<file>.py``. The tests run every solution and some known-wrong
answers through these same checkers.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labkit import paths, process, promql, repository, scrape, triton

NOT_ATTEMPTED = "not attempted"
CORRECT = "correct"
WRONG = "wrong"


@dataclass
class Feedback:
    """A checker's verdict: ``status`` is "not attempted", "correct" or "wrong"."""

    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == CORRECT

    def __str__(self) -> str:
        mark = {CORRECT: "✅", WRONG: "❌", NOT_ATTEMPTED: "⏳"}[self.status]
        return f"{mark} Exercise {self.exercise}: {self.status}. {self.message}"

    def _repr_markdown_(self) -> str:
        return str(self)

    __repr__ = __str__


def _feedback(exercise: str, problems: list[str], success: str) -> Feedback:
    if problems:
        return Feedback(exercise, WRONG, " ".join(problems))
    return Feedback(exercise, CORRECT, success)


# ------------------------------------------------------------------ exercise 01

TEMPLATE_01 = paths.NOTEBOOKS / "steps" / "step1_counter.py"


def exercise_path(name: str, template: Path) -> Path:
    """The learner's working copy for exercise ``name`` under ``build/exercises/`` (made from ``template`` once)."""
    target = paths.BUILD / "exercises" / name / template.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)
    return target


def check_01(model_py: str | Path | None = None) -> Feedback:
    """Exercise 01: a counter ``demo_input_values_total`` of the values received, labelled by model and version.

    The model is loaded in a real Triton as ``metrics_demo``; requests of 3, 10
    and 100 values must move the counter by exactly 113.
    """
    frame, failed = _run_model(
        "01", model_py, TEMPLATE_01, "metrics_demo", repository.REFERENCE_CONFIG, _requests_of((3, 10, 100))
    )
    if failed is not None:
        return failed
    rows = frame[frame["sample"] == "demo_input_values_total"]
    if rows.empty:
        names = sorted(set(frame["sample"]) - set(frame[frame["sample"].str.startswith("nv_")]["sample"]))
        return Feedback("01", WRONG, f"No sample named demo_input_values_total on /metrics; your model has {names}.")
    problems = []
    if set(rows["type"]) != {"counter"}:
        problems.append(f"It is a {rows['type'].iloc[0]}; a count of values only goes up: make it a COUNTER.")
    total = rows["value"].sum()
    if total != 113:
        problems.append(f"After requests of 3, 10 and 100 values it says {total:g}, not 113: increment by values.size.")
    for label, wanted in (("model", "metrics_demo"), ("version", "1")):
        if label not in rows.columns or set(rows[label].dropna()) != {wanted}:
            problems.append(f'Its series need the label {label}="{wanted}" (take it from args in initialize).')
    return _feedback("01", problems, "113 values counted, as a counter with model and version labels.")


# ------------------------------------------------------------------ exercise 01b

SIZES_01B = (3, 10, 50, 100, 2000)
BUCKETS_01B = (10.0, 100.0, 1000.0)
FAMILY_01B = "demo_request_size_values"

# What a load error means, for the exercises that edit a model.py
LOAD_HINTS = (
    ("Unexpected buckets found", "only a HISTOGRAM takes buckets=: make it kind=pb_utils.MetricFamily.HISTOGRAM"),
    ("Bucket Boundaries must be strictly sorted", "bucket bounds must be strictly increasing"),
    ("Missing required buckets", "a HISTOGRAM needs buckets=[...] in family.Metric(...)"),
)
KIND_CALLS = "make only the calls your metric's kind has (notebook 01 §2)"
ABORTED_AT_LOAD = "aborted twice while loading your model"


def _run_model(
    exercise: str,
    model_py: str | Path | None,
    template: Path,
    name: str,
    config: Path,
    send: Callable[[triton.TritonServer], object],
):
    """Load ``model_py`` (default: the learner's copy of ``template``) as ``name`` in a fresh Triton and
    return ``(send(server), None)``; ``(None, Feedback "not attempted")`` while it is still the template.

    A model that does not load, a request that fails, or a server that dies (on 2.51.0 a
    metric call that the server refuses can abort it) gives ``(None, Feedback WRONG)``
    quoting the reason, never an exception.
    """
    from tritonclient.utils import InferenceServerException

    model_py = Path(model_py) if model_py else exercise_path(exercise, template)
    if not model_py.exists() or model_py.read_text() == template.read_text():
        copy = f" (a copy of {template.parent.name}/{template.name})"
        return None, Feedback(exercise, NOT_ATTEMPTED, f"Edit {model_py}{copy}, then run this check again.")
    for attempt in range(2):
        repo = paths.scratch(f"check-{exercise}")
        repository.add_model(repo, name, model_py, config=config)
        try:
            server = triton.start(repo, models=[name])
            break
        except triton.TritonStartError as err:
            if not err.killed_by_signal:
                hint = next((f" ({h})" for text, h in LOAD_HINTS if text in err.reason), "")
                return None, Feedback(exercise, WRONG, f"Triton could not load your model{hint}:\n{err.reason}")
            if attempt == 1:  # killed by a signal twice: the abort of notebook 07 §4, not a load error
                return None, Feedback(
                    exercise,
                    WRONG,
                    f"tritonserver {ABORTED_AT_LOAD}{_abort_lines(err.log_tail)}. On 2.51.0 a metric call in "
                    "initialize that the server refuses (unsorted buckets, buckets on a counter or gauge, a label "
                    "value that is not a string) can abort it instead of failing the load with a message (notebook "
                    "07 §3-4): check the calls in initialize against notebook 01 §2.",
                )
            # on 2.51.0 a refused call at load time sometimes aborts the server instead of failing the load:
            # once more, to show the learner the load error itself
    with server:
        try:
            return send(server), None
        except (InferenceServerException, OSError, scrape.ScrapeError) as err:
            return None, Feedback(exercise, WRONG, _failure_message(server, err))


def _requests_of(sizes: tuple[int, ...]) -> Callable[[triton.TritonServer], pd.DataFrame]:
    """What the model exercises send: one request of each size (values 1.0), then one scrape."""

    def send(server: triton.TritonServer) -> pd.DataFrame:
        from labkit import traffic

        client = traffic.make_client(server, "http")
        try:
            for size in sizes:
                traffic.infer(client, np.ones(size, dtype=np.float32))
        finally:
            client.close()
        return scrape.scrape(server.metrics_url)

    return send


def _failure_message(server: triton.TritonServer, err: Exception) -> str:
    """Why traffic to the learner's model failed: the request's error, or the server's death."""
    from tritonclient.utils import InferenceServerException

    message = err.message() if isinstance(err, InferenceServerException) else f"{type(err).__name__}: {err}"
    with contextlib.suppress(TimeoutError):  # a server that aborts closes its connections first, then exits
        process.wait_until(lambda: not server.is_running() or server.is_ready(timeout=1.0), 5, "the server to settle")
    if not server.is_running():
        return (
            f"tritonserver stopped while your model ran{_abort_lines(server.log().splitlines())}. On 2.51.0 a "
            "metric call that the server refuses (value() on a histogram, observe() on a counter or gauge, set() "
            f"on a counter, a negative increment) can abort the whole server (notebook 07 §4): {KIND_CALLS}."
        )
    hint = ""
    if "does not support" in message or "METRIC_KIND" in message:
        hint = f"\nThe server refused a metric call; on 2.51.0 one can also abort it (notebook 07 §4): {KIND_CALLS}."
    return f"A request failed in your model: {message.strip()}{hint}"


def _abort_lines(log_lines: list[str]) -> str:
    """`` (terminate called ...; Signal (6) ...)`` from a dead server's log, or nothing."""
    last = [ln.strip() for ln in log_lines if "terminate called" in ln or "Signal (" in ln]
    return f" ({'; '.join(last[:2])})" if last else ""


def _histogram(frame: pd.DataFrame, family: str) -> tuple[pd.Series, float, float]:
    """A histogram's cumulative bucket counts (indexed by le as a number), _count and _sum, label sets added up."""
    rows = frame[frame["family"] == family]
    buckets = rows[rows["sample"] == f"{family}_bucket"]
    cumulative = buckets.groupby(buckets["le"].astype(float))["value"].sum()
    count = float(rows.loc[rows["sample"] == f"{family}_count", "value"].sum())
    total = float(rows.loc[rows["sample"] == f"{family}_sum", "value"].sum())
    return cumulative, count, total


def _find_histogram(exercise: str, frame: pd.DataFrame, family: str) -> Feedback | None:
    """WRONG when ``family`` is missing from the scrape or is not a histogram, else None."""
    rows = frame[frame["family"] == family]
    if rows.empty:
        own = sorted(set(frame.loc[~frame["family"].str.startswith("nv_"), "family"]))
        return Feedback(exercise, WRONG, f"No family named {family} on /metrics; your model has {own}.")
    kind = rows["type"].iloc[0]
    if kind != "histogram":
        return Feedback(
            exercise, WRONG, f"{family} is a {kind}: a distribution is a HISTOGRAM (pb_utils.MetricFamily.HISTOGRAM)."
        )
    return None


def _bounds_problem(cumulative: pd.Series, wanted: tuple[float, ...]) -> str:
    bounds = [b for b in cumulative.index if np.isfinite(b)]
    if bounds == list(wanted):
        return ""
    shown = ", ".join(f"{b:g}" for b in wanted)
    return f"Its bucket bounds are {[float(b) for b in bounds]}: give buckets=[{shown}] (Triton adds +Inf)."


def check_01b(model_py: str | Path | None = None) -> Feedback:
    """Exercise 01b: a histogram ``demo_request_size_values`` of the values per request, buckets 10, 100, 1000.

    The model is loaded in a real Triton as ``metrics_demo``; after requests of 3, 10, 50,
    100 and 2000 values the histogram must read exactly ``_count`` 5, ``_sum`` 2163 and
    cumulative buckets le=10: 2, le=100: 4, le=1000: 4, le=+Inf: 5 (label sets added up).
    """
    frame, failed = _run_model(
        "01b", model_py, TEMPLATE_01, "metrics_demo", repository.REFERENCE_CONFIG, _requests_of(SIZES_01B)
    )
    if failed is not None:
        return failed
    missing = _find_histogram("01b", frame, FAMILY_01B)
    if missing is not None:
        return missing
    cumulative, count, total = _histogram(frame, FAMILY_01B)
    bounds = _bounds_problem(cumulative, BUCKETS_01B)
    if bounds:
        return Feedback("01b", WRONG, bounds)
    problems = []
    sizes = " + ".join(str(s) for s in SIZES_01B)
    if count != len(SIZES_01B):
        each = " (one per value?)" if count == sum(SIZES_01B) else ""
        problems.append(f"_count is {count:g}{each} after {len(SIZES_01B)} requests: observe once per request.")
    elif total != sum(SIZES_01B):
        problems.append(
            f"_sum is {total:g}, not {sizes} = {sum(SIZES_01B)}: observe values.size, the number of values in the "
            "request."
        )
    expected = {b: float(sum(s <= b for s in SIZES_01B)) for b in (*BUCKETS_01B, np.inf)}
    got = {float(b): float(v) for b, v in cumulative.items()}
    if not problems and got != expected:
        problems.append(f"The cumulative buckets read {got}, not {expected}.")
    return _feedback(
        "01b", problems, f"5 requests, _sum {sum(SIZES_01B)}, buckets 2 / 4 / 4 / 5: a histogram of request sizes."
    )


# ------------------------------------------------------------------ exercise 02


def check_02(metrics_flags: Callable[[int], list[str]]) -> Feedback:
    """Exercise 02: ``metrics_flags(port)`` returns the tritonserver flags that serve metrics
    on 127.0.0.1:port only, refreshed every 250 ms. They are run on a real tritonserver."""
    port = process.free_port()
    flags = metrics_flags(port)
    if not flags:
        return Feedback("02", NOT_ATTEMPTED, "Make metrics_flags(port) return a list of flags.")
    flags = _joined([str(f) for f in flags])
    problems = []
    if "--metrics-interval-ms=250" not in flags:
        problems.append("Give the refresh interval: --metrics-interval-ms=250.")
    addresses = [f.split("=", 1)[1] for f in flags if f.startswith("--metrics-address=")]
    if any(a != "127.0.0.1" for a in addresses):
        # refused before anything starts: the checker never opens a port to the network
        return Feedback(
            "02",
            WRONG,
            f"--metrics-address={addresses[0]} would let any machine that reaches this "
            "one read the metrics: bind 127.0.0.1 (or leave it out: it defaults to --http-address).",
        )
    try:
        server = triton.start(paths.MODEL_REPOSITORY, models=[], metrics_flags=flags, timeout=60)
    except triton.TritonStartError as err:
        return Feedback("02", WRONG, "tritonserver did not start with these flags:\n" + err.reason)
    with server:
        with contextlib.suppress(TimeoutError):
            process.wait_until(lambda: any(p == port for _, p in _listening(server.pid)), 5, f"a listener on {port}")
        listening = _listening(server.pid)
    on_port = {ip for ip, p in listening if p == port}
    if not on_port:
        problems.append(f"Nothing listened on port {port}: set --metrics-port to the port argument.")
    elif on_port != {"127.0.0.1"}:
        problems.append(f"The metrics port listened on {sorted(on_port)}: bind it with --metrics-address=127.0.0.1.")
    return _feedback("02", problems, f"Metrics served on 127.0.0.1:{port} only, refreshed every 250 ms.")


def _joined(flags: list[str]) -> list[str]:
    """``--name value`` pairs written as ``--name=value`` (Triton reads both)."""
    joined: list[str] = []
    for arg in flags:
        if joined and joined[-1].startswith("--") and "=" not in joined[-1] and not arg.startswith("--"):
            joined[-1] += "=" + arg
        else:
            joined.append(arg)
    return joined


def _listening(pid: int) -> set[tuple[str, int]]:
    import psutil

    found = set()
    for proc in [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]:
        for conn in proc.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port))
    return found


# ------------------------------------------------------------------ exercise 03


def check_03(send_my_traffic: Callable[[triton.TritonServer], object]) -> Feedback:
    """Exercise 03: ``send_my_traffic(server)`` sends exactly 40 good requests and 10 that the
    *model* rejects. The checker starts its own Triton, calls it, and reads the counters."""
    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
        before = scrape.scrape(server.metrics_url)
        result = send_my_traffic(server)
        after = scrape.scrape(server.metrics_url)
    moved = {
        outcome: scrape.value(after, "demo_requests_total", outcome=outcome)
        - scrape.value(before, "demo_requests_total", outcome=outcome)
        for outcome in ("success", "error")
    }
    if result is None and moved == {"success": 0, "error": 0}:
        return Feedback("03", NOT_ATTEMPTED, "Write send_my_traffic(server): 40 good requests, 10 bad ones.")
    problems = []
    if moved["success"] != 40:
        problems.append(f'demo_requests_total{{outcome="success"}} moved by {moved["success"]:g}, not 40.')
    if moved["error"] != 10:
        problems.append(
            f'demo_requests_total{{outcome="error"}} moved by {moved["error"]:g}, not 10: a bad request only counts '
            "if it reaches the model (a NaN does; a wrong shape or datatype is refused by Triton before the model)."
        )
    return _feedback("03", problems, "40 successes and 10 errors, exactly, on the model's own counter.")


# ------------------------------------------------------------------ exercise 04


def error_ratio_frames() -> dict[str, pd.DataFrame]:
    """Sampled-looking frames the checker grades on (each with a known error ratio after t=20)."""

    def frame(success_start: float, error_start: float, reset_at: float | None) -> pd.DataFrame:
        rows = []
        success, error = success_start, error_start
        for t in np.arange(0.0, 60.5, 1.0):
            if reset_at is not None and t == reset_at:
                success, error = 0.0, 0.0  # the server restarted
            for outcome, value in (("success", success), ("error", error)):
                rows.append(
                    {
                        "time": 1_000.0 + t,
                        "family": "demo_requests",
                        "type": "counter",
                        "sample": "demo_requests_total",
                        "outcome": outcome,
                        "value": value,
                    }
                )
            success += 30.0 if t < 30 else 15.0
            error += 10.0 if t < 30 else 5.0
        return pd.DataFrame(rows)

    return {"steady": frame(0.0, 0.0, None), "history": frame(5_000.0, 0.0, None), "restart": frame(900.0, 100.0, 40)}


def check_04(error_ratio: Callable[[pd.DataFrame, float], pd.Series]) -> Feedback:
    """Exercise 04: ``error_ratio(frame, window)`` returns, per time, the share of requests that
    failed over the last ``window`` seconds: rate(errors) / rate(all requests)."""
    results = {name: error_ratio(frame, 10.0) for name, frame in error_ratio_frames().items()}
    if all(r is None for r in results.values()):
        return Feedback("04", NOT_ATTEMPTED, "Make error_ratio(frame, window) return a pandas Series indexed by time.")
    problems = []
    for name, result in results.items():
        if isinstance(result, pd.DataFrame) and result.shape[1] == 1:
            result = result.iloc[:, 0]
        if not isinstance(result, pd.Series):
            problems.append(f"For the {name} frame it returned {type(result).__name__}, not a pandas Series.")
            continue
        late = result[result.index >= 1_000.0 + 41]  # windows that hold the restart at t=40
        if late.empty or not np.allclose(late.to_numpy(dtype=float), 0.25, atol=0.01):
            got = "nothing" if late.empty else f"{late.mean():.3f}"
            hint = {
                "steady": "errors / (errors + successes), each as a rate over the window.",
                "history": "use rates over the window, not the counters' totals since the server started.",
                "restart": "a counter reset (server restart at t=40) must not read as a drop: use labkit.promql.rate.",
            }[name]
            problems.append(f"For the {name} frame the ratio after t=41 s should be 0.25, got {got}: {hint}")
    return _feedback("04", problems, "0.25 on all three frames, through a restart too.")


def error_ratio_reference(frame: pd.DataFrame, window: float) -> pd.Series:
    """How the checker itself computes the ratio (shown after the exercise)."""
    rates = promql.rate(frame, "demo_requests_total", window, by=["outcome"])
    return rates["error"] / rates.sum(axis=1)


# ------------------------------------------------------------------ exercise 04b

ORIGIN_04B = 1_700_000_000.0  # an epoch time: x values this large are scrape times, small ones seconds since start
WINDOW_04B = 5.0
SAMPLE_04B = "demo_request_duration_seconds_count"


def histogram_frame_04b() -> pd.DataFrame:
    """The sampled-looking frame exercise 04b is graded on: ``demo_request_duration_seconds``
    scraped every second for 40 s: 20 requests/s, then 60 requests/s (slower), then none."""
    bounds = ("0.001", "0.01", "0.1", "+Inf")
    cumulative = dict.fromkeys(bounds, 0.0)
    total_seconds = 0.0
    rows = []
    labels = {"model": "metrics_demo", "version": "1"}
    for t in range(41):
        for le, value in cumulative.items():
            rows.append({"sample": "demo_request_duration_seconds_bucket", "le": le, "value": value})
        rows.append({"sample": "demo_request_duration_seconds_count", "le": None, "value": cumulative["+Inf"]})
        rows.append({"sample": "demo_request_duration_seconds_sum", "le": None, "value": total_seconds})
        for row in rows[-6:]:
            row.update(time=ORIGIN_04B + t, family="demo_request_duration_seconds", type="histogram", **labels)
        per_bucket = (6, 10, 3, 1) if t < 10 else (6, 30, 18, 6) if t < 25 else (0, 0, 0, 0)
        for i, le in enumerate(bounds):
            cumulative[le] += sum(per_bucket[: i + 1])
        total_seconds += 0.004 * sum(per_bucket) if t < 10 else 0.02 * sum(per_bucket)
    columns = ["time", "family", "type", "sample", "le", "model", "version", "value"]
    return pd.DataFrame(rows)[columns]


def _figure_of(answer):
    """The Figure of a returned Axes or Figure (None for anything else)."""
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    if isinstance(answer, Axes):
        return answer.figure
    if isinstance(answer, Figure):
        return answer
    if isinstance(answer, np.ndarray) and answer.size and isinstance(answer.flat[0], Axes):
        return answer.flat[0].figure  # plt.subplots(2, 1)[1]
    return None


def _line_matches(xs: np.ndarray, ys: np.ndarray, expected: pd.Series, origin: float) -> bool:
    """Whether the drawn points (x in seconds since ``origin`` or in epoch seconds) hold every finite point of
    ``expected`` (indexed by epoch seconds) within 1 %."""
    xs = np.asarray(xs, dtype=float)
    ys = np.asarray(ys, dtype=float)
    if xs.size == 0:
        return False
    if np.nanmin(xs) < origin / 2:
        xs = xs + origin
    drawn = dict(zip(np.round(xs, 3), ys, strict=False))
    wanted = expected.dropna()
    if wanted.empty:
        return False
    for t, value in wanted.items():
        got = drawn.get(round(float(t), 3))
        if got is None or not np.isfinite(got) or abs(got - value) > 0.01 * abs(value) + 1e-6:
            return False
    return True


def check_04b(plot_rate: Callable[[pd.DataFrame, float], object]) -> Feedback:
    """Exercise 04b: ``plot_rate(frame, window)`` plots ``rate(demo_request_duration_seconds_count[window])``
    over time with matplotlib and returns the Axes or Figure.

    The checker reads the figure back: a line whose points are that rate (from
    ``labkit.promql.rate``) at the scrape times, an x label with a time unit, a y label
    with a per-second unit, and a title. Other samples of the histogram and the raw
    counter are recognised and named.
    """
    import matplotlib.pyplot as plt

    frame = histogram_frame_04b()
    figures_before = set(plt.get_fignums())
    answer = plot_rate(frame, WINDOW_04B)
    try:
        if answer is None:
            return Feedback("04b", NOT_ATTEMPTED, "Make plot_rate(frame, window) draw the rate and return the Axes.")
        fig = _figure_of(answer)
        if fig is None:
            kind = type(answer).__name__
            return Feedback("04b", WRONG, f"It returned {kind}: return the matplotlib Axes (or Figure) you drew on.")
        return _grade_04b(fig, frame)
    finally:
        for number in set(plt.get_fignums()) - figures_before:
            plt.close(number)  # graded, not shown: call plot_rate(samples, 2.0) to see it


def _grade_04b(fig, frame: pd.DataFrame) -> Feedback:
    import re

    expected = promql.rate(frame, SAMPLE_04B, WINDOW_04B)["total"]
    lines = [(ax, line) for ax in fig.axes for line in ax.get_lines()]
    if not lines:
        return Feedback("04b", WRONG, "The figure has no line: draw the rate with ax.plot(times, rates).")
    found = [(ax, ln) for ax, ln in lines if _line_matches(ln.get_xdata(), ln.get_ydata(), expected, ORIGIN_04B)]
    if not found:
        counter = promql.series(frame, SAMPLE_04B).sum(axis=1)
        mistakes = (
            (
                counter,
                "It draws the cumulative counter (requests since the server started), not its rate: "
                f"plot labkit.promql.rate(frame, {SAMPLE_04B!r}, window).",
            ),
            (
                promql.rate(frame, "demo_request_duration_seconds_bucket", WINDOW_04B)["total"],
                "It draws the rate of the _bucket series summed over every le, which counts each request once "
                "per bucket bound at or above its latency: take the _count sample (the +Inf bucket alone is the same).",
            ),
            (
                promql.rate(frame, "demo_request_duration_seconds_sum", WINDOW_04B)["total"],
                "It draws the rate of _sum: seconds of compute per second, not requests per second. Take _count.",
            ),
        )
        for wrong_values, message in mistakes:
            if any(_line_matches(ln.get_xdata(), ln.get_ydata(), wrong_values, ORIGIN_04B) for _, ln in lines):
                return Feedback("04b", WRONG, message)
        probe = ORIGIN_04B + 20.0
        return Feedback(
            "04b",
            WRONG,
            f"No line holds rate({SAMPLE_04B}[{WINDOW_04B:g}s]) at the scrape times (at 20 s it is "
            f"{expected[probe]:g} requests/s). Plot labkit.promql.rate(frame, {SAMPLE_04B!r}, window) against "
            "the scrape times (or seconds since the first scrape).",
        )
    ax = found[0][0]
    problems = []
    time_unit = re.compile(r"\((s|sec|seconds?)\)|\[(s|sec|seconds?)\]|\bseconds?\b")
    rate_unit = re.compile(r"/\s*s\b|/\s*sec|/\s*second|per second")
    if not time_unit.search(ax.get_xlabel()):
        problems.append(f"Label the x axis with its unit, e.g. 'time since start (s)' (it says {ax.get_xlabel()!r}).")
    if not rate_unit.search(ax.get_ylabel()):
        problems.append(f"Label the y axis with its unit, e.g. 'rate (requests/s)' (it says {ax.get_ylabel()!r}).")
    if not (fig.get_suptitle() or any(a.get_title() for a in fig.axes)):
        problems.append("Give the plot a title that says what it shows (ax.set_title(...)).")
    return _feedback("04b", problems, "The rate of _count at every scrape, axes labelled with units, and a title.")


# ------------------------------------------------------------------ exercise 05

WRONG_05_HINTS = (
    (lambda v: 0.30 < v < 0.37, "that is errors / successes (1/3); divide by all requests instead."),
    (lambda v: v < 0.2, "close to the share since the server started: take rate(...[10s]) of each counter first."),
)


def check_05(queries: str | list[str]) -> Feedback | list[Feedback]:
    """Exercise 05: the PromQL for the error ratio of ``metrics_demo`` over the last 10 s.

    A real Triton gets 200 good requests, then ~12 s of traffic where exactly one
    request in four carries a NaN; a real Prometheus scrapes it every second. The
    query is evaluated at the end and must give one series close to 0.25.
    Several queries can be graded on one run by passing a list.
    """
    batch = [queries] if isinstance(queries, str) else list(queries)
    if not any(q.strip() for q in batch):
        return Feedback("05", NOT_ATTEMPTED, "Write the PromQL expression in the string, then run this check.")
    from tritonclient.utils import InferenceServerException

    from labkit import prometheus, traffic

    with triton.start(paths.MODEL_REPOSITORY, models=["metrics_demo"]) as server:
        with prometheus.start([server], scrape_interval=1.0) as prom:
            prom.wait_for_samples("demo_requests_total", count=2, timeout=30)
            client = traffic.make_client(server, "grpc")
            rng = np.random.default_rng(5)
            for _ in range(200):  # history: no errors
                traffic.infer(client, rng.normal(size=32).astype(np.float32))
            time.sleep(2.0)
            end = time.monotonic() + 12.0
            sent = 0
            while time.monotonic() < end:
                values = rng.normal(size=32).astype(np.float32)
                bad = sent % 4 == 0
                if bad:
                    values[0] = np.nan
                try:
                    traffic.infer(client, values)
                except InferenceServerException:
                    if not bad:  # only the NaN requests may fail
                        raise
                sent += 1
                time.sleep(0.02)
            client.close()
            # grade once Prometheus has scraped every request, not after a guessed pause
            total = scrape.value(scrape.scrape(server.metrics_url), "demo_requests_total")
            prom.wait_for(f"sum(demo_requests_total) >= {total:g}", timeout=15)
            results = [_grade_05(prom, q) for q in batch]
    return results[0] if isinstance(queries, str) else results


def _grade_05(prom, query: str) -> Feedback:
    from labkit.prometheus import PromQLError

    if not query.strip():
        return Feedback("05", NOT_ATTEMPTED, "Write the PromQL expression in the string.")
    try:
        frame = prom.query(query)
    except PromQLError as err:
        return Feedback("05", WRONG, f"Prometheus refused the query: {err}")
    if len(frame) != 1:
        return Feedback("05", WRONG, f"It returned {len(frame)} series; aggregate with sum(...) to get one ratio.")
    value = float(frame["value"].iloc[0])
    if abs(value - 0.25) <= 0.04:
        return Feedback(
            "05", CORRECT, f"{value:.3f} of the requests failed over the last 10 s (exactly 1 in 4 was bad)."
        )
    if value > 1.5:
        return Feedback(
            "05", WRONG, f"It gave {value:.1f}, a rate in requests per second, not a ratio between 0 and 1."
        )
    hint = next((h for test, h in WRONG_05_HINTS if test(value)), "expected about 0.25.")
    return Feedback("05", WRONG, f"It gave {value:.3f}: {hint}")


# ------------------------------------------------------------------ exercise 06

OBJECTIVE_06_S = 0.2


def latency_sample_06(n: int = 50_000) -> np.ndarray:
    """The latencies exercise 06 is graded on: a lognormal around 120 ms with a tail past 500 ms (seconds)."""
    return np.random.default_rng(6).lognormal(mean=np.log(0.12), sigma=0.5, size=n)


def check_06(buckets: list[float]) -> Feedback:
    """Exercise 06: histogram buckets (seconds) for a model whose latency objective is 200 ms.

    They must be valid for Triton (a non-empty, strictly increasing list), in
    seconds, include the objective itself as a bound (so "the share of requests
    under 200 ms" is exact), stay small (each bucket is one more series), and
    estimate p50, p95 and p99 of a realistic latency sample within 10 %.
    """
    if not buckets:
        return Feedback("06", NOT_ATTEMPTED, "Put your bucket upper bounds, in seconds, in the list.")
    bounds = [float(b) for b in buckets]
    if any(b >= a for a, b in zip(bounds[1:], bounds[:-1], strict=True)) or bounds[0] <= 0:
        return Feedback("06", WRONG, "Triton needs positive bounds in strictly increasing order.")
    if max(bounds) > 60:
        return Feedback(
            "06", WRONG, f"A bound of {max(bounds):g} looks like milliseconds: Prometheus histograms use seconds."
        )
    problems = []
    if not any(abs(b - OBJECTIVE_06_S) < 1e-9 for b in bounds):
        problems.append("Make 0.2 one of the bounds: then the share of requests within the 200 ms objective is exact.")
    if len(bounds) > 15:
        problems.append(f"{len(bounds)} buckets is a lot of series per label set; 15 or fewer do the job.")
    latencies = latency_sample_06()
    cumulative = {str(b): float((latencies <= b).sum()) for b in bounds}
    cumulative["+Inf"] = float(latencies.size)
    for q in (0.5, 0.95, 0.99):
        exact = float(np.quantile(latencies, q))
        estimate = promql.histogram_quantile(q, cumulative)
        error = abs(estimate - exact) / exact
        if error > 0.10:
            problems.append(
                f"p{q * 100:g} comes out {estimate * 1e3:.0f} ms for an exact {exact * 1e3:.0f} ms ({error:.0%} off): "
                "put more bounds where the latencies are (around 0.05-1 s)."
            )
    return _feedback("06", problems, "Valid, in seconds, 0.2 s is a bound, and p50/p95/p99 are within 10 %.")


# ------------------------------------------------------------------ exercise 07

TEMPLATE_07 = paths.NOTEBOOKS / "pitfalls" / "family_deleted.py"
PITFALL_CONFIG = paths.NOTEBOOKS / "pitfalls" / "config.pbtxt"


def _traffic_07(server: triton.TritonServer) -> tuple[list[str], pd.DataFrame]:
    """Five requests (the errors they get, if any), then one scrape."""
    from tritonclient.utils import InferenceServerException

    from labkit import traffic

    client = traffic.make_client(server, "http")
    failures = []
    for size in (2, 3, 4, 5, 6):
        try:
            traffic.infer(client, np.arange(size, dtype=np.float32), model="family_deleted")
        except InferenceServerException as err:
            failures.append(err.message())
    client.close()
    return failures, scrape.scrape(server.metrics_url)


def check_07(model_py: str | Path | None = None) -> Feedback:
    """Exercise 07: fix ``pitfalls/family_deleted.py`` so its counter counts.

    The fixed model is loaded in a real Triton; 5 requests must all succeed and
    ``pitfall_deleted_requests_total`` must read 5.
    """
    result, failed = _run_model("07", model_py, TEMPLATE_07, "family_deleted", PITFALL_CONFIG, _traffic_07)
    if failed is not None:
        return failed
    failures, frame = result
    if failures:
        return Feedback("07", WRONG, f"{len(failures)} of 5 requests failed; the first said: {failures[0]}")
    rows = frame[frame["sample"] == "pitfall_deleted_requests_total"]
    if rows.empty:
        return Feedback(
            "07",
            WRONG,
            "The requests succeed but pitfall_deleted_requests_total is not on /metrics: its family is gone (a "
            "swallowed error?) or renamed. Keep the family alive on self, under the same name.",
        )
    count = rows["value"].sum()
    if count != 5:
        return Feedback(
            "07",
            WRONG,
            f"The requests succeed but the counter says {count:g}, not 5: is an error being "
            "swallowed? Keep the family alive instead (on self).",
        )
    return Feedback("07", CORRECT, "5 requests, counter at 5: the family now lives as long as its metric.")


# ------------------------------------------------------------------ exercise 08

TEMPLATE_08 = paths.NOTEBOOKS / "exercises" / "batch_rows.py"
BATCHING_CONFIG = paths.MODEL_REPOSITORY / "cookbook_batching" / "config.pbtxt"
FAMILY_08 = "cookbook_execute_rows"
BUCKETS_08 = (1.0, 2.0, 4.0, 8.0)
ROWS_ALONE_08 = (1, 3, 8, 2, 5)  # sent one at a time: each request is an execute() call of its own
CLIENTS_08, REQUESTS_08 = 8, 12  # then one-row requests from 8 clients at once: the batcher groups them


def _stable(read: Callable[[], float], timeout: float = 5.0) -> float:
    """``read()`` once two readings 0.2 s apart agree (Triton moves its counters just after a response)."""
    readings: list[float] = []

    def agree() -> bool:
        readings.append(read())
        return len(readings) > 1 and readings[-1] == readings[-2]

    with contextlib.suppress(TimeoutError):
        process.wait_until(agree, timeout, "two equal readings")
    return readings[-1]


def _traffic_08(server: triton.TritonServer) -> dict:
    """Rows sent alone, then concurrent one-row requests; scrapes after each, with Triton's own counts settled."""
    from concurrent.futures import ThreadPoolExecutor

    import tritonclient.grpc as grpcclient

    name, url = "cookbook_batching", server.metrics_url

    def send(client, rows: int) -> None:
        tensor = grpcclient.InferInput("INPUT0", [rows, 4], "FP32")
        tensor.set_data_from_numpy(np.ones((rows, 4), dtype=np.float32))
        client.infer(name, inputs=[tensor])

    def one_client(_: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for _ in range(REQUESTS_08):
                send(client, 1)
        finally:
            client.close()

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        for rows in ROWS_ALONE_08:
            send(client, rows)
    finally:
        client.close()
    rows_sent, requests_sent = sum(ROWS_ALONE_08), len(ROWS_ALONE_08)
    scrape.settled_value(url, "nv_inference_count", rows_sent, model=name)
    alone = scrape.scrape(url)
    for _ in range(3):  # until the batcher has grouped requests (on a quiet machine: the first round)
        with ThreadPoolExecutor(CLIENTS_08) as pool:
            list(pool.map(one_client, range(CLIENTS_08)))
        rows_sent += CLIENTS_08 * REQUESTS_08
        requests_sent += CLIENTS_08 * REQUESTS_08
        scrape.settled_value(url, "nv_inference_count", rows_sent, model=name)
        executes = _stable(lambda: scrape.value(scrape.scrape(url), "nv_inference_exec_count", model=name))
        if executes < requests_sent:
            break
    together = scrape.scrape(url)
    return {"alone": alone, "together": together, "rows": rows_sent, "requests": requests_sent, "executes": executes}


def check_08(model_py: str | Path | None = None) -> Feedback:
    """Exercise 08: a histogram ``cookbook_execute_rows`` of the rows per ``execute()`` call, buckets 1, 2, 4, 8.

    The model is loaded in a real Triton with the dynamic-batching config of
    ``cookbook_batching``. Requests of 1, 3, 8, 2 and 5 rows sent one at a time must give
    exactly ``_count`` 5, ``_sum`` 19 and buckets 1 / 2 / 3 / 5 / 5; then, with 8 clients
    at once, ``_count`` must equal Triton's ``nv_inference_exec_count`` and ``_sum`` its
    ``nv_inference_count`` (rows).
    """
    result, failed = _run_model("08", model_py, TEMPLATE_08, "cookbook_batching", BATCHING_CONFIG, _traffic_08)
    if failed is not None:
        return failed
    missing = _find_histogram("08", result["alone"], FAMILY_08)
    if missing is not None:
        return missing
    cumulative, count, total = _histogram(result["alone"], FAMILY_08)
    bounds = _bounds_problem(cumulative, BUCKETS_08)
    if bounds:
        return Feedback("08", WRONG, bounds + " One bucket per batch size up to max_batch_size (8).")
    alone = ", ".join(str(r) for r in ROWS_ALONE_08)
    if total != sum(ROWS_ALONE_08):
        hint = " (one per request?)" if total == len(ROWS_ALONE_08) else ""
        return Feedback(
            "08",
            WRONG,
            f"After requests of {alone} rows sent one at a time, _sum is {total:g}{hint}, not {sum(ROWS_ALONE_08)}: "
            "observe the rows of the call, every request's INPUT0.shape[0] added up.",
        )
    expected = {b: float(sum(r <= b for r in ROWS_ALONE_08)) for b in (*BUCKETS_08, np.inf)}
    got = {float(b): float(v) for b, v in cumulative.items()}
    if count != len(ROWS_ALONE_08) or got != expected:
        return Feedback(
            "08",
            WRONG,
            f"After requests of {alone} rows sent one at a time (5 execute() calls), _count is {count:g} and the "
            f"cumulative buckets read {got}, not 5 and {expected}: one observation per call, of its rows.",
        )
    _, count, total = _histogram(result["together"], FAMILY_08)
    executes, rows = result["executes"], result["rows"]
    if count != executes:
        return Feedback(
            "08",
            WRONG,
            f"With 8 clients at once Triton ran execute() {executes:g} times for {result['requests']} requests "
            f"(nv_inference_exec_count), but _count is {count:g}: observe once per execute() call, not once per "
            "request.",
        )
    if total != rows:
        return Feedback("08", WRONG, f"_sum is {total:g} but Triton counted {rows} rows (nv_inference_count).")
    return Feedback(
        "08",
        CORRECT,
        f"One observation per execute() call: {executes:g} calls, {rows} rows, a mean batch of {rows / executes:.1f} "
        "rows, as Triton's nv_inference_count / nv_inference_exec_count says.",
    )


# ------------------------------------------------------------------ exercise 09

STEP_09_S, END_09_S = 15, 600  # a scrape every 15 s for 10 minutes; graded at the end
BOUNDS_09 = ("0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "+Inf")
# requests per 15 s in each bucket (not cumulative): (before the last 2 minutes, during them)
TRAFFIC_09 = {
    ("triton", "triton-0"): ((0, 0, 5, 40, 50, 5, 0, 0, 0, 0, 0), (0, 0, 0, 20, 100, 120, 40, 10, 0, 0, 0)),
    ("triton", "triton-1"): ((0, 5, 20, 20, 5, 0, 0, 0, 0, 0, 0), (0, 0, 0, 5, 10, 5, 5, 10, 10, 5, 0)),
    ("triton", "triton-2"): ((10, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0), (5, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0)),
    ("staging", "triton-staging-0"): ((0, 0, 0, 0, 0, 0, 0, 5, 20, 20, 5), (0, 0, 0, 0, 0, 0, 0, 5, 20, 20, 5)),
}
_BUCKETS_09 = "demo_request_duration_seconds_bucket"
_TRITON_09 = f'{_BUCKETS_09}{{namespace="triton"}}'
# the right query, then known mistakes with what to say about each
REFERENCE_09 = f"histogram_quantile(0.95, sum by (le) (rate({_TRITON_09}[1m])))"
MISTAKES_09 = (
    (
        f"avg(histogram_quantile(0.95, sum by (pod, le) (rate({_TRITON_09}[1m]))))",
        "that is the average of the pods' p95s, which describes no real request: add the pods' bucket rates "
        "first (sum by (le)), then take the quantile.",
    ),
    (
        f"histogram_quantile(0.95, sum by (le) ({_TRITON_09}))",
        "that is the p95 since the servers started (the buckets' running totals): take rate(...[1m]) of the "
        "buckets first.",
    ),
    (
        f"histogram_quantile(0.95, sum by (le) (rate({_BUCKETS_09}[1m])))",
        'that counts the staging pod too: select {namespace="triton"}.',
    ),
    (
        f"histogram_quantile(0.95, sum by (le) (rate({_TRITON_09}[5m])))",
        "that is over the last 5 minutes: the window is the range in rate(...[1m]).",
    ),
    (f"histogram_quantile(0.5, sum by (le) (rate({_TRITON_09}[1m])))", "that is the median: p95 is 0.95."),
    (f"histogram_quantile(0.99, sum by (le) (rate({_TRITON_09}[1m])))", "that is p99: p95 is 0.95."),
)


def fleet_series_09() -> list[dict]:
    """The series exercise 09 is graded on: cumulative ``demo_request_duration_seconds_bucket``
    counters of three pods of namespace ``triton`` and one of ``staging``, every 15 s for 10 min.
    The last 2 minutes are busier and slower than before."""
    series = []
    for index, ((namespace, pod), (before, during)) in enumerate(TRAFFIC_09.items()):
        for i, le in enumerate(BOUNDS_09):
            value, values = 0, []
            for t in range(0, END_09_S + 1, STEP_09_S):
                values.append(value)
                value += sum((during if t >= END_09_S - 120 else before)[: i + 1])
            labels = {"job": "triton", "instance": f"10.0.0.{index + 1}:8002", "namespace": namespace, "pod": pod}
            series.append({"labels": {**labels, "le": le}, "values": values})
    return series


def evaluate_promql_09(queries: list[str]) -> list[tuple[str, list[tuple[str, float]]]]:
    """Evaluate each query at the end of :func:`fleet_series_09` with Prometheus's own engine
    (``promtool test rules``, no server): ``(error, [(labels, value), ...])`` per query."""
    import json

    sentinel = -123456.789  # what no query gives: every test "fails" and promtool prints what it got
    input_series = [
        {
            "series": _BUCKETS_09 + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in s["labels"].items()) + "}",
            "values": " ".join(str(v) for v in s["values"]),
        }
        for s in fleet_series_09()
    ]
    tests = [
        {"expr": q, "eval_time": f"{END_09_S}s", "exp_samples": [{"labels": "{}", "value": sentinel}]} for q in queries
    ]
    unit = {
        "rule_files": [],
        "evaluation_interval": f"{STEP_09_S}s",
        "tests": [{"interval": f"{STEP_09_S}s", "input_series": input_series, "promql_expr_test": tests}],
    }
    return promtool_results(unit, "check-09", len(queries))


def promtool_results(unit: dict, name: str, expected: int) -> list[tuple[str, list[tuple[str, float]]]]:
    """Run ``promtool test rules`` on ``unit`` (a rule-test file as a dict; its tests expect nothing, so promtool
    prints what each query got) and return, per query in order, (its error or "", [(labels, value), ...])."""
    import re

    import yaml

    from labkit import prometheus

    path = paths.scratch(name) / "unit_test.yml"
    path.write_text(yaml.safe_dump(unit, sort_keys=False))
    out = prometheus.promtool("test", "rules", str(path))
    results: list[list] = []  # promtool prints one "expr:" line per query, in order, then what it got
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("    expr: "):
            error = re.search(r", time: [^,]+, err: (.*)$", line)
            results.append([error.group(1).strip() if error else "", []])
        elif line.startswith("        got: ") and results:
            text = line.removeprefix("        got: ").strip()
            samples = [] if text == "nil" else re.findall(r"(\{[^}]*\}) (\S+?)(?:, |$)", text)
            results[-1][1] = [(labels, float(value)) for labels, value in samples]
    if len(results) != expected:
        raise RuntimeError(f"promtool answered {len(results)} results for {expected} queries:\n{out.stdout}")
    return [(error, samples) for error, samples in results]


def check_09(queries: str | list[str]) -> Feedback | list[Feedback]:
    """Exercise 09: the PromQL for the fleet's p95 request latency over the last minute.

    Graded on known series (:func:`fleet_series_09`: three pods of namespace ``triton``
    and one of ``staging``, scraped every 15 s, the last 2 minutes busier and slower)
    with Prometheus's own engine, so it runs in a second. The query must return one
    series equal to ``histogram_quantile(0.95, sum by (le) (rate(...[1m])))`` over the
    ``triton`` pods. Several queries can be graded at once by passing a list.
    """
    batch = [queries] if isinstance(queries, str) else list(queries)
    if not any(q.strip() for q in batch):
        return Feedback("09", NOT_ATTEMPTED, "Write the PromQL expression in the string, then run this check.")
    attempted = [q for q in batch if q.strip()]
    answers = evaluate_promql_09([REFERENCE_09, *(m for m, _ in MISTAKES_09), *attempted])
    reference = answers[0][1][0][1]
    known = answers[1 : 1 + len(MISTAKES_09)]
    mistakes = [(answer[1][0][1], hint) for answer, (_, hint) in zip(known, MISTAKES_09, strict=True)]
    graded = iter(answers[1 + len(MISTAKES_09) :])
    results = [_grade_09(next(graded), reference, mistakes) if q.strip() else _grade_09(None, 0, []) for q in batch]
    return results[0] if isinstance(queries, str) else results


def _grade_09(answer, reference: float, mistakes: list[tuple[float, str]]) -> Feedback:
    if answer is None:
        return Feedback("09", NOT_ATTEMPTED, "Write the PromQL expression in the string.")
    error, samples = answer
    if error:
        return Feedback("09", WRONG, f"Prometheus refused the query: {error}")
    if not samples:
        return Feedback(
            "09",
            WRONG,
            "It returned nothing: histogram_quantile needs the le label of demo_request_duration_seconds_bucket, "
            "so keep it when you aggregate (sum by (le)).",
        )
    if len(samples) > 1:
        shown = ", ".join(labels for labels, _ in samples[:3])
        return Feedback(
            "09",
            WRONG,
            f"It returned {len(samples)} series ({shown}{', ...' if len(samples) > 3 else ''}); the fleet is one "
            "number: add the pods' bucket rates with sum by (le) (...).",
        )
    value = samples[0][1]
    if np.isclose(value, reference, rtol=1e-9, atol=0):
        return Feedback(
            "09", CORRECT, f"{value * 1e3:.1f} ms: the fleet's p95 over the last minute, from the pods' buckets summed."
        )
    if not np.isfinite(value):
        return Feedback(
            "09", WRONG, f"It gave {value}: the quantile is a fraction between 0 and 1 (0.95), not a percentage."
        )
    hint = next((h for v, h in mistakes if np.isclose(value, v, rtol=1e-9, atol=0)), "")
    return Feedback("09", WRONG, f"It gave {value * 1e3:.1f} ms: " + (hint or "not the fleet's p95 over the last 1m."))


from labcheck.quality import check_13  # noqa: E402,F401
from labcheck.slo import check_10  # noqa: E402,F401
from labcheck.streaming import check_11  # noqa: E402,F401
from labcheck.traces import check_12  # noqa: E402,F401
