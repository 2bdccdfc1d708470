"""First-query latency of a fresh process: ``lsr serve`` (time to /ready, then the first queries that
``lsr demo`` prints) and ``lsr search`` (warm-up and search time), from a cold or a warm Numba cache.

``--cold`` deletes Numba's cache files (``__pycache__/*.nbi``, ``*.nbc``) of the checkout first, as in a
fresh clone. Run from the repository root:

    .venv/bin/lsr demo --out /tmp/demo-index --no-serve
    .venv/bin/python scripts/first_query.py --index /tmp/demo-index --cold --only serve
    .venv/bin/python scripts/first_query.py --index /tmp/demo-index --only serve
    .venv/bin/python scripts/first_query.py --index /tmp/demo-index --cold --only search
    .venv/bin/python scripts/first_query.py --index /tmp/demo-index --only search
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LSR = str(Path(sys.executable).with_name("lsr"))
GET = "/search?q=copy+a+directory+tree&k=3"  # the queries lsr demo prints
POST = {"query": "serialize a python object to a JSON formatted string", "k": 5}


def clear_numba_cache() -> int:
    files = [p for p in ROOT.rglob("__pycache__/*.nb[ic]") if ".venv" not in p.parts]
    for p in files:
        p.unlink(missing_ok=True)
    return len(files)


def timed(url: str, body: dict | None = None) -> tuple[float, int]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        hits = len(json.loads(r.read())["hits"])
    return time.perf_counter() - t0, hits


def measure_serve(index: str, port: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([LSR, "serve", "--index", index, "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                sys.exit(f"lsr serve exited with {proc.returncode}:\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(url + "/ready", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        first, n1 = timed(url + GET)
        second, n2 = timed(url + "/search", POST)
        third, _ = timed(url + GET.replace("copy", "move"))
    finally:
        proc.terminate()
        out = proc.communicate(timeout=60)[0]
    warm = re.search(r"warming up the search kernels\.\.\. done in ([0-9.]+) s", out)
    print(f"lsr serve: ready after {ready:.1f} s (warm-up {warm.group(1) if warm else '?'} s); first query "
          f"(GET, {n1} hits) {first * 1000:.0f} ms, second (POST, {n2} hits) {second * 1000:.0f} ms, "
          f"third {third * 1000:.0f} ms")


def measure_search(index: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([LSR, "search", "--index", index, "-k", "3", "copy a directory tree"], env=env,
                       capture_output=True, text=True)
    total = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"lsr search failed: {r.stderr}")
    warm = re.search(r"done in ([0-9.]+) s", r.stderr)
    took = re.search(r"hits in ([0-9.]+) ms", r.stdout)
    print(f"lsr search: {total:.1f} s in all, warm-up {warm.group(1) if warm else '?'} s, "
          f"search {took.group(1) if took else '?'} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, help="index folder, e.g. the demo index")
    p.add_argument("--cold", action="store_true", help="delete Numba's cache files first")
    p.add_argument("--only", choices=["serve", "search"], default=None)
    p.add_argument("--port", type=int, default=8765)
    a = p.parse_args()
    if shutil.which(LSR) is None:
        sys.exit(f"{LSR}: not found (run from the project's venv)")
    if a.cold:
        print(f"cold: {clear_numba_cache()} Numba cache files deleted")
    if a.only in (None, "serve"):
        measure_serve(a.index, a.port)
    if a.only in (None, "search"):
        measure_search(a.index)


if __name__ == "__main__":
    main()
