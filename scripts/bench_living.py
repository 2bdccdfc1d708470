#!/usr/bin/env python3
"""The living collection on SciFact: add throughput, time until searchable, merges, multi-segment latency,
and effectiveness against a from-scratch build (issue 14, "Measure"; the filtered part: bench_filters.py).

Every document is encoded ONCE (SPLADE and the dense model) and cached under ``--work/vectors``; every
collection is then built from those vectors (``Collection.build(..., vectors=...)``, ``c.add(docs,
vectors=...)``), so builds and adds measure the index, not the encoders, except the "encoding included" adds
(``c.add(docs)``, a few batches of 100).

Parts (``--parts``, default all):

1. updates: documents in random order (``--seed``); build from the first 80%, add the rest in batches of
   100 (then, from the same base, 1,000), delete 10% of the documents at random, merge (the tiered policy
   until it has nothing to do, then ``max_segments=1``). Add throughput (encoding excluded and included),
   the time from ``add()`` until searchable (add + commit), merge times.
2. latency (``bench_segments.py``, imported from here): single-thread ``safe`` latency (one query at a
   time, k=10, fastest of ``--repeat`` passes after a warm-up pass; query encoding excluded) of the same live
   documents as 1, 5, 20 and 50 segments (80% in one segment, the rest in equal added segments; ``--equal``
   adds layouts of equal segments), the same documents merged into one segment, today's single-segment
   engine on a fresh build (no commit points), and part 1's collection before its merge (segments and
   deleted rows); recall@10 of ``fast``/``fastest`` against ``safe``; ``safe`` checked against ``exact``
   on the same collection. A profile of the sparse search: time in the Numba kernels vs the Python around
   them.
3. effectiveness: nDCG@10 and R@100 of every mode on part 1's collection (after its adds and deletes, before
   and after its merges) and on a from-scratch build of the same live documents from the same vectors.

Prints Markdown tables; every figure goes to ``--work/bench_living.json``. Loads torch models: run it under
the shared lock::

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 flock /tmp/torch.lock .venv/bin/python scripts/bench_living.py \\
        --work /tmp/living
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from lsr.collection import Collection, encode_corpus, permute_rows
from lsr.corpus import Record, read_corpus
from lsr.eval.beir import load_beir
from lsr.eval.metrics import evaluate
from lsr.params import BuildConfig
from lsr.searcher import Searcher
from lsr.types import SparseBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_segments import latency_tables, part_latency  # noqa: E402 (a script next to this one)

HERE = Path(__file__).resolve().parent
SCIFACT = HERE.parent.parent / "shared" / "data" / "beir" / "scifact"
MODES = ("sparse", "dense", "bm25", "sparse-idf", "hybrid")
LATENCY_MODES = ("sparse", "bm25", "sparse-idf")


# -- data and vectors -----------------------------------------------------------------------------------
class Encoders:
    """The SPLADE and dense document encoders, loaded on first use."""

    def __init__(self) -> None:
        self._sparse = self._dense = None

    @property
    def sparse(self):
        if self._sparse is None:
            from lsr.encoders import SpladeEncoder

            self._sparse = SpladeEncoder.from_pretrained(BuildConfig().model)
        return self._sparse

    @property
    def dense(self):
        if self._dense is None:
            from lsr.encoders import DenseEncoder

            self._dense = DenseEncoder.from_pretrained(BuildConfig().dense)
        return self._dense


def load_vectors(work: Path, records: list[Record], enc: Encoders) -> tuple[SparseBatch, np.ndarray, dict]:
    """Every document's SPLADE and dense vectors (corpus order), encoded once and cached in ``work``."""
    folder = work / "vectors"
    ids = [r.id for r in records]
    if (folder / "ids.txt").exists() and (folder / "ids.txt").read_text().split("\n")[:-1] == ids:
        sparse = SparseBatch(
            np.load(folder / "sparse.indptr.npy"),
            np.load(folder / "sparse.indices.npy"),
            np.load(folder / "sparse.values.npy"),
            int(np.load(folder / "sparse.vocab.npy")),
        )
        info = json.loads((folder / "encoding.json").read_text())
        return sparse, np.load(folder / "dense.npy"), info
    folder.mkdir(parents=True, exist_ok=True)
    texts = [r.content for r in records]
    t0 = time.perf_counter()
    sparse = encode_corpus(enc.sparse, texts, batch_size=BuildConfig().batch_size, show_progress=True)
    t1 = time.perf_counter()
    dense = np.ascontiguousarray(
        enc.dense.encode_documents(texts, batch_size=64, show_progress=True), np.float32
    )
    t2 = time.perf_counter()
    for name, arr in (("indptr", sparse.indptr), ("indices", sparse.indices), ("values", sparse.values)):
        np.save(folder / f"sparse.{name}.npy", arr)
    np.save(folder / "sparse.vocab.npy", np.array(sparse.vocab_size))
    np.save(folder / "dense.npy", dense)
    info = {"documents": len(records), "sparse_seconds": t1 - t0, "dense_seconds": t2 - t1}
    (folder / "encoding.json").write_text(json.dumps(info))
    (folder / "ids.txt").write_text("\n".join(ids) + "\n")
    return sparse, dense, info


