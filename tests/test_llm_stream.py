"""llm_stream (notebook 11) on a real tritonserver: exact counts under concurrent streams, bad input and
cancelled streams counted once with the server up, names that pass promtool, and exercise 11 graded."""

from __future__ import annotations

import difflib
import queue
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from labcheck import checks, streaming
from labkit import paths, scrape, triton

from .conftest import require_tool

MODEL = streaming.MODEL
FOLDER = paths.MODEL_REPOSITORY / MODEL
SOLUTION = paths.NOTEBOOKS / "solutions" / "11_ttft.py"
ERROR_TYPES = ("empty_prompt", "max_tokens", "cancelled", "internal")
FAMILIES = {
    "llm_time_to_first_token_seconds": "histogram",
    "llm_inter_token_latency_seconds": "histogram",
    "llm_request_generation_tokens": "histogram",
    "llm_generation_tokens": "counter",  # the parser's family name: the samples are llm_generation_tokens_total
    "llm_requests_running": "gauge",
    "llm_request_success": "counter",
    "llm_request_errors": "counter",
}


def code_of(path) -> str:
    """A model file without its module docstring."""
    text = path.read_text()
    return text[text.index('"""', 3) + 3 :]


# ----------------------------------------------------------------------- files (no server)


def test_config_is_a_light_decoupled_model_named_after_its_folder():
    text = (FOLDER / "config.pbtxt").read_text()
    assert re.search(rf'^name:\s*"{MODEL}"', text, re.MULTILINE)
    assert re.search(r"decoupled:\s*true", text)
    assert re.findall(r"kind:\s*(KIND_\w+)", text) == ["KIND_CPU"] and re.findall(r"count:\s*(\d+)", text) == ["1"]


