"""Run a real Prometheus next to Triton and read PromQL results into pandas.

``start(targets)`` writes a config scraping the given Triton servers (or metrics URLs), starts
``prometheus`` on a free 127.0.0.1 port with its storage in a temp folder, and returns a
:class:`Prometheus` handle (a :class:`labkit.process.ManagedServer`): ``query``, ``query_range``,
``alerts``, ``rules``, ``targets``, ``set_rules`` (reload without restart), ``stop()``, and
``panel_query`` (a Grafana panel's query, its variables filled in; ``dashboard(name)`` reads a shipped dashboard).
A missing binary raises :class:`PrometheusNotFoundError` ending with :data:`INSTALL_HINT`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import requests
import yaml

from labkit import paths
from labkit.process import ManagedServer, free_port, start_with_port_retry, wait_until

INSTALL_HINT = (
    "Debian/Ubuntu: `sudo apt-get install prometheus` (it brings promtool; if it starts a service on port 9090, "
    "`sudo systemctl disable --now prometheus`); macOS: `brew install prometheus`; "
    "or run the whole stack in Docker: "
    "`GRAFANA_ADMIN_PASSWORD=<choose one> docker compose -p triton-metrics -f docker/compose.yaml up -d`"
)
JOB = "triton"


DASHBOARDS = paths.ROOT / "docker" / "grafana" / "dashboards"


def dashboard(name: str) -> dict:
    """A Grafana dashboard of ``docker/grafana/dashboards/`` (``name``: its file name), as a dict."""
    return json.loads((DASHBOARDS / name).read_text())


def grafana_expr(expr: str, rate_interval: str = "5s", job: str = JOB, model: str = ".+") -> str:
    """A dashboard query with Grafana's variables replaced (``$__rate_interval``, ``$__interval``, ``$job``,
    ``$model``, also written ``${...}``), ready for Prometheus' API; ``model=".+"`` is the "All" value."""
    for name, value in (("__rate_interval", rate_interval), ("__interval", rate_interval), ("job", job)):
        expr = re.sub(rf"\$\{{?{name}\b\}}?", value, expr)
    return re.sub(r"\$\{?model\b\}?", model, expr)


class PrometheusNotFoundError(RuntimeError):
    """The ``prometheus`` (or ``promtool``) binary is not on PATH; the message says how to install it."""


class PrometheusStartError(RuntimeError):
    """Prometheus did not become ready; the message quotes the end of its log."""


class PromQLError(RuntimeError):
    """Prometheus refused a query (bad syntax, unknown function...); the message is Prometheus' own."""


class PrometheusReloadError(RuntimeError):
    """Prometheus refused the new config or rules on reload; it keeps the old ones. The message says why."""


def find_binary(name: str = "prometheus") -> str:
    """Full path of ``prometheus`` or ``promtool``, or :class:`PrometheusNotFoundError` with the install commands."""
    found = shutil.which(name)
    if found is None:
        raise PrometheusNotFoundError(f"`{name}` is not installed (not on PATH). Install it: {INSTALL_HINT}")
    return found


