"""model_repository/digits_classifier: a real ONNX model served with onnxruntime, its quality and drift metrics.

- unit: ``scripts/train_digits.py`` is reproducible (run again into a temp folder, its model predicts what the
  committed ``digits.onnx`` predicts on the held-out set; bytes may differ across library versions, so
  predictions are compared: labels exactly, probabilities within 1e-5), its split is fixed and stratified;
- integration (a real Triton 2.51.0): the served LABELS and PROBABILITIES equal the offline onnxruntime model's
  on the whole held-out set (and the labels scikit-learn's); every bad input gets an error response and moves
  exactly its reason counter by 1 and Triton's ``nv_inference_request_success`` (not ``_failure``: an error
  response from a Python model is a success to Triton 2.51.0, server issue #7713); 1-D and 3-D tensors are
  refused by Triton itself, before the model: no counter moves at all; exact counts under concurrency; the
  training class shares; drifted inputs raise the drift share and lower the confidence; ``promtool check
  metrics`` flags only the aggregated histograms' counter families; the ``metrics: off`` copy (``make bench``)
  exports nothing and answers the same; unloading sends the last interval (``finalize``).

The model sends its sums to Triton every second (``flush_s``): every count is read again, bounded, until it
settles (``labkit.scrape.settle``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from labkit import paths, scrape, triton
from scripts import train_digits
from tests.conftest import require_tool

MODEL = "digits_classifier"
FOLDER = paths.MODEL_REPOSITORY / MODEL / "1"
STATS = json.loads((FOLDER / "training_stats.json").read_text())
PROMTOOL_HINT = "sudo apt-get install prometheus (Debian/Ubuntu) or brew install prometheus"
REASONS = ("wrong_shape", "empty_batch", "not_finite", "out_of_range")
HISTOGRAMS = ("digits_phase_duration_seconds", "digits_prediction_confidence", "digits_input_drift_score")
SETTLE_S = 15  # the model flushes every second; a busy machine may delay a flush


def offline_session(path=FOLDER / "digits.onnx") -> ort.InferenceSession:
    """The ONNX model in this process, with the session options model.py uses (one thread)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def drift_scores(images: np.ndarray) -> np.ndarray:
    """What the model observes per image in digits_input_drift_score: computed here from training_stats.json."""
    means, stds = np.asarray(STATS["feature_means"]), np.asarray(STATS["feature_stds"])
    return train_digits.drift_distance(images, means, stds) / STATS["drift_distance_p99"]


# ------------------------------------------------------------------ unit: the training script and its split


def test_training_script_reproduces_the_committed_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "scripts/train_digits.py", "--out", str(tmp_path)],
        cwd=paths.ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    images, _ = train_digits.load_heldout()
    committed, fresh = offline_session(), offline_session(tmp_path / "digits.onnx")
    labels, probabilities = committed.run(None, {"images": images})
    fresh_labels, fresh_probabilities = fresh.run(None, {"images": images})
    np.testing.assert_array_equal(fresh_labels, labels)
    np.testing.assert_allclose(fresh_probabilities, probabilities, atol=1e-5)
    stats = json.loads((tmp_path / "training_stats.json").read_text())
    assert stats["class_shares"] == STATS["class_shares"] and stats["pixel_range"] == STATS["pixel_range"]
    np.testing.assert_allclose(stats["feature_means"], STATS["feature_means"], atol=1e-6)
    np.testing.assert_allclose(stats["feature_stds"], STATS["feature_stds"], atol=1e-6)
    assert stats["drift_distance_p99"] == pytest.approx(STATS["drift_distance_p99"], abs=1e-6)
    assert (FOLDER / "digits.onnx").stat().st_size < 10_000  # a few KB, committed