def take(batch: SparseBatch, rows: np.ndarray) -> SparseBatch:
    return permute_rows(batch, np.asarray(rows, np.int64))


def doc(r: Record) -> dict:
    return {"id": r.id, "title": r.title, "text": r.text}


def write_jsonl(path: Path, records: list[Record]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"_id": r.id, "title": r.title, "text": r.text}, ensure_ascii=False) + "\n")
    return path


class Data:
    """SciFact's records, queries, qrels and vectors, and builds of row subsets from the vectors."""

    def __init__(self, source: Path, work: Path, enc: Encoders) -> None:
        self.ds = load_beir(source, split="test", checksums=False)
        self.records = read_corpus(self.ds.corpus).records
        self.work = work
        self.enc = enc
        self.sparse, self.dense, self.encoding = load_vectors(work, self.records, enc)
        self.row_of = {r.id: i for i, r in enumerate(self.records)}

    def vectors(self, rows: np.ndarray) -> dict:
        rows = np.asarray(rows, np.int64)
        return {"sparse": take(self.sparse, rows), "dense": self.dense[rows]}

    def docs(self, rows: np.ndarray) -> list[dict]:
        return [doc(self.records[i]) for i in np.asarray(rows).tolist()]

    def build(self, out: Path, rows: np.ndarray) -> float:
        """A fresh collection of ``rows`` (all four retrievers) from the cached vectors; its seconds."""
        jsonl = write_jsonl(self.work / f"{out.name}.jsonl", [self.records[i] for i in rows.tolist()])
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        Collection.build(
            jsonl,
            out,
            vectors=self.vectors(rows),
            encoder=self.enc.sparse,
            dense_encoder=self.enc.dense,
            overwrite=True,
            show_progress=False,
            corpus_name="scifact",
        )
        return time.perf_counter() - t0


def fresh_copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


# -- part 1: updates ------------------------------------------------------------------------------------
def split(data: Data, seed: int) -> dict:
    """The random order, the base (first 80%), the rest, and the 10% deleted (ids), all from ``seed``."""
    n = len(data.records)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    cut = int(round(0.8 * n))
    deleted = rng.choice(n, size=int(round(0.1 * n)), replace=False)
    gone = np.zeros(n, bool)
    gone[deleted] = True
    live = order[~gone[order]]  # the live documents, in the random order
    return {
        "order": order,
        "base": order[:cut],
        "rest": order[cut:],
        "deleted": np.sort(deleted),
        "live": live,
    }


def timed_adds(
    c: Collection, data: Data, rows: np.ndarray, batch: int, *, encode: bool = False, limit: int | None = None
) -> list[dict]:
    """Add ``rows`` in batches (vectors prepared untimed unless ``encode``), each committed; per batch: add
    and commit seconds, and whether its first document is found after the commit."""
    out = []
    starts = list(range(0, len(rows), batch))[:limit]
    for s in starts:
        part = rows[s : s + batch]
        docs = data.docs(part)
        vec = None if encode else data.vectors(part)
        t0 = time.perf_counter()
        c.add(docs, vectors=vec)
        t1 = time.perf_counter()
        info = c.commit()
        t2 = time.perf_counter()
        found = c.rows([docs[0]["id"], docs[-1]["id"]]).size == 2
        out.append(
            {
                "documents": len(part),
                "add_s": t1 - t0,
                "commit_s": t2 - t1,
                "searchable": found,
                "segments": info.segments,
                "generation": info.generation,
            }
        )
    return out