def test_solution_is_the_reference_model_and_the_exercise_differs_only_in_the_ttft_lines():
    reference = code_of(FOLDER / "1" / "model.py")
    assert code_of(SOLUTION) == reference, "notebooks/solutions/11_ttft.py must be the reference model's code"
    changed = [
        line
        for line in difflib.unified_diff(reference.splitlines(), code_of(streaming.TEMPLATE_11).splitlines(), n=0)
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert changed and len(changed) <= 7, changed
    assert all("ttft" in line or "last_sent" in line or "else:" in line or "if sent" in line for line in changed)


# ----------------------------------------------------------------------- on a real Triton


@pytest.fixture(scope="module")
def llm():
    repo = paths.scratch("test-llm")
    shutil.copytree(FOLDER, repo / MODEL, ignore=shutil.ignore_patterns("__pycache__"))
    # histogram_latencies: Triton's own first-response histogram from 24.11; 2.51.0 accepts it and exports nothing
    with triton.start(repo, models=[MODEL], extra_args=["--metrics-config=histogram_latencies=true"]) as server:
        yield server


def moved(before, after, sample, **labels) -> float:
    return scrape.value(after, sample, **labels) - scrape.value(before, sample, **labels)


def errors_total(frame) -> dict[str, float]:
    return {t: scrape.value(frame, "llm_request_errors_total", error_type=t) for t in ERROR_TYPES}


@pytest.mark.integration
def test_series_exist_from_the_start_and_names_pass_promtool(llm):
    frame = scrape.scrape(llm.metrics_url)
    for family, kind in FAMILIES.items():
        rows = frame[frame["family"] == family]
        assert not rows.empty and set(rows["type"]) == {kind}, family
    assert sorted(scrape.select(frame, "llm_request_errors_total")["error_type"]) == sorted(ERROR_TYPES)
    assert not (frame["family"] == "nv_inference_first_response_histogram_ms").any(), "new on 2.51.0?"
    promtool = require_tool("promtool", "sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus")
    text = scrape.fetch_text(llm.metrics_url)
    ours = "".join(ln + "\n" for ln in text.splitlines() if ln.startswith(("llm_", "# HELP llm_", "# TYPE llm_")))
    result = subprocess.run([promtool, "check", "metrics"], input=ours, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_tokens_are_deterministic(llm):
    first, again, other = streaming.stream(llm, [("a prompt", 12), ("a prompt", 12), ("another prompt", 12)])
    assert first.tokens == again.tokens and len(first.tokens) == 12
    assert other.tokens != first.tokens
    for one in (first, again, other):
        assert one.final_at > one.arrivals[-1] > one.arrivals[0] > one.sent_at


@pytest.mark.integration
def test_counts_are_exact_under_concurrent_streams(llm):
    """4 clients, each with 8 streams open at once on its own gRPC stream: 32 concurrent streams."""
    before = scrape.scrape(llm.metrics_url)
    batches = [[(f"client {c} prompt {i} " * (i + 1), 3 + 4 * i + c) for i in range(8)] for c in range(4)]
    with ThreadPoolExecutor(4) as pool:
        streams = [one for batch in pool.map(lambda b: streaming.stream(llm, b), batches) for one in batch]
    requested = [n for batch in batches for _, n in batch]
    tokens = sum(len(one.tokens) for one in streams)
    assert [len(one.tokens) for one in streams] == requested
    url = llm.metrics_url
    scrape.settled_value(url, "llm_requests_running", 0)
    scrape.settled_value(url, "llm_request_success_total", scrape.value(before, "llm_request_success_total") + 32)
    after = scrape.scrape(url)
    assert moved(before, after, "llm_generation_tokens_total") == tokens == sum(requested)
    assert moved(before, after, "llm_time_to_first_token_seconds_count") == 32
    assert moved(before, after, "llm_request_generation_tokens_count") == 32
    assert moved(before, after, "llm_request_generation_tokens_sum") == tokens
    assert moved(before, after, "llm_inter_token_latency_seconds_count") == tokens - 32
    assert errors_total(after) == errors_total(before)
    # the model's clock runs inside the client's: never more in all than the clients measured
    assert moved(before, after, "llm_time_to_first_token_seconds_sum") <= sum(one.ttft for one in streams)
    assert llm.is_running()


def send_alone(server, prompt, max_tokens):
    """One request on its own stream; the error it ends with (or None) and the tokens it got."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    arrivals: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: arrivals.put((result, error)))
    client.async_stream_infer(
        MODEL, streaming.llm_inputs(prompt, max_tokens), request_id="one", enable_empty_final_response=True
    )
    tokens, error = 0, None
    while True:
        result, error = arrivals.get(timeout=10)
        if error is not None or result.get_response().parameters["triton_final_response"].bool_param:
            break
        tokens += 1
    client.stop_stream()
    client.close()
    return error, tokens


@pytest.mark.integration
@pytest.mark.parametrize(
    ("prompt", "max_tokens", "error_type", "says"),
    [
        ("", 4, "empty_prompt", "PROMPT is empty"),
        ("   ", 4, "empty_prompt", "PROMPT is empty"),
        ("hello", 0, "max_tokens", "MAX_TOKENS must be 1..64, got 0"),
        ("hello", 65, "max_tokens", "MAX_TOKENS must be 1..64, got 65"),
        ("hello", -3, "max_tokens", "MAX_TOKENS must be 1..64, got -3"),
    ],
)
def test_bad_input_gets_a_clear_error_and_moves_its_counter_once(llm, prompt, max_tokens, error_type, says):
    before = scrape.scrape(llm.metrics_url)
    error, tokens = send_alone(llm, prompt, max_tokens)
    assert isinstance(error, InferenceServerException) and says in error.message() and tokens == 0
    expected = {**errors_total(before)}
    expected[error_type] += 1
    scrape.settled_value(llm.metrics_url, "llm_request_errors_total", expected[error_type], error_type=error_type)
    after = scrape.scrape(llm.metrics_url)
    assert errors_total(after) == expected
    assert moved(before, after, "llm_request_success_total") == 0
    assert moved(before, after, "llm_time_to_first_token_seconds_count") == 0
    assert scrape.value(after, "llm_requests_running") == 0
    assert llm.is_running()
    assert send_alone(llm, "still there?", 3) == (None, 3)


@pytest.mark.integration
def test_a_cancelled_stream_is_counted_once_and_the_server_stays_up(llm):
    before = scrape.scrape(llm.metrics_url)
    client = grpcclient.InferenceServerClient(llm.grpc_url)
    arrivals: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: arrivals.put((result, error)))
    client.async_stream_infer(
        MODEL, streaming.llm_inputs("a long answer", 60), request_id="c", enable_empty_final_response=True
    )
    for _ in range(3):  # three tokens in: the request is in the model
        result, error = arrivals.get(timeout=10)
        assert error is None
    client.stop_stream(cancel_requests=True)
    client.close()
    expected = scrape.value(before, "llm_request_errors_total", error_type="cancelled") + 1
    scrape.settled_value(llm.metrics_url, "llm_request_errors_total", expected, error_type="cancelled")
    scrape.settled_value(llm.metrics_url, "llm_requests_running", 0)
    time.sleep(0.3)  # a second count would come within a decode step or two: give it the chance to show
    after = scrape.scrape(llm.metrics_url)
    assert errors_total(after) == {**errors_total(before), "cancelled": expected}
    assert moved(before, after, "llm_request_success_total") == 0
    assert moved(before, after, "llm_request_generation_tokens_count") == 0  # only finished requests
    assert 3 <= moved(before, after, "llm_generation_tokens_total") < 60  # stopped early
    assert moved(before, after, "llm_time_to_first_token_seconds_count") == 1
    assert llm.is_running()
    assert send_alone(llm, "and after a cancel?", 2) == (None, 2)


# ----------------------------------------------------------------------- exercise 11

# Known-wrong answers: the solution with one mistake each (old, new, what the checker says).
LOOP, BRANCH = " " * 16, " " * 20  # the indentation of stream()'s token loop and of the branches in it
WRONG_11 = {
    "milliseconds": (
        "self.record(self.ttft.observe, now - received)",
        "self.record(self.ttft.observe, (now - received) * 1000)",
        "not milliseconds",
    ),
    "every_token": (
        f"if last_sent is None:\n{BRANCH}self.record(self.ttft.observe, now - received)",
        f"self.record(self.ttft.observe, now - received)\n{LOOP}if last_sent is None:\n{BRANCH}pass",
        "(once per token?)",
    ),
    "before_prefill": (
        'time.sleep(PREFILL_BASE_S + PREFILL_PER_WORD_S * len(prompt.split()))  # "prefill"',
        "self.record(self.ttft.observe, time.perf_counter() - received)\n"
        '            time.sleep(PREFILL_BASE_S + PREFILL_PER_WORD_S * len(prompt.split()))  # "prefill"',
        "taken too early",
    ),
    "no_itl_after_the_fix": (
        "self.record(self.itl.observe, now - last_sent)",
        "pass",
        "one inter-token observation per gap",
    ),
}


@pytest.mark.integration
def test_exercise_11_solution_and_not_attempted(tmp_path):
    assert checks.check_11 is streaming.check_11
    feedback = checks.check_11(SOLUTION)
    assert feedback.status == "correct", feedback
    untouched = tmp_path / "model.py"
    untouched.write_text(streaming.TEMPLATE_11.read_text())
    assert checks.check_11(untouched).status == "not attempted"


@pytest.mark.integration
def test_exercise_11_the_untouched_mistake_is_graded_wrong(tmp_path):
    """The exercise's file with a harmless edit: the observation at the stream's end is too late."""
    answer = tmp_path / "model.py"
    answer.write_text(streaming.TEMPLATE_11.read_text() + "\n# looked at it\n")
    feedback = checks.check_11(answer)
    assert feedback.status == "wrong" and "taken too late" in feedback.message, feedback


@pytest.mark.integration
@pytest.mark.parametrize("mistake", sorted(WRONG_11))
def test_exercise_11_wrong_answers(tmp_path, mistake):
    old, new, says = WRONG_11[mistake]
    source = SOLUTION.read_text()
    assert source.count(old) == 1, "the mutation no longer applies to the solution"
    source = source.replace(old, new)
    if mistake == "before_prefill":  # and no observation at the first token any more
        first = "self.record(self.ttft.observe, now - received)  # the first token has left the model"
        assert first in source
        source = source.replace(first, "pass")
    answer = tmp_path / "model.py"
    answer.write_text(source)
    feedback = checks.check_11(answer)
    assert feedback.status == "wrong" and says in feedback.message, feedback
