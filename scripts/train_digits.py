"""Train the digits classifier of ``model_repository/digits_classifier`` and export it to ONNX.

    .venv/bin/python scripts/train_digits.py            # rewrites model_repository/digits_classifier/1/
    .venv/bin/python scripts/train_digits.py --out DIR  # writes digits.onnx and training_stats.json to DIR

The data is scikit-learn's bundled ``load_digits`` (1,797 images of 8x8 pixels, values 0..16; it ships
inside the scikit-learn wheel, nothing is downloaded). The split is fixed (:func:`load_split`: stratified,
``random_state=0``), so the held-out images are the same on every machine; the notebook and the tests
use them. The estimator is a ``StandardScaler`` + ``LogisticRegression`` pipeline:

- its ONNX file is a few KB (a 64 x 10 weight matrix) and runs in microseconds per image on a CPU;
- ``predict_proba`` is a softmax over 10 classes, so the top-class probability is a confidence score
  worth a histogram (a tree ensemble's vote shares are coarse steps);
- lbfgs on a fixed split is deterministic, and the conversion is a standard one in skl2onnx.

It reaches about 97 % accuracy on the held-out set. ``training_stats.json`` holds what the served model
compares live traffic with: per-feature means and standard deviations, the pixel range, the training
set's 99th percentile of the drift distance (:func:`drift_distance`) and the training class shares.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL_VERSION_DIR = ROOT / "model_repository" / "digits_classifier" / "1"
ONNX_FILE = "digits.onnx"
STATS_FILE = "training_stats.json"
TEST_SIZE = 0.25
RANDOM_STATE = 0
PIXEL_RANGE = (0.0, 16.0)
#: Floor of a feature's standard deviation in the drift distance, in pixel units: pixels that are
#: (almost) always 0 in training would otherwise turn the least noise into a huge z-score.
STD_FLOOR = 1.0
DRIFT_QUANTILE = 0.99
TARGET_OPSET = {"": 15, "ai.onnx.ml": 3}  # loads in onnxruntime 1.23 (Python 3.10) and 1.32 alike


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_images, heldout_images, train_labels, heldout_labels)``: images float32 (n, 64), labels int64.

    Stratified 75/25 split of ``sklearn.datasets.load_digits`` with ``random_state=0``: the same on every run.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.data.astype(np.float32)
    labels = digits.target.astype(np.int64)
    return tuple(train_test_split(images, labels, test_size=TEST_SIZE, random_state=RANDOM_STATE, stratify=labels))


def load_heldout() -> tuple[np.ndarray, np.ndarray]:
    """The held-out images (float32, n x 64, values 0..16) and their labels (int64): never seen in training."""
    _, images, _, labels = load_split()
    return images, labels


def drift_distance(images: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """Per image: the root mean square of its per-feature z-scores against the training data.

    ``stds`` are floored at :data:`STD_FLOOR` by the caller. 0 is the average training image; the served
    model divides this by the training set's 99th percentile, so a score above 1 is "less typical than
    99 % of the training images".
    """
    z = (np.asarray(images, dtype=np.float64) - means) / stds
    return np.sqrt(np.mean(z * z, axis=1))


def train():
    """The fitted pipeline (StandardScaler + LogisticRegression) on the training part of :func:`load_split`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_images, _, train_labels, _ = load_split()
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(train_images, train_labels)


def to_onnx(estimator) -> bytes:
    """The estimator as ONNX: input ``images`` float (n, 64); outputs ``label`` (n,), ``probabilities`` (n, 10)."""
    from skl2onnx import to_onnx as convert
    from skl2onnx.common.data_types import FloatTensorType

    onnx_model = convert(
        estimator,
        initial_types=[("images", FloatTensorType([None, 64]))],
        target_opset=TARGET_OPSET,
        options={id(estimator): {"zipmap": False}},  # a (n, 10) tensor, not a list of dicts
    )
    return onnx_model.SerializeToString()


def training_stats(estimator) -> dict:
    """What the served model needs besides the ONNX file: means, stds, range, drift p99, class shares."""
    import sklearn

    train_images, heldout_images, train_labels, heldout_labels = load_split()
    means = train_images.astype(np.float64).mean(axis=0)
    stds = np.maximum(train_images.astype(np.float64).std(axis=0), STD_FLOOR)
    distances = drift_distance(train_images, means, stds)
    p99 = float(np.quantile(distances, DRIFT_QUANTILE))
    counts = np.bincount(train_labels, minlength=10)
    heldout_scores = drift_distance(heldout_images, means, stds) / p99
    return {
        "dataset": "sklearn.datasets.load_digits (8x8 images, 64 features, classes 0-9)",
        "split": {"test_size": TEST_SIZE, "random_state": RANDOM_STATE, "stratify": True},
        "estimator": "StandardScaler + LogisticRegression(max_iter=2000)",
        "scikit_learn_version": sklearn.__version__,
        "train_images": int(len(train_labels)),
        "heldout_images": int(len(heldout_labels)),
        "heldout_accuracy": round(float((estimator.predict(heldout_images) == heldout_labels).mean()), 4),
        "pixel_range": list(PIXEL_RANGE),
        "feature_means": [round(float(v), 6) for v in means],
        "feature_stds": [round(float(v), 6) for v in stds],
        "std_floor": STD_FLOOR,
        "drift_quantile": DRIFT_QUANTILE,
        "drift_distance_p99": round(p99, 6),
        "heldout_share_above_p99": round(float((heldout_scores > 1.0).mean()), 4),
        "class_shares": {str(c): round(float(n / counts.sum()), 6) for c, n in enumerate(counts)},
    }


def write(out: Path = MODEL_VERSION_DIR) -> tuple[Path, Path]:
    """Train, export and write ``digits.onnx`` and ``training_stats.json`` into ``out``; return both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    estimator = train()
    onnx_path, stats_path = out / ONNX_FILE, out / STATS_FILE
    onnx_path.write_bytes(to_onnx(estimator))
    stats_path.write_text(json.dumps(training_stats(estimator), indent=1) + "\n")
    return onnx_path, stats_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=MODEL_VERSION_DIR, help="folder for the two files")
    args = parser.parse_args(argv)
    for path in write(args.out):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