def timed_merges(c: Collection, max_segments: int | None) -> list[dict]:
    out = []
    while True:
        t0 = time.perf_counter()
        info = c.merge(max_segments=max_segments)
        dt = time.perf_counter() - t0
        if info is None:
            return out
        out.append(
            {
                "merged": len(info.merged),
                "seconds": dt,
                "segments": info.segments,
                "documents": info.documents,
            }
        )


def add_summary(adds: list[dict]) -> dict:
    n = sum(a["documents"] for a in adds)
    add_s = sum(a["add_s"] for a in adds)
    commit_s = sum(a["commit_s"] for a in adds)
    until = [a["add_s"] + a["commit_s"] for a in adds]
    return {
        "batches": len(adds),
        "documents": n,
        "docs_per_s": n / (add_s + commit_s),
        "add_s": add_s,
        "commit_s": commit_s,
        "searchable_median_s": float(np.median(until)),
        "searchable_max_s": float(np.max(until)),
        "all_searchable": all(a["searchable"] for a in adds),
    }


def part_updates(data: Data, sp: dict, work: Path, out: dict, *, evaluate_states: bool) -> None:
    base = work / "base"
    out["base_build_s"] = data.build(base, sp["base"])
    out["base_documents"] = len(sp["base"])
    deleted_ids = [data.records[i].id for i in sp["deleted"].tolist()]
    runs = {}
    for batch in (100, 1000):
        c = Collection.open(fresh_copy(base, work / f"run-{batch}"))
        adds = timed_adds(c, data, sp["rest"], batch)
        t0 = time.perf_counter()
        found = c.delete(deleted_ids)
        t1 = time.perf_counter()
        info = c.commit()
        t2 = time.perf_counter()
        run = {
            "adds": adds,
            "summary": add_summary(adds),
            "delete": {
                "asked": len(deleted_ids),
                "found": found,
                "delete_s": t1 - t0,
                "commit_s": t2 - t1,
                "segments": info.segments,
                "deleted_rows": info.deleted_rows,
                "documents": info.documents,
            },
        }
        print(f"batches of {batch}: {json.dumps(run['summary'])}", flush=True)
        if batch == 100:
            c.close()
            fresh_copy(work / "run-100", work / "run-100-unmerged")  # part 2 times it
            c = Collection.open(work / "run-100")
            if evaluate_states:
                out.setdefault("effectiveness", {})["updated, before merge"] = evaluate_all(c, data)
        run["tiered"] = timed_merges(c, None)
        run["after_tiered"] = c.stats()["segments"]
        if batch == 100 and evaluate_states:
            out["effectiveness"]["updated, after tiered merges"] = evaluate_all(c, data)
        run["to_one"] = timed_merges(c, 1)
        run["final"] = {k: v for k, v in c.stats().items() if k != "segment_sizes"}
        if batch == 100 and evaluate_states:
            out["effectiveness"]["updated, merged to 1"] = evaluate_all(c, data)
        c.close()
        runs[batch] = run
    out["runs"] = runs
    # encoding included: batches of 100 through add(docs) with the collection's encoders
    c = Collection.open(fresh_copy(base, work / "run-encode"))
    c.retrievers["sparse"].encoder.encode_documents(["warm up"])  # first torch call: not an add's cost
    c.retrievers["dense"].encoder.encode_documents(["warm up"])
    enc_adds = timed_adds(c, data, sp["rest"], 100, encode=True, limit=3)
    c.close()
    out["encoding_included"] = {"adds": enc_adds, "summary": add_summary(enc_adds)}


# -- part 3: effectiveness --------------------------------------------------------------------------------
def evaluate_all(c: Collection, data: Data) -> dict:
    """nDCG@10 and R@100 of every mode, and each mode's top-100 run (for the list comparison)."""
    s = Searcher(c)
    out = {}
    for mode in MODES:
        if mode != "hybrid" and mode not in c.retrievers:
            continue
        try:
            run = s.batch_search(data.ds.queries, k=100, mode=mode)
        except Exception as e:  # a finding to report, not a reason to stop the benchmark
            out[mode] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{mode}: {out[mode]['error']}", flush=True)
            continue
        scores = evaluate(run, data.ds.qrels, ("ndcg@10", "recall@100"))
        out[mode] = {"ndcg@10": scores["ndcg@10"], "recall@100": scores["recall@100"], "run": run}
    return out