def promtool(*args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``promtool args...`` and return the completed process (text output, not checked)."""
    cmd = [find_binary("promtool"), *args]
    return subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``1`` -> ``"1s"``, ``0.5`` -> ``"500ms"``, ``300`` -> ``"5m"``."""
    ms = int(round(seconds * 1000))
    if ms <= 0:
        raise ValueError(f"a duration must be positive, not {seconds!r}")
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def target_of(target: Any) -> tuple[str, str]:
    """``(host:port, metrics_path)`` of a TritonServer handle, a metrics URL or a ``host:port``."""
    url = getattr(target, "metrics_url", target)
    match = re.fullmatch(r"(?:https?://)?([^/]+)(/.*)?", str(url))
    if not match:
        raise ValueError(f"not a metrics URL or host:port: {url!r}")
    return match.group(1), match.group(2) or "/metrics"


def make_config(
    targets: Iterable[Any],
    *,
    job: str = JOB,
    scrape_interval: float = 1.0,
    evaluation_interval: float | None = None,
    rule_files: Sequence[str | os.PathLike] = (),
) -> dict:
    """A Prometheus config (as a dict) scraping ``targets`` in the job ``job``.

    Targets with another metrics path than ``/metrics`` get a scrape config of
    their own; job names must be unique, so these are then ``<job>-0``, ``<job>-1``...
    """
    by_path: dict[str, list[str]] = {}
    for target in targets:
        address, path = target_of(target)
        by_path.setdefault(path, []).append(address)
    scrape_configs = [
        {"job_name": job, "metrics_path": path, "static_configs": [{"targets": addresses}]}
        for path, addresses in by_path.items()
    ]
    if len(scrape_configs) > 1:  # job names must be unique
        for number, config in enumerate(scrape_configs):
            config["job_name"] = f"{job}-{number}"
    interval = duration(scrape_interval)
    config: dict = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": duration(evaluation_interval or scrape_interval),
        },
        "scrape_configs": scrape_configs,
    }
    if rule_files:
        config["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
    return config


def _labels_first(frame: pd.DataFrame) -> pd.DataFrame:
    labels = sorted(c for c in frame.columns if c not in ("time", "value"))
    if "__name__" in labels:
        labels.remove("__name__")
        labels.insert(0, "__name__")
    return frame[[*labels, "time", "value"]]


def result_frame(data: Mapping) -> pd.DataFrame:
    """The ``data`` of a query API answer as a tidy frame: one row per point, labels, ``time``, ``value``.

    ``time`` is in seconds since the epoch, ``value`` a float (``"NaN"`` and ``"+Inf"`` included).
    """
    kind, result = data["resultType"], data["result"]
    rows: list[dict] = []
    if kind in ("scalar", "string"):
        rows.append({"time": float(result[0]), "value": float(result[1]) if kind == "scalar" else result[1]})
    elif kind == "vector":
        for item in result:
            rows.append({**item["metric"], "time": float(item["value"][0]), "value": float(item["value"][1])})
    elif kind == "matrix":
        for item in result:
            for when, value in item.get("values", []):
                rows.append({**item["metric"], "time": float(when), "value": float(value)})
    else:
        raise PromQLError(f"unknown result type {kind!r}")
    if not rows:
        return pd.DataFrame({"time": pd.Series(dtype=float), "value": pd.Series(dtype=float)})
    return _labels_first(pd.DataFrame(rows))


class Prometheus(ManagedServer):
    """A running Prometheus: ``url``, PromQL over its HTTP API into DataFrames, ``stop()``.

    Use it as a context manager so it stops when the block ends::

        with labkit.prometheus.start([server]) as prom:
            prom.query("rate(demo_requests_total[5s])")

    Its config, rules, storage and log share one temp folder, :attr:`workdir`, removed on ``stop()``.
    """

    title = "prometheus"

    def __init__(self, command: list[str], port: int, workdir: Path, config: dict) -> None:
        super().__init__(command, name="prometheus", workdir=workdir)
        self.port = port
        self.config = config
        self.config_path = workdir / "prometheus.yml"

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (the web UI is there too)."""
        return f"http://{self.host}:{self.port}"

    def ready_urls(self) -> list[str]:
        """``/-/ready``."""
        return [f"{self.url}/-/ready"]

    def start_error(self, headline: str) -> PrometheusStartError:
        """A :class:`PrometheusStartError` quoting the error lines and the end of the log."""
        log = self.log().splitlines()
        errors = [ln for ln in log if "level=error" in ln or "err=" in ln]
        parts = [f"{headline}."]
        if errors:  # the reason, wherever it is in the log
            parts += ["Errors in its log:", *("  " + ln for ln in dict.fromkeys(errors))]
        parts += ["Last lines of its log:", *("  " + ln for ln in log[-15:])]
        return PrometheusStartError("\n".join([*parts, f"Command: {' '.join(self.command)}"]))

    def api(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; a refused query raises :class:`PromQLError`."""
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        try:
            body = response.json()
        except ValueError as err:
            raise PromQLError(f"/api/v1/{path} answered HTTP {response.status_code}: {response.text[:200]!r}") from err
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType', 'error')}: {body.get('error', body)} (query: {params})")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> pd.DataFrame:
        """Evaluate ``expr`` at one instant (``at``, epoch seconds; default now): one row per series."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        return result_frame(self.api("query", **params))

    def query_range(self, expr: str, start: float, end: float, step: float = 1.0) -> pd.DataFrame:
        """Evaluate ``expr`` at ``start``, ``start + step``, ... up to ``end``: one row per series and time."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
        return result_frame(self.api("query_range", **params))

    def panel_query(
        self, target: Mapping, start: float, end: float, rate_interval: str = "5s", **values: str
    ) -> pd.DataFrame:
        """A Grafana panel target (``expr``, ``instant``) run here: instant now, as Grafana shows it, or over
        ``[start, end]`` in 1 s steps; ``values`` fill ``$job`` and ``$model`` (see :func:`grafana_expr`)."""
        expr = grafana_expr(target["expr"], rate_interval, **values)
        return self.query(expr) if target.get("instant") else self.query_range(expr, start, end, 1.0)

    def raw_samples(self, selector: str, start: float, end: float) -> pd.DataFrame:
        """The samples Prometheus stored for ``selector`` in ``[start, end]``, shaped like a
        :mod:`labkit.scrape` frame (``time``, ``family``, ``type``, ``sample``, labels, ``value``)."""
        window = math.ceil(end - start)
        frame = self.query(f"{selector}[{window}s]", at=end)
        frame = frame[frame["time"] >= start]
        if frame.empty:
            return frame
        name = frame.pop("__name__")
        labels = [c for c in frame.columns if c not in ("time", "value")]
        frame = frame.assign(family=name, type="untyped", sample=name)
        return frame[["time", "family", "type", "sample", *labels, "value"]].reset_index(drop=True)

    def targets(self) -> pd.DataFrame:
        """One row per scrape target: job, instance, health, last scrape time and error."""
        rows = [
            (t["labels"].get("job"), t["labels"].get("instance"), t["health"], t["lastScrape"], t["lastError"])
            for t in self.api("targets")["activeTargets"]
        ]
        return pd.DataFrame(rows, columns=["job", "instance", "health", "last_scrape", "last_error"])

    def rules(self) -> pd.DataFrame:
        """One row per loaded rule: group, name, type (recording/alerting), health, state, last error."""
        rows = [
            (g["name"], r["name"], r["type"], r["query"], r["health"], r.get("state", ""), r.get("lastError", ""))
            for g in self.api("rules")["groups"]
            for r in g["rules"]
        ]
        return pd.DataFrame(rows, columns=["group", "name", "type", "query", "health", "state", "last_error"])

    def alerts(self) -> pd.DataFrame:
        """Active alerts (pending or firing): alertname, state, since when, value, summary, and their labels."""
        rows = [
            {
                "alertname": a["labels"].get("alertname"),
                "state": a["state"],
                "active_at": pd.Timestamp(a["activeAt"]).timestamp(),
                "value": float(a["value"]),
                "summary": a.get("annotations", {}).get("summary", ""),
                **{k: v for k, v in a["labels"].items() if k != "alertname"},
            }
            for a in self.api("alerts")["alerts"]
        ]
        return pd.DataFrame(rows, columns=None if rows else ["alertname", "state", "active_at", "value", "summary"])

    def wait_for(self, expr: str, timeout: float = 30.0) -> pd.DataFrame:
        """Block until the instant query ``expr`` returns something (e.g. ``up == 1``); return it."""

        def answer() -> tuple[pd.DataFrame] | None:
            frame = self.query(expr)
            return None if frame.empty else (frame,)

        describe = lambda: f"{expr!r} to return something; targets:\n{self.targets()}"  # noqa: E731
        return wait_until(answer, timeout, describe)[0]

    def wait_for_samples(self, selector: str = "up", count: int = 2, timeout: float = 30.0) -> None:
        """Block until every series of ``selector`` has ``count`` scraped samples (2 for a first rate).

        Prometheus 2.42 scrapes a new target only some seconds after it starts (it
        applies target changes every 5 s), so the first samples take about 6 s.
        """

        def enough() -> bool:
            frame = self.query(f"count_over_time({selector}[1h])")
            return not frame.empty and bool((frame["value"] >= count).all())

        wait_until(enough, timeout, lambda: f"{selector!r} to reach {count} samples; targets:\n{self.targets()}")

    @property
    def scrape_interval(self) -> float:
        """The global scrape interval in seconds."""
        return _seconds(self.config["global"]["scrape_interval"])

    @property
    def rules_path(self) -> Path:
        """The rule file labkit writes (``rules=`` of :func:`start`, then :meth:`set_rules`)."""
        return self.workdir / "rules.yml"

    def set_rules(self, rules: Mapping) -> None:
        """Replace the rules in :attr:`rules_path` with ``rules`` (a rule file as a dict) and reload.

        No restart: scraping goes on, and the new rules run from their next evaluation.
        """
        self.rules_path.write_text(yaml.safe_dump(dict(rules), sort_keys=False))
        self.reload()

    def reload(self) -> None:
        """Re-read the config and rule files (``POST /-/reload``), as after editing them in production."""
        response = requests.post(f"{self.url}/-/reload", timeout=30)
        if response.status_code != 200:
            errors = [line for line in self.log().splitlines() if "level=error" in line][-3:]
            detail = "\n".join(["", "From its log:", *errors]) if errors else ""
            raise PrometheusReloadError(f"Prometheus kept its old config: {response.text.strip()}{detail}")

    def describe(self) -> str:
        """URL and scrape interval, for ``repr``."""
        return f"{self.url} scrape every {self.config['global']['scrape_interval']}"


def _seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h|d)", text):
        total += int(number) * units[unit]
    return total


