"""Measure how often a refused metric call aborts Triton 2.51.0, and where in the binary it aborts.

Run from the repository root::

    .venv/bin/python scripts/refused_call_aborts.py            # 6 servers per mistake, 20 requests each
    .venv/bin/python scripts/refused_call_aborts.py --servers 10 --calls 50

For each request-time pitfall of ``notebooks/pitfalls/`` (a metric call that the
server refuses), it starts fresh servers (labkit.triton, local mode) with only that
model, sends the same request up to ``--calls`` times, and records how many were
answered before the server aborted. Then it resolves the backtrace of one abort
against the symbols of the wheel's ``libtriton_python.so`` (it is not stripped):
the frame addresses Triton prints minus the library's load address, looked up
with ``nm`` (binutils). Notebook 07 quotes both.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from labkit import paths, repository, triton

REFUSED = ["histogram_value", "counter_set", "negative_increment", "counter_observe"]
PITFALLS = paths.NOTEBOOKS / "pitfalls"


def build_repository() -> Path:
    repo = paths.scratch("refused-call-aborts")
    for name in REFUSED:
        repository.add_model(repo, name, PITFALLS / f"{name}.py", config=PITFALLS / "config.pbtxt")
    return repo


def infer(server: triton.TritonServer, name: str) -> int | None:
    """One JSON request: its HTTP status, or None when the server gave no answer."""
    body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [3], "data": [1.0, 2.0, 4.0]}]}
    try:
        return requests.post(f"{server.http_url}/v2/models/{name}/infer", data=json.dumps(body), timeout=60).status_code
    except requests.ConnectionError:
        return None


def one_server(repo: Path, name: str, calls: int) -> tuple[int, bool, str, dict[str, int]]:
    """(requests answered, aborted?, log, library load addresses) of one fresh server."""
    with triton.start(repo, models=[name]) as server:
        maps = Path(f"/proc/{server.pid}/maps").read_text()
        bases: dict[str, int] = {}
        for line in maps.splitlines():
            if line.endswith(".so") and "libtriton_python" in line:
                start = int(line.split("-", 1)[0], 16)
                bases["libtriton_python.so"] = min(start, bases.get("libtriton_python.so", start))
        answered = 0
        for _ in range(calls):
            if infer(server, name) is None:
                break
            answered += 1
        try:
            server.popen.wait(timeout=5 if answered < calls else 0.5)
        except subprocess.TimeoutExpired:
            pass
        aborted = not server.is_running()
        return answered, aborted, server.log(), bases


def symbolize(log: str, base: int, library: Path) -> list[str]:
    """Function names of the libtriton_python.so frames of a backtrace in Triton's log."""
    symbols = []
    listing = subprocess.run(["nm", "-C", str(library)], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[1] in "tTwW" and parts[0]:
            symbols.append((int(parts[0], 16), parts[2]))
    symbols.sort()
    starts = [address for address, _ in symbols]
    names = []
    for match in re.finditer(r"0x([0-9A-Fa-f]+) in \S*libtriton_python\.so", log):
        offset = int(match.group(1), 16) - base
        names.append(symbols[bisect.bisect_right(starts, offset) - 1][1])
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=6, help="fresh servers per mistake")
    parser.add_argument("--calls", type=int, default=20, help="requests per server")
    args = parser.parse_args()
    repo = build_repository()
    jobs = [name for name in REFUSED for _ in range(args.servers)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda name: one_server(repo, name, args.calls), jobs))
    print(f"{'mistake':20s} {'aborted':>10s}  requests answered before the abort, per server")
    for name in REFUSED:
        mine = [r for job, r in zip(jobs, results, strict=True) if job == name]
        died = [str(answered) if aborted else f"({answered}, alive)" for answered, aborted, _, _ in mine]
        print(f"{name:20s} {sum(r[1] for r in mine):>4d} of {len(mine):<3d}  {', '.join(died)}")
    dead = [r for r in results if r[1] and "lock_exception" in r[2]]
    print(f"\n{len(dead)} of {sum(r[1] for r in results)} aborts printed boost::interprocess::lock_exception.")
    if not dead:
        return 0
    _, _, log, bases = dead[0]
    if shutil.which("nm") is None:
        print("To resolve the backtrace, install binutils (sudo apt-get install binutils).")
        return 0
    library = triton.prepare_local_install().backend_dir / "python" / "libtriton_python.so"
    print("The libtriton_python.so frames of one abort, innermost first:")
    for name in symbolize(log, bases["libtriton_python.so"], library):
        print("  ", name[:160])
    return 0


if __name__ == "__main__":
    sys.exit(main())