def top(run: dict, k: int) -> list[tuple[str, float]]:
    return sorted(run.items(), key=lambda x: (-x[1], x[0]))[:k]


def compare_runs(a: dict, b: dict, k: int = 10) -> dict:
    """Queries whose top-k (ids and scores) are identical; the largest score difference on shared ids."""
    same_ids = same = 0
    diff = rel = 0.0
    for q in b:
        ta, tb = top(a.get(q, {}), k), top(b[q], k)
        same += ta == tb
        same_ids += [d for d, _ in ta] == [d for d, _ in tb]
        shared = set(a.get(q, {})) & set(b[q])
        if shared:
            diff = max(diff, max(abs(a[q][d] - b[q][d]) for d in shared))
            rel = max(rel, max(abs(a[q][d] - b[q][d]) / max(abs(b[q][d]), 1e-12) for d in shared))
    return {"queries": len(b), "identical_top": same, "identical_ids": same_ids, "max_score_diff": diff,
            "max_relative_diff": rel}


def compare_states(eff: dict, fresh_name: str) -> None:
    """Each state's runs against the fresh build's (in place: ``vs_fresh`` per mode)."""
    fresh = eff[fresh_name]
    for name, modes in eff.items():
        for mode, m in modes.items():
            if name != fresh_name and "run" in m and "run" in fresh.get(mode, {}):
                m["vs_fresh"] = compare_runs(m["run"], fresh[mode]["run"])


