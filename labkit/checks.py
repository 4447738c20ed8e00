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

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labkit import paths, promql, repository, scrape, triton

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
    model_py = Path(model_py) if model_py else exercise_path("01", TEMPLATE_01)
    if not model_py.exists() or model_py.read_text() == TEMPLATE_01.read_text():
        return Feedback("01", NOT_ATTEMPTED, f"Edit {model_py} (a copy of step 1), then run this check again.")
    repo = paths.scratch("check-01")
    repository.add_model(repo, "metrics_demo", model_py)
    try:
        server = triton.start(repo, models=["metrics_demo"])
    except triton.TritonStartError as err:
        return Feedback("01", WRONG, "Triton could not load your model:\n" + str(err).split("\n\nLast lines")[0])
    with server:
        from tritonclient.utils import InferenceServerException

        from labkit import traffic

        client = traffic.make_client(server, "http")
        try:
            for size in (3, 10, 100):
                traffic.infer(client, np.ones(size, dtype=np.float32))
        except InferenceServerException as err:
            return Feedback("01", WRONG, f"A request of {size} values failed in your model: {err.message()}")
        finally:
            client.close()
        frame = scrape.scrape(server.metrics_url)
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


# ------------------------------------------------------------------ exercise 02


def check_02(metrics_flags: Callable[[int], list[str]]) -> Feedback:
    """Exercise 02: ``metrics_flags(port)`` returns the tritonserver flags that serve metrics
    on 127.0.0.1:port only, refreshed every 250 ms. They are run on a real tritonserver."""
    port = triton.free_port()
    flags = metrics_flags(port)
    if not flags:
        return Feedback("02", NOT_ATTEMPTED, "Make metrics_flags(port) return a list of flags.")
    flags = [str(f) for f in flags]
    problems = []
    if "--metrics-interval-ms=250" not in flags and not _flag_pair(flags, "--metrics-interval-ms", "250"):
        problems.append("Give the refresh interval: --metrics-interval-ms=250.")
    addresses = [f.split("=", 1)[1] for f in flags if f.startswith("--metrics-address=")]
    addresses += [b for a, b in zip(flags, flags[1:], strict=False) if a == "--metrics-address"]
    if any(a != "127.0.0.1" for a in addresses):
        # refused before anything starts: the checker never opens a port to the network
        return Feedback(
            "02",
            WRONG,
            f"--metrics-address={addresses[0]} would let any machine that reaches this "
            "one read the metrics: bind 127.0.0.1 (or leave it out: it defaults to --http-address).",
        )
    install = triton.prepare_local_install()
    http, grpc = triton.free_ports(2)
    command = [
        str(install.binary),
        f"--model-repository={paths.MODEL_REPOSITORY}",
        f"--backend-directory={install.backend_dir}",
        "--model-control-mode=explicit",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        "--exit-timeout-secs=3",
        *flags,
    ]
    env = triton.stub_environment(install.libs_dir)
    server = triton.TritonServer(command, env, triton.Ports(http, grpc, port), "local", metrics=False)
    try:
        server.wait_ready(60)
    except triton.TritonStartError as err:
        return Feedback("02", WRONG, "tritonserver did not start with these flags:\n" + str(err).split("\n\nLast")[0])
    try:
        deadline = time.monotonic() + 5
        while not any(p == port for _, p in _listening(server.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        listening = _listening(server.pid)
    finally:
        server.stop()
    on_port = {ip for ip, p in listening if p == port}
    if not on_port:
        problems.append(f"Nothing listened on port {port}: set --metrics-port to the port argument.")
    elif on_port != {"127.0.0.1"}:
        problems.append(f"The metrics port listened on {sorted(on_port)}: bind it with --metrics-address=127.0.0.1.")
    return _feedback("02", problems, f"Metrics served on 127.0.0.1:{port} only, refreshed every 250 ms.")


def _flag_pair(flags: list[str], name: str, value: str) -> bool:
    return any(a == name and b == value for a, b in zip(flags, flags[1:], strict=False))


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


def check_07(model_py: str | Path | None = None) -> Feedback:
    """Exercise 07: fix ``pitfalls/family_deleted.py`` so its counter counts.

    The fixed model is loaded in a real Triton; 5 requests must all succeed and
    ``pitfall_deleted_requests_total`` must read 5.
    """
    model_py = Path(model_py) if model_py else exercise_path("07", TEMPLATE_07)
    if not model_py.exists() or model_py.read_text() == TEMPLATE_07.read_text():
        return Feedback("07", NOT_ATTEMPTED, f"Fix {model_py} (a copy of the pitfall), then run this check again.")
    repo = paths.scratch("check-07")
    repository.add_model(repo, "family_deleted", model_py, config=PITFALL_CONFIG)
    try:
        server = triton.start(repo, models=["family_deleted"])
    except triton.TritonStartError as err:
        return Feedback("07", WRONG, "Triton could not load your model:\n" + str(err).split("\n\nLast lines")[0])
    with server:
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
        frame = scrape.scrape(server.metrics_url)
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
