"""Where things are: the repository root, the reference models, scratch space.

Notebooks never write tracked files: scratch goes under ``build/`` (ignored by
git), each run in a fresh folder so two runs at once do not collide.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL_REPOSITORY = ROOT / "model_repository"
#: The drop-in metrics helper: its only copy in the tree (models get it when their repository is built).
HELPER = ROOT / "dropin" / "triton_metrics.py"
NOTEBOOKS = ROOT / "notebooks"
BUILD = ROOT / "build"


KEEP_SCRATCH_S = 24 * 3600


def scratch(prefix: str = "run") -> Path:
    """A new, empty folder under ``build/`` for this run's files.

    It stays after the run so you can look at it; folders of the same prefix
    older than a day are removed, so ``build/`` does not grow without end.
    """
    BUILD.mkdir(exist_ok=True)
    now = time.time()
    for old in BUILD.glob(f"{prefix}-*"):
        if old.is_dir() and now - old.stat().st_mtime > KEEP_SCRATCH_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=BUILD))
