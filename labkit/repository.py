"""Build small Triton model repositories from a ``model.py`` and a ``config.pbtxt``.

A model repository is a folder with one sub-folder per model::

    <repository>/<model name>/config.pbtxt
    <repository>/<model name>/1/model.py        # version 1
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from labkit.paths import MODEL_REPOSITORY

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
    """Copy a reference model of ``model_repository/`` into ``repository``."""
    dest = Path(repository) / name
    shutil.copytree(MODEL_REPOSITORY / name, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest
