"""Build small Triton model repositories from a ``model.py`` and a ``config.pbtxt``.

A model repository is a folder with one sub-folder per model::

    <repository>/<model name>/config.pbtxt
    <repository>/<model name>/1/model.py        # version 1
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from labkit.paths import HELPER, MODEL_REPOSITORY

REFERENCE_CONFIG = MODEL_REPOSITORY / "metrics_demo" / "config.pbtxt"


def add_model(
    repository: str | Path,
    name: str,
    model_py: str | Path,
    config: str | Path = REFERENCE_CONFIG,
    version: int = 1,
) -> Path:
    """Copy ``model_py`` and ``config`` into ``repository/name`` (the config's ``name:`` is rewritten).

    Returns the model's folder.
    """
    folder = Path(repository) / name
    (folder / str(version)).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_py, folder / str(version) / "model.py")
    text = Path(config).read_text()
    text = re.sub(r'^name:\s*"[^"]*"', f'name: "{name}"', text, flags=re.MULTILINE)
    (folder / "config.pbtxt").write_text(text)
    return folder


def copy_reference(repository: str | Path, name: str = "metrics_demo") -> Path:
    """Copy a reference model of ``model_repository/`` into ``repository``.

    A model that imports the drop-in helper gets a copy of it next to its ``model.py``
    (:func:`add_helper`): in place it finds ``dropin/`` beside the repository, a copy would not.
    """
    dest = Path(repository) / name
    shutil.copytree(MODEL_REPOSITORY / name, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for model_py in dest.glob("*/model.py"):
        if re.search(r"^\s*import triton_metrics\b", model_py.read_text(), re.MULTILINE):
            add_helper(dest, version=int(model_py.parent.name))
    return dest


def add_helper(model_folder: str | Path, version: int = 1) -> Path:
    """Copy the drop-in helper ``dropin/triton_metrics.py`` next to the model's ``model.py``; return the copy.

    The tree keeps one copy of the helper; a model gets its own when its repository is built,
    which is the layout of a real model (``<model>/<version>/triton_metrics.py``).
    """
    target = Path(model_folder) / str(version) / HELPER.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HELPER, target)
    return target
