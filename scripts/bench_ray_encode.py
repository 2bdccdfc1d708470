"""Encoding on Ray against ``lsr index`` without Ray, on one machine: the same corpus and configuration
(SPLADE only: ``--no-dense --no-bm25 --no-sparse-idf``, on the CPU), each as the command a user runs (a fresh
process: imports, model loading and, for Ray, starting a local Ray instance count), one after the other.
Writes a JSON file with the wall times and the ratios Ray / plain.

The plain build runs with ``--plain-threads`` torch threads (``OMP_NUM_THREADS``; default 1): a Ray CPU actor
encodes with one thread, so ``--actors 1`` against one plain thread is Ray's overhead at equal compute, and
``--actors 2`` is what two actors give. (On a loaded machine, torch's multi-threaded CPU kernels can run far
slower than one thread: give ``--plain-threads 2`` to see it.)

Run it alone (minutes; under the torch lock on a shared machine)::

    flock /tmp/torch.lock .venv/bin/python scripts/bench_ray_encode.py --out /tmp/bench-ray.json
    .venv/bin/python scripts/bench_ray_encode.py --limit 500 --actors 2   # a quicker look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "beir" / "scifact"


def _run(cmd: list[str], env: dict) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return took, done.stdout.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR folder or JSONL (SciFact)")
    p.add_argument("--limit", type=int, default=None, help="only the first N lines of the corpus")
    p.add_argument("--actors", default="1,2", help="Ray runs: comma-separated actor counts (default 1,2)")
    p.add_argument("--plain-threads", type=int, default=1, help="torch threads of the plain build")
    p.add_argument("--model", default="splade-tiny")
    p.add_argument("--out", type=Path, default=Path("bench-ray-encode.json"))
    a = p.parse_args()
    actors = [int(x) for x in a.actors.split(",") if x.strip()]
    corpus = a.corpus / "corpus.jsonl" if a.corpus.is_dir() else a.corpus
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    lsr = [sys.executable, "-m", "lsr"]
    load_start = os.getloadavg()[0]
    runs: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        if a.limit:
            lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)[:a.limit]
            corpus = tmp / "corpus.jsonl"
            corpus.write_text("".join(lines), encoding="utf-8")
        docs = sum(1 for line in corpus.open(encoding="utf-8") if line.strip())
        common = ["--corpus", str(corpus), "--model", a.model, "--no-dense", "--no-bm25", "--no-sparse-idf",
                  "--device", "cpu", "--no-progress"]
        todo = [("plain", [*lsr, "index", *common, "--out", str(tmp / "plain")],
                 {**env, "OMP_NUM_THREADS": str(a.plain_threads)})]
        todo += [(f"ray-{n}", [*lsr, "index", *common, "--out", str(tmp / f"ray-{n}"), "--ray",
                               "--actors", str(n)], env) for n in actors]
        print(f"{docs:,} documents", flush=True)
        for name, cmd, run_env in todo:
            took, line = _run(cmd, run_env)
            shown = " ".join(["lsr", *cmd[3:]]).replace(str(tmp), "$TMP")
            if name == "plain":
                shown = f"OMP_NUM_THREADS={a.plain_threads} {shown}"
            runs[name] = {"wall_s": round(took, 2), "summary": line.replace(str(tmp), "$TMP"),
                          "command": shown}
            print(f"{name}: {took:.1f} s  ({shown})", flush=True)
    plain = runs["plain"]["wall_s"]
    result = {
        "corpus": str(a.corpus), "limit": a.limit, "documents": docs, "model": a.model,
        "config": "SPLADE only (--no-dense --no-bm25 --no-sparse-idf), --device cpu",
        "runs": runs, "ratio_over_plain": {k: round(v["wall_s"] / plain, 3) for k, v in runs.items()},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_1m_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)]},
    }
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratio_over_plain"]), "->", a.out)


if __name__ == "__main__":
    main()
