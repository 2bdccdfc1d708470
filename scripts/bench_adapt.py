"""The measurement of record for ``lsr adapt`` (issue 13) on a BEIR data set with a train split (SciFact).

1. Quality on the test split (nDCG@10, R@100): ``sparse`` (SPLADE query encoder), ``sparse-idf`` with IDF
   weights, ``dense``, ``bm25`` and the untuned hybrid on the index as built; then on two copies adapted by
   ``lsr adapt`` (a subprocess each: its wall time and peak memory are the adaptation's own): supervised (the
   train split) and label-free (pseudo-queries): ``sparse-idf`` with the weights kept and the hybrid
   the copy records (sparse-idf in place of sparse when the guard allows, fusion weights fitted).
2. Query cost, one thread (torch and Numba), one query at a time over the test queries: the query vector
   (every retriever the mode runs) and the whole ``Searcher.search``, for sparse, sparse-idf, dense, bm25,
   hybrid with the SPLADE encoder and hybrid with sparse-idf (the supervised copy).
3. Postings a query touches (FLOPS) with IDF and with learned weights (from the copies' manifests).

    .venv/bin/python -P scripts/bench_adapt.py --index /tmp/scifact-v3 \\
        --beir ../shared/data/beir/scifact --work /tmp/bench-adapt --json-out adapt.json
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

METRICS = ["ndcg@10", "recall@100"]


def evaluate_modes(searcher, queries: dict, qrels: dict, modes: list[str]) -> dict:
    from lsr.eval.metrics import evaluate

    out = {}
    for mode in modes:
        run = searcher.batch_search(queries, k=100, mode=mode)
        out[mode] = evaluate(run, qrels, METRICS)
    return out


def adapt_copy(index: Path, target: Path, args: list[str]) -> dict:
    """Copy ``index`` to ``target`` and run ``lsr adapt`` on it in a child process (wall, peak RSS)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(index, target)
    t0 = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run([sys.executable, "-P", "-m", "lsr", "adapt", "--index", str(target), *args],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"lsr adapt failed: {p.stderr.strip()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(p.stdout, file=sys.stderr)
    return {"wall_seconds": wall, "peak_rss_mib": max(peak, before) / 1024, "report": p.stdout.splitlines()}


def query_costs(searcher, texts: list[str], mode: str) -> dict:
    """Median / mean ms per query of building the query vector(s) and of the whole search, one at a time."""
    params = searcher.params(k=10, mode=mode)
    names = [n for n, w in params.fusion.weights if w > 0] if params.fusion is not None else [mode]
    encode, whole = [], []
    for t in texts:
        t0 = time.perf_counter()
        for n in names:
            searcher.retriever(n).encode_queries([t])
        t1 = time.perf_counter()
        searcher.search(t, k=10, mode=mode)
        t2 = time.perf_counter()
        encode.append((t1 - t0) * 1e3)
        whole.append((t2 - t1) * 1e3)
    return {"fuses": names, "encode_ms_median": statistics.median(encode),
            "encode_ms_mean": statistics.mean(encode), "search_ms_median": statistics.median(whole),
            "search_ms_mean": statistics.mean(whole)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--index", required=True, help="a collection built by lsr index (every retriever)")
    p.add_argument("--beir", required=True, help="the BEIR folder it was built from (train and test qrels)")
    p.add_argument("--work", required=True, help="where the adapted copies go")
    p.add_argument("--cost-queries", type=int, default=300, help="test queries timed one at a time")
    p.add_argument("--json-out", default=None)
    a = p.parse_args()

    import numba
    import torch

    from lsr import Searcher
    from lsr.eval.beir import load_beir
    from lsr.manifest import load_manifest

    beir, work, index = Path(a.beir), Path(a.work), Path(a.index)
    work.mkdir(parents=True, exist_ok=True)
    test = load_beir(beir, split="test")
    report: dict = {"index": str(index), "dataset": test.name, "queries": len(test.queries)}

    sup = adapt_copy(index, work / "supervised", ["--queries", str(beir / "queries.jsonl"),
                                                  "--qrels", str(beir / "qrels" / "train.tsv")])
    free = adapt_copy(index, work / "label-free", [])
    report["adapt"] = {"supervised": sup, "label-free": free}

    base = Searcher.load(index)
    modes = ["sparse", "sparse-idf", "dense", "bm25", "hybrid"]
    report["quality"] = {"as built": evaluate_modes(base, test.queries, test.qrels, modes)}
    for name in ("supervised", "label-free"):
        s = Searcher.load(work / name)
        report["quality"][name] = evaluate_modes(s, test.queries, test.qrels, ["sparse-idf", "hybrid"])
        m = load_manifest(work / name)
        adapted = m.retrievers["sparse-idf"].settings.get("adapted", {})
        report["adapt"][name].update(kept=adapted.get("kept"), hybrid=list(m.fused_by_default),
                                     fusion=m.fusion, postings=adapted.get("postings_per_query"),
                                     held_out=adapted.get("held_out"))
        del s

    torch.set_num_threads(1)
    numba.set_num_threads(1)
    texts = list(test.queries.values())[: a.cost_queries]
    costs = {}
    for mode in ("sparse", "sparse-idf", "dense", "bm25", "hybrid"):
        base.search(texts[0], k=10, mode=mode)  # first-call costs
        costs[mode if mode != "hybrid" else "hybrid (SPLADE encoder)"] = query_costs(base, texts, mode)
    sup_s = Searcher.load(work / "supervised")
    sup_s.search(texts[0], k=10, mode="hybrid")
    costs["hybrid (adapted: " + ", ".join(sup_s.collection.manifest.fused_by_default) + ")"] = \
        query_costs(sup_s, texts, "hybrid")
    costs["sparse-idf (learned)"] = query_costs(sup_s, texts, "sparse-idf")
    report["query_cost_one_thread"] = costs

    print("\n| collection | mode | nDCG@10 | R@100 |\n|---|---|---|---|")
    for name, modes_ in report["quality"].items():
        for mode, v in modes_.items():
            print(f"| {name} | {mode} | {v['ndcg@10']:.4f} | {v['recall@100']:.4f} |")
    print("\n| mode | query vector ms (median) | whole search ms (median) | mean |\n|---|---|---|---|")
    for mode, c in costs.items():
        print(f"| {mode} | {c['encode_ms_median']:.2f} | {c['search_ms_median']:.2f} | "
              f"{c['search_ms_mean']:.2f} |")
    print("\n| adaptation | wall s | peak MiB | kept | postings/query idf -> learned | hybrid fuses |\n"
          "|---|---|---|---|---|---|")
    for name, r in report["adapt"].items():
        post, fuses = r.get("postings") or {}, ", ".join(r.get("hybrid", []))
        print(f"| {name} | {r['wall_seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r.get('kept')} | "
              f"{post.get('idf', 0):,.0f} -> {post.get('learned', 0):,.0f} | {fuses} |")
    if a.json_out:
        Path(a.json_out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
