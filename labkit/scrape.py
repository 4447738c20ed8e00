"""Read Triton's ``/metrics`` page into a tidy pandas DataFrame.

One row per sample, with the columns ``time`` (seconds since the epoch, when it
was scraped), ``family``, ``type``, ``sample`` (the sample's own name, e.g.
``demo_request_duration_seconds_bucket``), one column per label, and ``value``.

Two traps of Prometheus' text format, handled here:

- ``prometheus_client``'s parser turns counters into their OpenMetrics shape:
  it strips ``_total`` from the *family* name and *adds* ``_total`` to every
  sample name that lacks it (Triton's ``nv_inference_request_success`` comes
  out as ``nv_inference_request_success_total``). Here ``sample`` is put back
  to the name exactly as ``/metrics`` (and PromQL) spells it; ``family`` keeps
  the parser's name without ``_total``.
- A histogram's ``le`` label is a string (``"0.005"``, ``"+Inf"``); it stays a
  string here and :func:`labkit.promql.histogram_quantile` converts it.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pandas as pd
import requests
from prometheus_client.parser import text_string_to_metric_families

from labkit.process import wait_until

BASE_COLUMNS = ["time", "family", "type", "sample"]


T = TypeVar("T")


class ScrapeError(RuntimeError):
    """The metrics endpoint could not be read or parsed; the message names the URL."""


class CountNotSettledError(AssertionError):
    """An exact count never reached the expected value within the bounded re-read."""


def parse(text: str, when: float | None = None) -> pd.DataFrame:
    """Parse Prometheus text exposition into one row per sample."""
    when = time.time() if when is None else when
    rows = []
    for family in text_string_to_metric_families(text):
        wire_total = family.type == "counter" and _spelled_with_total(text, family.name)
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and not wire_total and name.endswith("_total"):
                name = name[: -len("_total")]  # undo the parser's renaming
            rows.append(
                {
                    "time": when,
                    "family": family.name,
                    "type": family.type,
                    "sample": name,
                    **sample.labels,
                    "value": float(sample.value),
                }
            )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*BASE_COLUMNS, "value"])
    labels = sorted(c for c in frame.columns if c not in BASE_COLUMNS and c != "value")
    return frame[[*BASE_COLUMNS, *labels, "value"]]


def _spelled_with_total(text: str, family: str) -> bool:
    """Does the exposition name this counter's samples ``<family>_total``?"""
    return re.search(rf"^{re.escape(family)}_total[{{\s]", text, re.MULTILINE) is not None


def fetch_text(url: str, timeout: float = 5.0) -> str:
    """GET the metrics page; raise :class:`ScrapeError` naming ``url`` on any failure."""
    try:
        response = requests.get(url, timeout=timeout)
    except requests.Timeout as err:
        raise ScrapeError(f"{url} did not answer within {timeout} s") from err
    except requests.RequestException as err:
        raise ScrapeError(f"could not reach {url}: {err.__class__.__name__}: {err}") from err
    if response.status_code != 200:
        raise ScrapeError(f"{url} answered HTTP {response.status_code}: {response.text[:200]!r}")
    return response.text


def scrape(url: str, timeout: float = 5.0) -> pd.DataFrame:
    """Scrape ``url`` once and return the tidy DataFrame."""
    when = time.time()
    text = fetch_text(url, timeout)
    try:
        return parse(text, when)
    except Exception as err:  # the parser raises bare ValueErrors on garbage
        raise ScrapeError(f"{url} did not return Prometheus text format: {err}") from err


def select(frame: pd.DataFrame, sample: str | None = None, family: str | None = None, **labels: str) -> pd.DataFrame:
    """Rows of one sample name (or family) whose labels equal the given values."""
    mask = pd.Series(True, index=frame.index)
    if sample is not None:
        mask &= frame["sample"] == sample
    if family is not None:
        mask &= frame["family"] == family
    for key, value in labels.items():
        if key not in frame.columns:
            return frame.iloc[0:0]
        mask &= frame[key] == value
    return frame[mask]


def value(frame: pd.DataFrame, sample: str, **labels: str) -> float:
    """Sum of the samples named ``sample`` whose labels match (0.0 when no label set matches).

    Raises ``KeyError`` when no sample of that name is in the frame at all: a
    misspelled name should not read as a quiet zero.
    """
    if not (frame["sample"] == sample).any():
        close = difflib.get_close_matches(sample, frame["sample"].unique().tolist(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"no sample named {sample!r} in this scrape{hint}")
    return float(select(frame, sample, **labels)["value"].sum())


def settle(read: Callable[[], T], expected: T, *, timeout: float = 5.0, interval: float = 0.05, what: str = "") -> T:
    """Call ``read()`` again (bounded) until it returns ``expected``; return that reading.

    Triton moves its own ``nv_*`` counters just *after* the response leaves, so a
    scrape made right after the last answer can be a request short. Every exact count
    in the course is read through this: it waits at most ``timeout`` seconds, and then
    raises :class:`CountNotSettledError` naming what was expected and what was last read.
    """
    last: list[T] = []

    def arrived() -> bool:
        last[:] = [read()]
        return last[0] == expected

    label = what or getattr(read, "__name__", "the reading")
    try:
        wait_until(arrived, timeout, f"{label} to equal {expected!r}", interval=interval)
    except TimeoutError:
        raise CountNotSettledError(
            f"{label}: expected {expected!r}, still {last[0]!r} after re-reading for {timeout:g} s"
        ) from None
    return last[0]


def settled_value(url: str, sample: str, expected: float, *, timeout: float = 5.0, **labels: str) -> float:
    """The value of ``sample`` (labels summed) on ``url`` once it equals ``expected`` (see :func:`settle`)."""
    shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return settle(
        lambda: value(scrape(url), sample, **labels), float(expected), timeout=timeout, what=f"{sample}{{{shown}}}"
    )


class Sampler:
    """Scrape a URL every ``interval`` seconds in a background thread.

    Use as a context manager; ``frame()`` returns every sample collected so far::

        with Sampler(server.metrics_url, interval=0.5) as sampler:
            run_traffic()
        df = sampler.frame()

    Scrape failures are kept in ``errors`` (time, message) rather than stopping
    the thread, so a server restart shows up as a gap, not a crash.
    """

    def __init__(self, url: str, interval: float = 1.0, timeout: float = 5.0, keep: str | None = None) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.keep = keep
        self.errors: list[tuple[float, str]] = []
        self._frames: list[pd.DataFrame] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def scrape_once(self) -> None:
        """Take one sample now (also used at start and stop, so edges are covered)."""
        try:
            frame = scrape(self.url, self.timeout)
        except ScrapeError as err:
            self.errors.append((time.time(), str(err)))
            return
        if self.keep:
            frame = frame[frame["sample"].str.startswith(self.keep) | frame["family"].str.startswith(self.keep)]
        with self._lock:
            self._frames.append(frame)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.scrape_once()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> "Sampler":
        """Start sampling in the background."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="labkit-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop sampling, take a final sample, and return everything collected."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            self.scrape_once()
        return self.frame()

    def frame(self) -> pd.DataFrame:
        """All samples so far, in one DataFrame."""
        with self._lock:
            frames = [f for f in self._frames if not f.empty]
        if not frames:
            return pd.DataFrame(columns=[*BASE_COLUMNS, "value"])
        return pd.concat(frames, ignore_index=True)

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
