"""Where things are: the repository root, the reference models, scratch space.

Notebooks never write tracked files: scratch goes under ``build/`` (ignored by
git), each run in a fresh folder so two runs at once do not collide.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


def scratch(prefix: str = "run") -> Path:
    """A new, empty folder under ``build/`` for this run's files."""
    BUILD.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=BUILD))