def test_split_is_fixed_and_stratified():
    train_images, heldout_images, train_labels, heldout_labels = train_digits.load_split()
    again = train_digits.load_heldout()
    np.testing.assert_array_equal(again[0], heldout_images)
    np.testing.assert_array_equal(again[1], heldout_labels)
    assert heldout_images.dtype == np.float32 and heldout_images.shape == (STATS["heldout_images"], 64)
    assert len(train_labels) == STATS["train_images"]
    # stratified: each class's share of the held-out set is its share of the training set, to one image
    train_share = np.bincount(train_labels, minlength=10) / len(train_labels)
    heldout_share = np.bincount(heldout_labels, minlength=10) / len(heldout_labels)
    assert np.abs(train_share - heldout_share).max() <= 1 / len(heldout_labels)
    assert [STATS["class_shares"][str(c)] for c in range(10)] == pytest.approx(train_share, abs=1e-6)
    assert heldout_images.min() >= STATS["pixel_range"][0] and heldout_images.max() <= STATS["pixel_range"][1]
    # the drift baseline: about 1 % of the training images score above 1 (its 99th percentile), by construction
    train_scores = drift_scores(train_images)
    assert (train_scores > 1).mean() == pytest.approx(0.01, abs=1 / len(train_scores))


# ------------------------------------------------------------------ integration: the served model


@pytest.fixture(scope="module")
def server():
    with triton.start(paths.MODEL_REPOSITORY, models=[MODEL]) as started:
        yield started


@pytest.fixture
def client(server):
    made = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=60)
    yield made
    made.close()