def start(
    targets: Iterable[Any],
    *,
    scrape_interval: float = 1.0,
    evaluation_interval: float | None = None,
    rule_files: Sequence[str | os.PathLike] = (),
    rules: Mapping | None = None,
    job: str = JOB,
    port: int | None = None,
    timeout: float = 30.0,
    extra_args: Sequence[str] = (),
) -> Prometheus:
    """Start a real Prometheus scraping ``targets`` and wait until it is ready.

    Args:
        targets: TritonServer handles, metrics URLs or ``host:port`` strings.
        scrape_interval: seconds between scrapes (production: 15-60 s; here 1 s).
        evaluation_interval: seconds between rule evaluations (default: the scrape interval).
        rule_files: rule files to load, as they are.
        rules: one more rule file given as a dict (``{"groups": [...]}``), written into the temp dir
            (:attr:`Prometheus.rules_path`); :meth:`Prometheus.set_rules` replaces it later.
        job: the ``job`` label of the targets (the shipped rules and dashboards use ``triton``).
        port: fixed port; default a free one on 127.0.0.1.
        timeout: seconds to wait for ``/-/ready``.

    Raises:
        PrometheusNotFoundError: the binary is missing (the message says how to install it).
        PrometheusStartError: it did not start (the message quotes its log).
    """
    binary = find_binary("prometheus")
    targets = list(targets)

    def launch() -> Prometheus:
        workdir = Path(tempfile.mkdtemp(prefix="labkit-prometheus-"))
        own_rules = workdir / "rules.yml"  # always loaded, so set_rules() can fill it later
        own_rules.write_text(yaml.safe_dump(dict(rules if rules is not None else {"groups": []}), sort_keys=False))
        files = [*(Path(p).resolve() for p in rule_files), own_rules]
        config = make_config(
            targets, job=job, scrape_interval=scrape_interval, evaluation_interval=evaluation_interval, rule_files=files
        )
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        chosen = port or free_port()
        command = [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{chosen}",
            "--web.enable-lifecycle",  # POST /-/reload (and /-/quit): loopback only, like the rest
            *extra_args,
        ]
        handle = Prometheus(command, chosen, workdir, config)
        handle.wait_ready(timeout)
        return handle

    return start_with_port_retry(launch, fixed_ports=port is not None)