def effectiveness_table(eff: dict, fresh_name: str) -> list[str]:
    fresh = eff[fresh_name]
    lines = [
        "| collection | mode | nDCG@10 | R@100 | nDCG@10 - fresh | R@100 - fresh | identical top-10 "
        "(ids+scores / ids) | max score diff (relative) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, modes in eff.items():
        for mode, m in modes.items():
            f = fresh.get(mode, {})
            if "error" in m or "error" in f:
                lines.append(f"| {name} | {mode} | {m.get('error') or 'fresh: ' + f['error']} | | | | | |")
                continue
            r = m.get("vs_fresh")
            cmp = f"{r['identical_top']} / {r['identical_ids']} of {r['queries']}" if r else "-"
            diff = f"{r['max_score_diff']:.3g} ({r['max_relative_diff']:.2%})" if r else "-"
            lines.append(
                f"| {name} | {mode} | {m['ndcg@10']:.4f} | {m['recall@100']:.4f} | "
                f"{m['ndcg@10'] - f['ndcg@10']:+.4f} | {m['recall@100'] - f['recall@100']:+.4f} | {cmp} | "
                f"{diff} |"
            )
    return lines


def strip(obj):
    """The figures without runs and result lists (the JSON's content)."""
    if isinstance(obj, dict):
        return {str(k): strip(v) for k, v in obj.items() if k not in ("run", "lists")}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return obj


def update_tables(res: dict) -> list[str]:
    lines = [
        f"base: {res['base_documents']} documents built from vectors in {res['base_build_s']:.1f} s\n",
        "| adds | batches | documents | docs/s (add + commit) | add s | commit s | add() until searchable: "
        "median s | max s | all found after commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        (f"batches of {b}, vectors given (encoding excluded)", r["summary"]) for b, r in res["runs"].items()
    ]
    rows.append(("batches of 100, encoded by add() (encoding included)", res["encoding_included"]["summary"]))
    for name, m in rows:
        lines.append(
            f"| {name} | {m['batches']} | {m['documents']} | {m['docs_per_s']:.0f} | {m['add_s']:.2f} | "
            f"{m['commit_s']:.2f} | {m['searchable_median_s']:.3f} | {m['searchable_max_s']:.3f} | "
            f"{m['all_searchable']} |"
        )
    enc = res["encoding_included"]["adds"]
    lines.append(
        "\nencoding included, per batch (add s / commit s): "
        + ", ".join(f"{a['add_s']:.2f} / {a['commit_s']:.2f}" for a in enc)
    )
    lines += [
        "\n| run | deleted (asked / found) | delete() s | commit s | rows deleted | segments | live docs |",
        "|---|---|---|---|---|---|---|",
    ]
    for b, r in res["runs"].items():
        d = r["delete"]
        lines.append(
            f"| batches of {b} | {d['asked']} / {d['found']} | {d['delete_s']:.3f} | {d['commit_s']:.3f} | "
            f"{d['deleted_rows']} | {d['segments']} | {d['documents']} |"
        )
    lines += [
        "\n| run | merge | merges | seconds (each) | total s | segments after |",
        "|---|---|---|---|---|---|",
    ]
    for b, r in res["runs"].items():
        for phase, key in (("tiered policy", "tiered"), ("max_segments=1", "to_one")):
            ms = r[key]
            each = ", ".join(f"{m['seconds']:.2f} ({m['merged']} segs)" for m in ms) or "nothing to merge"
            after = ms[-1]["segments"] if ms else "-"
            lines.append(
                f"| batches of {b} | {phase} | {len(ms)} | {each} | {sum(m['seconds'] for m in ms):.2f} | "
                f"{after} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=SCIFACT, help="BEIR folder (default: shared SciFact)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder: vectors, collections, JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parts", default="1,2,3", help="which parts to run (1,2,3; 'none': encode only)")
    p.add_argument("--segments", default="1,5,20,50",
                   help="part 2's segment counts: 80%% + equal adds (1: part 1's collection merged)")
    p.add_argument("--equal", default="", help="segment counts for part 2 with equal segments, e.g. 20,50")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per latency (after one warm-up)")
    p.add_argument("--modes", default=",".join(LATENCY_MODES), help="modes timed in part 2")
    a = p.parse_args(argv)
    a.segments = [int(x) for x in a.segments.split(",") if x]
    a.equal = [int(x) for x in a.equal.split(",") if x]
    a.modes = tuple(x for x in a.modes.split(",") if x)
    a.work.mkdir(parents=True, exist_ok=True)
    enc = Encoders()
    data = Data(a.data, a.work, enc)
    print(f"vectors: {len(data.records)} documents, encoding {json.dumps(data.encoding)}", flush=True)
    parts = set() if a.parts == "none" else {int(x) for x in a.parts.split(",")}
    sp = split(data, a.seed)
    res: dict = {
        "seed": a.seed,
        "documents": len(data.records),
        "live": len(sp["live"]),
        "encoding": data.encoding,
    }
    save = a.work / "bench_living.json"
    if 1 in parts:
        part_updates(data, sp, a.work, res, evaluate_states=3 in parts)
        save.write_text(json.dumps(strip(res), indent=1))
    if parts & {2, 3}:
        res["fresh_build_s"] = data.build(a.work / "fresh", sp["live"])
    if 3 in parts:
        c = Collection.open(a.work / "fresh")
        eff = {"fresh build of the live documents": evaluate_all(c, data)}
        c.close()
        eff.update(res.pop("effectiveness", {}))
        compare_states(eff, "fresh build of the live documents")
        res["effectiveness"] = eff
        save.write_text(json.dumps(strip(res), indent=1))
    if 2 in parts:
        lat: dict = {}
        part_latency(
            data, sp, a.work, lat, segments=a.segments, equal=a.equal, repeat=a.repeat, modes=a.modes
        )
        res["latency"] = lat
    save.write_text(json.dumps(strip(res), indent=1))
    if 1 in parts:
        print("\n## Updates\n")
        print("\n".join(update_tables(res)))
    if 3 in parts:
        print("\n## Effectiveness against a from-scratch build of the same live documents\n")
        print("\n".join(effectiveness_table(res["effectiveness"], "fresh build of the live documents")))
    if 2 in parts:
        print("\n## Single-thread latency across segments\n")
        print("\n".join(latency_tables(res["latency"], a.modes)))
        for name, p in res["latency"].get("profile", {}).items():
            if not name.startswith("20 segments"):
                continue  # every profile is in the JSON
            print(f"\ncProfile, {name} (300 queries, safe, by own time):\n")
            print("```\n" + "\n".join(p["cprofile"].strip().splitlines()[:30]) + "\n```")
    print(f"\nfigures: {a.work / 'bench_living.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
