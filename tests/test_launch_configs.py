"""Codespaces, Binder and `make setup` install the same pinned requirements."""

from __future__ import annotations

import json
import re

from labkit import paths

ROOT = paths.ROOT


def test_requirements_are_all_pinned_and_numpy_below_2():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    lines = [ln for ln in lines if ln]
    assert lines and all(re.match(r"^[A-Za-z0-9_.\-\[\],]+==[^;\s]+(\s*;.*)?$", ln) for ln in lines), lines
    numpy = next(ln for ln in lines if ln.startswith("numpy=="))
    assert numpy.split("==")[1].startswith("1.")


def test_make_setup_installs_requirements_txt():
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -r requirements.txt" in makefile
    assert "-e ." in makefile


def test_devcontainer_runs_make_setup_on_a_supported_python():
    config = json.loads((ROOT / ".devcontainer" / "devcontainer.json").read_text())
    assert "make setup" in config["postCreateCommand"]
    assert "prometheus" in config["postCreateCommand"]
    version = re.search(r"python:\d+-(3\.\d+)-", config["image"]).group(1)
    assert version in ("3.10", "3.11", "3.12")
    assert 8888 in config["forwardPorts"]


def test_binder_installs_the_same_requirements():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-cache-dir -r requirements.txt" in post_build
    assert "--no-deps -e ." in post_build
    assert (ROOT / "binder" / "postBuild").stat().st_mode & 0o111, "postBuild must be executable"
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert runtime in ("python-3.10", "python-3.11", "python-3.12")
    assert "prometheus" in (ROOT / "binder" / "apt.txt").read_text().split()
    # no second, drifting list of packages next to requirements.txt
    assert not (ROOT / "binder" / "requirements.txt").exists()
    assert not (ROOT / "binder" / "environment.yml").exists()