def infer(client, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LABELS and PROBABILITIES for ``images`` (any shape: the server decides what it accepts)."""
    tensor = httpclient.InferInput("IMAGES", list(images.shape), "FP32")
    tensor.set_data_from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    result = client.infer(MODEL, inputs=[tensor])
    return result.as_numpy("LABELS"), result.as_numpy("PROBABILITIES")


def model_counts(server) -> dict[str, float]:
    """Every counter sample of the model's own families, keyed by sample name and labels (model/version left out)."""
    frame = scrape.scrape(server.metrics_url)
    ours = frame[frame["sample"].str.startswith("digits_") & (frame["type"] == "counter")]
    label_columns = [c for c in ours.columns if c not in ("time", "family", "type", "sample", "value", "model")]
    label_columns = [c for c in label_columns if c != "version"]
    counts = {}
    for _, row in ours.iterrows():
        labels = ",".join(f"{c}={row[c]}" for c in label_columns if isinstance(row[c], str) and row[c])
        counts[f"{row['sample']}{{{labels}}}"] = float(row["value"])
    counts["nv_inference_request_failure"] = scrape.value(frame, "nv_inference_request_failure", model=MODEL)
    counts["nv_inference_request_success"] = scrape.value(frame, "nv_inference_request_success", model=MODEL)
    return counts


def quiet_counts(server) -> dict[str, float]:
    """The counts once no flush changes them any more: a test's baseline, after earlier tests' traffic arrived."""
    last = model_counts(server)
    deadline = time.monotonic() + SETTLE_S
    while True:
        time.sleep(1.3)  # one flush interval and a bit
        now = model_counts(server)
        if now == last:
            return now
        if time.monotonic() > deadline:
            raise scrape.CountNotSettledError(f"the model's counts still moved after {SETTLE_S} s: {moved(last, now)}")
        last = now


def moved(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The counts that changed, by how much."""
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after if after.get(k, 0.0) != before.get(k, 0.0)}


def settle_moves(server, before: dict[str, float], expected: dict[str, float]) -> dict[str, float]:
    """Read until exactly ``expected`` moved since ``before``; then once more a flush later: nothing else arrived."""
    scrape.settle(lambda: moved(before, model_counts(server)), expected, timeout=SETTLE_S, what="counts that moved")
    time.sleep(1.3)  # one flush interval and a bit: a late part of the same flush would show now
    final = model_counts(server)
    assert moved(before, final) == expected
    return final


@pytest.mark.integration
def test_served_predictions_equal_the_offline_model_on_the_whole_heldout_set(server, client):
    images, truth = train_digits.load_heldout()
    session = offline_session()
    estimator_labels = train_digits.train().predict(images)
    served_labels = []
    for chunk in np.array_split(np.arange(len(images)), 9):  # several batch sizes, 50 images each
        labels, probabilities = infer(client, images[chunk])
        offline_labels, offline_probabilities = session.run(None, {"images": images[chunk]})
        np.testing.assert_array_equal(labels, offline_labels)
        np.testing.assert_allclose(probabilities, offline_probabilities, rtol=1e-6, atol=1e-7)
        assert labels.dtype == np.int64 and probabilities.dtype == np.float32 and probabilities.shape == (50, 10)
        served_labels.append(labels)
    served = np.concatenate(served_labels)
    np.testing.assert_array_equal(served, estimator_labels)  # and the estimator that was exported
    assert (served == truth).mean() == pytest.approx(STATS["heldout_accuracy"], abs=1e-4)


# (what is sent, the reason counter it must move or None when Triton refuses it first, words of the error)
BAD_INPUTS = {
    "one_image_1d": (lambda x: x[0], None, "unexpected shape for input 'IMAGES'"),
    "images_3d": (lambda x: x[:2].reshape(2, 8, 8), None, "unexpected shape for input 'IMAGES'"),
    "wrong_column_count": (lambda x: x[:3, :60], "wrong_shape", "must have shape [n, 64]"),
    "empty_batch": (lambda x: x[:0], "empty_batch", "empty batch"),
    "nan": (lambda x: np.where(np.arange(64) == 5, np.nan, x[:2]), "not_finite", "NaN or infinite"),
    "inf": (lambda x: np.where(np.arange(64) == 5, np.inf, x[:2]), "not_finite", "NaN or infinite"),
    "above_range": (lambda x: x[:2] + 17, "out_of_range", "training pixel range 0..16"),
    "below_range": (lambda x: x[:2] - 1, "out_of_range", "training pixel range 0..16"),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_an_error_and_moves_exactly_its_reason(server, client, case):
    make, reason, words = BAD_INPUTS[case]
    images, _ = train_digits.load_heldout()
    before = quiet_counts(server)
    with pytest.raises(InferenceServerException) as raised:
        infer(client, make(images))
    assert raised.value.status() == "400", raised.value  # INVALID_ARG, the client's mistake
    assert words in raised.value.message()
    if reason is not None:
        # the model's own check moves its reason counter. Triton 2.51.0 counts a request whose error response
        # came from a Python model as a *success* (server issue #7713): only the model's counter tells
        assert raised.value.message().startswith(f"{MODEL}: ")
        expected = {f"digits_input_errors_total{{reason={reason}}}": 1.0, "nv_inference_request_success": 1.0}
    else:
        # Triton checks the rank against config.pbtxt's dims [-1, -1] before the model runs: the model never
        # sees the request, and Triton does not count it in nv_inference_request_failure either
        expected = {}
    settle_moves(server, before, expected)
    labels, _ = infer(client, images[:3])  # the server still answers
    assert labels.shape == (3,)


@pytest.mark.integration
def test_exact_counts_under_concurrency(server):
    """4 clients x 25 requests of 1-16 held-out images each: every image and request counted exactly once."""
    images, _ = train_digits.load_heldout()
    session = offline_session()
    rng = np.random.default_rng(7)
    plans = [[rng.choice(len(images), size=rng.integers(1, 17), replace=False) for _ in range(25)] for _ in range(4)]
    sent = [np.concatenate(plan) for plan in plans]
    all_sent = np.concatenate(sent)
    failures: list[str] = []
    before = quiet_counts(server)

    def client_thread(plan) -> None:
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"), network_timeout=60)
        try:
            for chunk in plan:
                infer(client, images[chunk])
        except Exception as err:  # reported below: a failed request must fail the test, not vanish in a thread
            failures.append(repr(err))
        finally:
            client.close()

    threads = [threading.Thread(target=client_thread, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    requests, count = sum(len(plan) for plan in plans), float(len(all_sent))
    offline = [session.run(None, {"images": images[chunk]}) for plan in plans for chunk in plan]
    labels = np.concatenate([o[0] for o in offline])
    confidence = np.concatenate([o[1].max(axis=1) for o in offline])
    scores = drift_scores(images[all_sent])
    expected = {f"digits_predictions_total{{class={c}}}": float(n) for c, n in enumerate(np.bincount(labels)) if n}
    expected["nv_inference_request_success"] = float(requests)
    for name in ("digits_prediction_confidence", "digits_input_drift_score"):
        expected[f"{name}_count{{}}"] = count
        expected[f"{name}_bucket{{le=+Inf}}"] = count
    expected["digits_prediction_confidence_bucket{le=0.9}"] = float((confidence <= 0.9).sum())
    expected["digits_input_drift_score_bucket{le=1}"] = float((scores <= 1).sum())
    for phase in ("validate", "inference", "postprocess"):
        expected[f"digits_phase_duration_seconds_count{{phase={phase}}}"] = float(requests)

    def checked() -> dict[str, float]:
        changes = moved(before, model_counts(server))
        return {key: changes.get(key, 0.0) for key in expected}

    scrape.settle(checked, expected, timeout=SETTLE_S, what="counts under concurrency")
    changes = moved(before, model_counts(server))
    assert not any(key.startswith("digits_input_errors_total") for key in changes)
    assert changes["digits_prediction_confidence_sum{}"] == pytest.approx(confidence.sum(), rel=1e-6)
    assert changes["digits_input_drift_score_sum{}"] == pytest.approx(scores.sum(), rel=1e-9)


@pytest.mark.integration
def test_training_class_shares_are_exported_and_sum_to_one(server):
    frame = scrape.scrape(server.metrics_url)
    shares = scrape.select(frame, "digits_training_class_share", model=MODEL)
    assert set(shares["type"]) == {"gauge"}
    exported = dict(zip(shares["class"], shares["value"], strict=True))
    assert sorted(exported) == [str(c) for c in range(10)]
    assert sum(exported.values()) == pytest.approx(1.0, abs=1e-5)
    assert exported == pytest.approx({c: v for c, v in STATS["class_shares"].items()})


def shifted(images: np.ndarray) -> np.ndarray:
    """Each image moved two pixels to the right (zeros come in on the left)."""
    grid = images.reshape(-1, 8, 8)
    out = np.zeros_like(grid)
    out[:, :, 2:] = grid[:, :, :-2]
    return out.reshape(-1, 64)


def rotated(images: np.ndarray) -> np.ndarray:
    """Each image rotated by 30 degrees about its centre (bilinear), kept in the pixel range."""
    from scipy import ndimage

    turned = ndimage.rotate(images.reshape(-1, 8, 8), 30, axes=(1, 2), reshape=False, order=1)
    return np.clip(turned, 0, 16).reshape(-1, 64).astype(np.float32)


def noisy(images: np.ndarray) -> np.ndarray:
    """Gaussian noise (4 pixel units) added, clipped to the pixel range."""
    rng = np.random.default_rng(3)
    return np.clip(images + rng.normal(0, 4, images.shape), 0, 16).astype(np.float32)


def drift_count(server, before: dict[str, float]) -> float:
    """Images counted in digits_input_drift_score since ``before``."""
    return moved(before, model_counts(server)).get("digits_input_drift_score_count{}", 0.0)


@pytest.mark.integration
def test_drifted_inputs_raise_the_drift_share_and_lower_the_confidence(server, client):
    images, _ = train_digits.load_heldout()
    measured = {}
    for name, data in (
        ("heldout", images),
        ("noise", noisy(images)),
        ("shift", shifted(images)),
        ("rotation", rotated(images)),
    ):
        before = quiet_counts(server)
        infer(client, data)
        scrape.settle(lambda b=before: drift_count(server, b), float(len(data)), timeout=SETTLE_S)
        changes = moved(before, model_counts(server))
        n = changes["digits_prediction_confidence_count{}"]
        assert n == len(data)  # flushed together with the drift histogram
        measured[name] = {
            "drift_share": 1 - changes.get("digits_input_drift_score_bucket{le=1}", 0.0) / n,
            "confidence": changes["digits_prediction_confidence_sum{}"] / n,
            "mix": np.array([changes.get(f"digits_predictions_total{{class={c}}}", 0.0) for c in range(10)]) / n,
        }
    n = len(images)
    base = measured["heldout"]
    # in distribution: the share above the training p99 is what the training script measured on the same images
    assert base["drift_share"] == pytest.approx(STATS["heldout_share_above_p99"], abs=1 / n)
    # margins from the data: three binomial standard errors of the held-out share (at least one image's worth),
    # and three standard errors of the held-out mean confidence
    p = max(base["drift_share"], 1 / n)
    share_margin = 3 * np.sqrt(p * (1 - p) / n)
    _, probabilities = offline_session().run(None, {"images": images})
    confidence_margin = 3 * probabilities.max(axis=1).std() / np.sqrt(n)
    training_mix = np.array([STATS["class_shares"][str(c)] for c in range(10)])
    base_distance = 0.5 * np.abs(base["mix"] - training_mix).sum()  # total variation distance to the training mix
    for name in ("noise", "shift", "rotation"):
        drifted = measured[name]
        assert drifted["drift_share"] > base["drift_share"] + share_margin, (name, drifted, base)
        assert drifted["confidence"] < base["confidence"] - confidence_margin, (name, drifted, base)
        assert 0.5 * np.abs(drifted["mix"] - training_mix).sum() > base_distance, (name, drifted, base)


@pytest.mark.integration
def test_promtool_flags_only_the_aggregated_histograms(server, client):
    promtool = require_tool("promtool", PROMTOOL_HINT)
    images, _ = train_digits.load_heldout()
    infer(client, images[:10])
    text = scrape.fetch_text(server.metrics_url)
    ours = "".join(
        line + "\n" for line in text.splitlines() if line.startswith(("digits_", "# HELP digits_", "# TYPE digits_"))
    )
    for name in HISTOGRAMS:
        assert f"# TYPE {name}_bucket counter" in ours  # counted in the model, written as counters
    done = subprocess.run([promtool, "check", "metrics"], input=ours, capture_output=True, text=True)
    complaints = set((done.stdout + done.stderr).strip().splitlines())
    expected = set()
    for name in HISTOGRAMS:
        expected |= {
            f'{name}_bucket counter metrics should have "_total" suffix',
            f'{name}_bucket non-histogram metrics should not have "_bucket" suffix',
            f'{name}_bucket non-histogram metrics should not have "le" label',
            f'{name}_sum counter metrics should have "_total" suffix',
            f'{name}_sum non-histogram and non-summary metrics should not have "_sum" suffix',
            f'{name}_count counter metrics should have "_total" suffix',
            f'{name}_count non-histogram and non-summary metrics should not have "_count" suffix',
        }
    assert done.returncode != 0 and complaints == expected
    rest = "".join(line + "\n" for line in ours.splitlines() if not any(name in line for name in HISTOGRAMS))
    assert "digits_predictions_total" in rest and "digits_training_class_share" in rest
    assert subprocess.run([promtool, "check", "metrics"], input=rest, capture_output=True, text=True).returncode == 0


@pytest.mark.integration
def test_metrics_off_serves_the_same_outputs_and_finalize_sends_the_last_interval(tmp_path):
    """The bench's two copies: ``off`` exports none of the families and answers the same; ``on`` with a flush
    interval longer than the test sends nothing until it is unloaded, then every image (``finalize``)."""
    from bench import run as bench

    off, on = bench.add_digits(tmp_path, flush_s=1000)
    images, _ = train_digits.load_heldout()
    with triton.start(tmp_path, models=[off, on]) as started:
        client = httpclient.InferenceServerClient(started.http_url.removeprefix("http://"), network_timeout=60)
        try:
            outputs = {}
            for name in (off, on):
                tensor = httpclient.InferInput("IMAGES", list(images.shape), "FP32")
                tensor.set_data_from_numpy(images)
                result = client.infer(name, inputs=[tensor])
                outputs[name] = (result.as_numpy("LABELS"), result.as_numpy("PROBABILITIES"))
            np.testing.assert_array_equal(outputs[off][0], outputs[on][0])
            np.testing.assert_array_equal(outputs[off][1], outputs[on][1])
            time.sleep(1.5)
            frame = scrape.scrape(started.metrics_url)
            assert scrape.select(frame, "digits_predictions_total", model=off).empty  # off: no family at all
            # on: the training shares are set at once, the counts wait for a flush that is 1000 s away
            assert len(scrape.select(frame, "digits_training_class_share", model=on)) == 10
            assert scrape.value(frame, "digits_input_drift_score_count", model=on) == 0
            client.unload_model(on)  # runs finalize: the last interval is pushed and sent
        finally:
            client.close()
        n = float(len(images))
        scrape.settled_value(started.metrics_url, "digits_input_drift_score_count", n, timeout=SETTLE_S, model=on)
        frame = scrape.scrape(started.metrics_url)
        assert scrape.value(frame, "digits_prediction_confidence_count", model=on) == n
        assert scrape.value(frame, "digits_predictions_total", model=on) == n
        assert scrape.value(frame, "digits_phase_duration_seconds_count", model=on, phase="inference") == 1
