"""Preflight: is this machine ready for the course? Each missing piece comes with its fix.

Run it in notebook 00, or from a terminal (handy before a workshop)::

    .venv/bin/python -m labcheck.preflight
"""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

import pandas as pd
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from labkit import TRITON_IMAGE, TRITON_VERSION
from labkit.paths import MODEL_REPOSITORY, ROOT


@dataclass
class Check:
    """One line of the preflight table."""

    name: str
    ok: bool
    found: str
    fix: str = ""
    required: bool = True


def pinned_requirements() -> dict[str, str]:
    """``{package: version}`` pinned in requirements.txt for this Python and platform (markers evaluated)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):  # a comment, or a pip option such as --index-url
            continue
        requirement = Requirement(line.partition(" #")[0])
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue  # not for this Python or platform
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if exact:
            pins[requirement.name.lower()] = exact[0]
    return pins


def check_python() -> Check:
    """Python 3.10 to 3.12 (the wheel ships backend stubs for these)."""
    version = platform.python_version()
    ok = (3, 10) <= sys.version_info[:2] <= (3, 12)
    fix = "" if ok else "install Python 3.12 and run `make PYTHON=python3.12 setup`"
    return Check("Python 3.10-3.12", ok, f"{version} at {sys.executable}", fix)


def check_packages() -> list[Check]:
    """Each pinned package installed at its pinned version."""
    checks = []
    for name, wanted in pinned_requirements().items():
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = "missing"
        ok = found != "missing" and _same_version(found, wanted)
        if name == "nvidia-pytriton" and platform.machine() != "x86_64":
            checks.append(Check(name, found != "missing", found, "local server is Linux x86-64 only", False))
            continue
        fix = "" if ok else "run `make setup` (or `pip install -r requirements.txt`)"
        checks.append(Check(f"package {name}=={wanted}", ok, found, fix))
    numpy = metadata.version("numpy") if _installed("numpy") else "missing"
    ok = numpy != "missing" and Version(numpy).major < 2
    checks.append(Check("numpy < 2 (Triton 2.51 Python backend)", ok, numpy, "" if ok else "pip install 'numpy<2'"))
    return checks


def _same_version(found: str, wanted: str) -> bool:
    """Equal as PEP 440 versions (``1.0`` is ``1.0.0``); as text when either is not a valid version."""
    try:
        return Version(found) == Version(wanted)
    except InvalidVersion:
        return found == wanted


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def check_local_server(start: bool = True) -> Check:
    """The wheel's tritonserver runs here and serves the reference model."""
    from labkit import triton

    ok, reason = triton.local_support()
    if not ok:
        return Check("local tritonserver", False, reason, triton.LOCAL_HINT)
    if not start:
        return Check("local tritonserver", True, "binary present (not started)")
    try:
        with triton.start(MODEL_REPOSITORY, mode="local", models=["metrics_demo"]) as server:
            import requests

            meta = requests.get(f"{server.http_url}/v2", timeout=5).json()
            ready = requests.get(f"{server.http_url}/v2/models/metrics_demo/ready", timeout=5).status_code == 200
    except triton.TritonStartError as err:
        return Check("local tritonserver", False, err.headline, "see the error above; " + triton.LOCAL_HINT)
    version = meta.get("version", "?")
    ok = version == TRITON_VERSION and ready
    found = f"tritonserver {version}, metrics_demo {'ready' if ready else 'NOT ready'}"
    return Check("local tritonserver", ok, found, "" if ok else f"expected {TRITON_VERSION}; run `make setup`")


def check_docker() -> Check:
    """A Docker engine (optional: the local server needs none)."""
    from labkit import triton

    ok, reason = triton.docker_available()
    fix = "" if ok else f"optional; {triton.DOCKER_HINT}"
    return Check("Docker engine (optional)", ok, reason, fix, required=False)


def check_gpu() -> Check:
    """An NVIDIA GPU and driver (optional: the course runs on CPU)."""
    if shutil.which("nvidia-smi") is None:
        return Check("NVIDIA GPU (optional)", False, "no nvidia-smi", "optional; CPU is enough for the course", False)
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    found = out.stdout.strip().replace("\n", "; ") or out.stderr.strip()
    ok = out.returncode == 0 and bool(out.stdout.strip())
    return Check("NVIDIA GPU (optional)", ok, found, "" if ok else "check the NVIDIA driver", False)


def check_prometheus() -> Check:
    """The ``prometheus`` and ``promtool`` binaries (needed from notebook 05 on)."""
    missing = [b for b in ("prometheus", "promtool") if shutil.which(b) is None]
    if missing:
        from labkit import prometheus

        found = "missing: " + ", ".join(missing)
        return Check("Prometheus + promtool (notebook 05+)", False, found, prometheus.INSTALL_HINT, False)
    out = subprocess.run(["prometheus", "--version"], capture_output=True, text=True, timeout=20)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
    return Check("Prometheus + promtool (notebook 05+)", True, first, required=False)


def run_checks(start_server: bool = True) -> pd.DataFrame:
    """Every check as a table: name, ok, found, fix, required."""
    checks = [check_python(), *check_packages(), check_local_server(start_server)]
    checks += [check_docker(), check_gpu(), check_prometheus()]
    return pd.DataFrame([c.__dict__ for c in checks])


def verdict(table: pd.DataFrame) -> str:
    """ "READY" or "NOT READY" with what to fix; optional pieces are listed apart."""
    missing = table[table.required & ~table.ok]
    optional = table[~table.required & ~table.ok]
    lines = []
    if missing.empty:
        lines.append("READY: the course's required pieces are all here.")
    else:
        lines.append("NOT READY. Fix these first:")
        lines += [f"  - {row.name}: found {row.found}. Fix: {row.fix}" for row in missing.itertuples()]
    if not optional.empty:
        lines.append("Optional pieces not found (the course works without them):")
        lines += [f"  - {row.name}: {row.found}. {row.fix}" for row in optional.itertuples()]
    lines.append(f"Triton release: local binary {TRITON_VERSION} = container image {TRITON_IMAGE}")
    return "\n".join(lines)


def main() -> int:
    """Print the table and the verdict; exit 1 when not ready."""
    table = run_checks()
    for row in table.itertuples():
        print(f"{'ok ' if row.ok else 'NO '} {row.name:<42} {row.found}")
    print()
    print(verdict(table))
    return 0 if table[table.required].ok.all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
