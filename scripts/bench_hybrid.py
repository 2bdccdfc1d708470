"""Batch search throughput and nDCG@10 per mode, this checkout against a previous commit, in one run.

Issue 12's check: the same SciFact nDCG@10 for sparse, dense, bm25 and hybrid as before (|diff| <= 0.0005)
and hybrid's batch throughput on the 300 test queries at least 1.3x the previous commit's. The previous
code is exported with ``git archive REV`` into a temporary folder (no change to the repository); each
version runs in ONE child process of this checkout's Python, with its source root as cwd and PYTHONPATH,
one after the other, with the same thread count (the child checks that ``lsr`` and ``lsr.index`` come from
that root). A child opens the index with ``Searcher.load`` (CPU), runs one untimed ``batch_search`` of
all test queries per mode (JIT compiling, caches), then ``--repeats`` timed ones (k=1000, encoding
included), and scores nDCG@10 of the run with ir-measures, by this script's code for both versions.
Modes an index or a version lacks (``sparse-idf`` before issue 12) are skipped.

    lsr index --corpus ../shared/data/beir/scifact --out /tmp/scifact-hybrid          # all three sides
    .venv/bin/python scripts/bench_hybrid.py --index /tmp/scifact-hybrid --beir ../shared/data/beir/scifact

Prints a table (speed-up = previous best seconds / current best seconds) and a verdict line; ``--out``
also writes both children's figures as JSON.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASELINE = "8ba6cfc"  # the last commit before issue 12's rewrite
DEFAULT_MODES = "hybrid,sparse,dense,bm25,sparse-idf"
SPEEDUP, TOLERANCE = 1.3, 0.0005


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


def test_queries(beir: Path, split: str) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The queries of ``qrels/<split>.tsv`` (in queries.jsonl order) and their judgements."""
    qrels: dict[str, dict[str, int]] = {}
    with open(beir / "qrels" / f"{split}.tsv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) >= 3 and row[2].lstrip("-").isdigit():  # skips the header
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    queries = {}
    with open(beir / "queries.jsonl", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                q = json.loads(line)
                if str(q["_id"]) in qrels:
                    queries[str(q["_id"])] = q["text"]
    return queries, qrels


def ndcg10(run: dict, qrels: dict) -> float:
    """Mean nDCG@10 over every judged query (a query without results scores 0), trec_eval semantics."""
    import ir_measures

    measure = ir_measures.nDCG @ 10
    values = {q: 0.0 for q in qrels}
    scored = [ir_measures.ScoredDoc(q, d, float(s)) for q, docs in run.items() if q in qrels
              for d, s in docs.items()]
    judged = [ir_measures.Qrel(q, d, r) for q, docs in qrels.items() for d, r in docs.items()]
    for r in ir_measures.iter_calc([measure], judged, scored):
        values[r.query_id] = float(r.value)
    return sum(values.values()) / len(values)


def child(a) -> int:
    """Runs in the version's source root: times and scores each mode, writes JSON to ``a.child_out``."""
    import torch

    import lsr
    import lsr.index
    from lsr.searcher import Searcher

    torch.set_num_threads(a.threads)
    queries, qrels = test_queries(a.beir, a.split)
    t = time.perf_counter()
    searcher = Searcher.load(a.index, device="cpu")
    print(f"  lsr from {lsr.__file__}, lsr.index from {lsr.index.__file__}", file=sys.stderr)
    out = {"lsr": lsr.__file__, "lsr.index": lsr.index.__file__, "threads": a.threads, "k": a.k,
           "queries": len(queries), "load_seconds": time.perf_counter() - t, "modes": {}}
    have = list(getattr(searcher, "modes", []))
    accepts = inspect.signature(searcher.batch_search).parameters
    extra = {"threads": a.threads} if "threads" in accepts else {}
    for mode in a.modes.split(","):
        if mode not in have:
            print(f"  {mode}: not in this version/index (modes: {', '.join(have)}), skipped", file=sys.stderr)
            continue
        searcher.batch_search(queries, k=a.k, mode=mode, **extra)  # warm-up: JIT, caches, first encodes
        seconds, split = [], []
        for _ in range(a.repeats):
            timings: dict = {}
            t = time.perf_counter()
            run = searcher.batch_search(queries, k=a.k, mode=mode, **extra,
                                        **({"timings": timings} if "timings" in accepts else {}))
            seconds.append(time.perf_counter() - t)
            split.append(timings)
        best = min(seconds)
        out["modes"][mode] = {
            "ndcg@10": ndcg10(run, qrels), "seconds": seconds, "best": best,
            "median": statistics.median(seconds), "qps": len(queries) / best,
            "timings_of_best": split[seconds.index(best)],
            "top10": {q: list(hits)[:10] for q, hits in run.items()}}
        parts = ", ".join(f"{k.split('_')[0]} {v:.3f} s" for k, v in split[seconds.index(best)].items())
        print(f"  {mode}: nDCG@10 {out['modes'][mode]['ndcg@10']:.4f}, best {best:.3f} s ({parts})",
              file=sys.stderr)
    out["load_average_after"] = os.getloadavg()[0]
    Path(a.child_out).write_text(json.dumps(out))
    return 0


def commit(rev: str) -> str | None:
    """The full id of commit ``rev`` of this checkout, or None."""
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def export(sha: str, dest: Path) -> None:
    """``git archive`` of commit ``sha`` unpacked into ``dest`` (the repository is left as it is)."""
    proc = subprocess.Popen(["git", "-C", str(ROOT), "archive", "--format=tar", sha], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        tar.extractall(dest, filter="data")
    if proc.wait() != 0:
        raise SystemExit(f"bench_hybrid: git archive {sha} failed")


def run_version(label: str, root: Path, a, workdir: Path) -> dict:
    """One child process with ``root`` as its source tree; its JSON, checked to come from ``root``."""
    out = workdir / f"{label}.json"
    env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update({v: str(a.threads) for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                            "OPENBLAS_NUM_THREADS")})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child-out", str(out), "--index", str(a.index),
           "--beir", str(a.beir), "--split", a.split, "--modes", a.modes, "--k", str(a.k),
           "--repeats", str(a.repeats), "--threads", str(a.threads)]
    print(f"{label}: {root} (load average {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    if subprocess.run(cmd, cwd=root, env=env).returncode != 0:
        raise SystemExit(f"bench_hybrid: the {label} run failed (its error is above)")
    res = json.loads(out.read_text())
    for name in ("lsr", "lsr.index"):
        if not Path(res[name]).resolve().is_relative_to(root.resolve()):
            raise SystemExit(f"bench_hybrid: the {label} run imported {name} from {res[name]}, not {root}")
    return res


def _ndcg(r: dict | None) -> str:
    return f"{r['ndcg@10']:.4f}" if r else "-"


def _secs(r: dict | None) -> str:
    return f"{r['best']:.3f} / {r['median']:.3f}" if r else "-"


def report(prev: dict, cur: dict, modes: list[str]) -> tuple[list[str], bool]:
    """Markdown table rows and whether hybrid's speed-up and every nDCG difference pass."""
    lines = ["| mode | nDCG@10 prev | nDCG@10 cur | diff | top-10 same | s prev best/median "
             "| s cur best/median | q/s cur | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    ok, notes = True, []
    for m in modes:
        p, c = prev["modes"].get(m), cur["modes"].get(m)
        if p is None and c is None:
            continue
        diff = ratio = same = "-"
        if p and c:
            d = c["ndcg@10"] - p["ndcg@10"]
            diff, ratio = f"{d:+.4f}", f"{p['best'] / c['best']:.2f}x"
            same = f"{sum(p['top10'][q] == c['top10'].get(q) for q in p['top10'])}/{len(p['top10'])}"
            if abs(d) > TOLERANCE:
                ok = False
                notes.append(f"{m} nDCG@10 differs by {d:+.4f}")
        lines.append(f"| {m} | {_ndcg(p)} | {_ndcg(c)} | {diff} | {same} | {_secs(p)} | "
                     f"{_secs(c)} | {c['qps'] if c else 0:,.0f} | {ratio} |")
    p, c = prev["modes"].get("hybrid"), cur["modes"].get("hybrid")
    speedup = f"{p['best'] / c['best']:.2f}x" if p and c else "not measured"
    if not (p and c and p["best"] / c["best"] >= SPEEDUP):
        ok = False
        notes.append(f"hybrid speed-up {speedup}, not >= {SPEEDUP}x")
    same_ndcg = "yes" if not any("nDCG" in n for n in notes) else "NO"
    lines += ["", f"hybrid speed-up {speedup} (needs >= {SPEEDUP}x); "
              f"every |nDCG@10 diff| <= {TOLERANCE}: {same_ndcg}; verdict: "
              f"{'PASS' if ok else 'FAIL (' + '; '.join(notes) + ')'}"]
    return lines, ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", required=True, type=Path, help="index folder built by `lsr index` (all sides)")
    ap.add_argument("--beir", required=True, type=Path, help="BEIR folder: queries.jsonl, qrels/<split>.tsv")
    ap.add_argument("--split", default="test")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="the previous commit (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batches per mode (best and median kept)")
    ap.add_argument("--modes", default=DEFAULT_MODES, help="comma-separated (default: %(default)s)")
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=cores(), help="both versions (default: all cores)")
    ap.add_argument("--out", type=Path, help="also write both versions' figures here (JSON)")
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.repeats < 1 or a.k < 1 or a.threads < 1:
        ap.error("--repeats, --k and --threads must be at least 1")
    a.index, a.beir = a.index.resolve(), a.beir.resolve()
    if a.child_out:
        return child(a)
    if not (a.index / "manifest.json").is_file():
        ap.error(f"--index {a.index}: no manifest.json there (build one with `lsr index`)")
    if not (a.beir / "queries.jsonl").is_file() or not (a.beir / "qrels" / f"{a.split}.tsv").is_file():
        ap.error(f"--beir {a.beir}: needs queries.jsonl and qrels/{a.split}.tsv")
    sha = commit(a.baseline)
    if sha is None:
        ap.error(f"--baseline {a.baseline!r} is not a commit of {ROOT}")
    workdir = Path(tempfile.mkdtemp(prefix="bench-hybrid-"))
    try:
        export(sha, workdir / "baseline")
        prev = run_version("previous", workdir / "baseline", a, workdir)
        cur = run_version("current", ROOT, a, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True).stdout.strip())
    print(f"\nprevious: {a.baseline} ({sha[:10]}); current: working tree at {head}"
          f"{' + changes' if dirty else ''}; "
          f"{prev['queries']} {a.split} queries, k={a.k}, {a.threads} threads, {a.repeats} timed batches "
          f"per mode (encoding included)\n")
    lines, ok = report(prev, cur, a.modes.split(","))
    print("\n".join(lines))
    busy = max(prev["load_average_after"], cur["load_average_after"])
    if busy > a.threads + 1:  # our own threads account for up to a.threads of it
        print(f"warning: 1-minute load average reached {busy:.1f} on {cores()} cores: other processes "
              "shared the CPUs, so the seconds above are not comparable; rerun on a quiet machine")
    if a.out:
        for r in (prev, cur):
            for m in r["modes"].values():
                m.pop("top10")
        a.out.write_text(json.dumps({"baseline_commit": sha, "head": head, "dirty": dirty, "pass": ok,
                                     "previous": prev, "current": cur}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
