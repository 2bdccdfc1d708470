"""Label-free fusion weights (issue 13, point 3): the experiment of record.

Stage 1 (torch: run under the shared lock) searches every retriever of a collection once over a query set at
depth 100 and saves the lists as ``.npz``; ``probes`` does the same for the pseudo-queries that
``lsr.adapt.fusion.fit_fusion_unlabelled`` draws (``lsr.adapt.data.pseudo_queries``, n=1000, seed 0), with
each one's source document. Stage 2 (``eval``, numpy only) fits the label-free weights from those lists
exactly as ``fit_fusion_unlabelled`` does and scores every weighting with the labels (only to evaluate):
each single retriever, equal weights (the untuned default), label-free (collection only; and with the
unlabelled query texts), the weights ``lsr.tuning.tune_fusion`` picks on the other split's labels, and the
best grid point on the evaluated labels themselves. ``fit`` runs the real function on an index.

Collections: SciFact (``/tmp/scifact-v3``), and two built here from it (``make-titles``): queries are 600
SciFact titles (300 test, 300 train), documents the abstracts without titles and with every word that
shares a content word (or 6-letter stem) with the document's own title deleted (``--keep 0``: all of
them, ``titles``; ``--keep 0.5``: a random half of the title's words kept, ``half``). They test queries
whose words the answer lacks (vocabulary mismatch, where lexical retrievers are weak); they are synthetic,
title-to-abstract retrieval, not entity search. The SciFact ``spans`` set (500 pseudo-queries, seed 1,
judged by their source document) is the opposite: exact overlap solves it, lexical retrievers are strong.

    D=../shared/data/beir/scifact; S=scripts/labelfree_fusion.py; L="flock /tmp/torch.lock .venv/bin/python"
    for s in test train; do $L $S runs --index /tmp/scifact-v3 --queries $D/queries.jsonl \
        --qrels $D/qrels/$s.tsv --out /tmp/lff/scifact-$s.npz; done
    $L $S probes --index /tmp/scifact-v3 --out /tmp/lff/scifact-probes.npz
    $L $S probes --index /tmp/scifact-v3 --seed 1 --n 500 --out /tmp/lff/scifact-spans.npz
    .venv/bin/python $S make-titles --beir $D --out /tmp/lff/data/scifact-titles            # and --keep 0.5
    flock /tmp/torch.lock .venv/bin/lsr index --corpus /tmp/lff/data/scifact-titles \
        --out /tmp/lff/titles-index
    # runs (test, train) and probes on it as above
    .venv/bin/python $S eval --check --set scifact,test,/tmp/lff/scifact-test.npz,$D/qrels/test.tsv ... \
        --set scifact,spans,/tmp/lff/scifact-spans.npz,source --probes scifact,/tmp/lff/scifact-probes.npz ...
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np


def save_runs(searcher, texts: list[str], qids: list[str], out: Path, *, names: list[str] | None = None,
              depth: int = 100) -> None:
    """Search each retriever once over ``texts`` and save rows/scores/counts per retriever to ``out``."""
    from lsr.retrievers.base import Ranked

    names = names or searcher.retrievers
    arrays: dict[str, np.ndarray] = {"qids": np.array(qids), "names": np.array(names),
                                     "mins": np.array([searcher.retriever(n).theoretical_min for n in names]),
                                     "id_rank": searcher.collection.id_rank,
                                     "ids": np.asarray(searcher.collection.ids)}
    for n in names:
        t = time.time()
        res = searcher.query(texts, searcher.params(k=depth, mode=n), annotate=False)
        p = Ranked.from_lists([(r.rows, r.scores) for r in res], k=depth)
        arrays[f"{n}.rows"], arrays[f"{n}.scores"], arrays[f"{n}.counts"] = p.rows, p.scores, p.counts
        print(f"{n}: {len(texts)} queries in {time.time() - t:.1f} s", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)


def cmd_runs(a) -> int:
    from lsr.eval.beir import read_queries
    from lsr.eval.metrics import read_qrels
    from lsr.searcher import Searcher

    searcher = Searcher.load(a.index, device="cpu")
    queries = read_queries(a.queries)
    if a.qrels:
        qrels = read_qrels(a.qrels)
        queries = {q: t for q, t in queries.items() if q in qrels}
    qids = list(queries)
    save_runs(searcher, [queries[q] for q in qids], qids, a.out, depth=a.depth)
    return 0


STOP = set("""a an and are as at be by for from has have in into is it its of on or that the their this to
was were which with within without than via between among during after before under over not no but also can
may its these those such using used use based new two one three high low role study studies analysis effect
effects associated association""".split())


def _norm(word: str) -> str:
    w = re.sub(r"[^0-9a-z]", "", word.lower())
    return w[:-1] if len(w) > 3 and w.endswith("s") else w


def _key(w: str) -> str:
    return w[:6] if len(w) >= 6 else w


def hide_title(title: str, text: str, *, keep: float = 0.0, seed: int = 0) -> str:
    """``text`` without any word sharing a content word (or its 6-letter stem) with ``title``; ``keep``: the
    share of the title's content words (drawn at random) left in the text."""
    keys = sorted({_key(_norm(w)) for w in re.split(r"[\s/-]+", title)})
    keys = {k for k in keys if len(k) >= 3 and k not in STOP}
    if keep > 0:
        rng = np.random.default_rng([seed, len(text)])
        keys = {k for k in sorted(keys) if rng.random() >= keep}
    kept = [w for w in text.split() if _key(_norm(w)) not in keys or not _norm(w)]
    return " ".join(kept)


def cmd_make_titles(a) -> int:
    """Title-to-abstract retrieval with the title's words removed from every indexed abstract."""
    docs = [json.loads(line) for line in open(a.beir / "corpus.jsonl", encoding="utf-8")]
    out = a.out
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for d in docs:
            hidden = hide_title(d["title"], d["text"], keep=a.keep, seed=a.seed)
            f.write(json.dumps({"_id": d["_id"], "title": "", "text": hidden}) + "\n")
    rng = np.random.default_rng(a.seed)
    pick = rng.choice(len(docs), size=2 * a.n, replace=False)
    with open(out / "queries.jsonl", "w", encoding="utf-8") as f:
        for i in pick:
            f.write(json.dumps({"_id": f"t{docs[i]['_id']}", "text": docs[i]["title"]}) + "\n")
    for split, part in (("test", pick[:a.n]), ("train", pick[a.n:])):
        with open(out / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for i in part:
                f.write(f"t{docs[i]['_id']}\t{docs[i]['_id']}\t1\n")
    before = sum(len(d["text"].split()) for d in docs)
    after = sum(len(hide_title(d["title"], d["text"], keep=a.keep, seed=a.seed).split()) for d in docs)
    print(f"{len(docs)} documents ({after / before:.1%} of the words kept), {2 * a.n} title queries -> {out}")
    return 0


def cmd_probes(a) -> int:
    """Runs of pseudo-queries drawn from the collection (lsr.adapt.data.pseudo_queries), with their source."""
    from lsr.adapt.data import pseudo_queries
    from lsr.searcher import Searcher

    searcher = Searcher.load(a.index, device="cpu")
    q = pseudo_queries(searcher.collection, n=a.n, seed=a.seed)
    save_runs(searcher, q.texts, q.qids, a.out, depth=a.depth)
    with np.load(a.out) as z:
        arrays = dict(z)
    arrays["source"] = np.array([next(iter(p)) for p in q.positives], np.int64)
    np.savez_compressed(a.out, **arrays)
    return 0


def cmd_fit(a) -> int:
    """fit_fusion_unlabelled on an index (what ``lsr adapt`` records), with its wall time."""
    from lsr.adapt.fusion import fit_fusion_unlabelled
    from lsr.eval.beir import read_queries
    from lsr.eval.metrics import read_qrels
    from lsr.searcher import Searcher

    searcher = Searcher.load(a.index, device="cpu")
    texts = None
    if a.queries:
        queries = read_queries(a.queries)
        if a.qrels:  # only to choose the same query set as the runs; the judgements are not read further
            judged = read_qrels(a.qrels)
            queries = {q: t for q, t in queries.items() if q in judged}
        texts = list(queries.values())
    t0 = time.perf_counter()
    fit = fit_fusion_unlabelled(searcher, texts, names=a.names.split(",") if a.names else None)
    print(json.dumps(fit.fusion, indent=1))
    print(f"fitted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


# -- stage 2: numpy only ------------------------------------------------------------------------------------
def load_runs(path: Path) -> dict:
    """A saved ``.npz`` of :func:`save_runs`: names, mins, id ranks, ids and one Ranked per retriever."""
    from lsr.retrievers.base import Ranked

    with np.load(path, allow_pickle=False) as z:
        names = [str(x) for x in z["names"]]
        out = {"qids": [str(q) for q in z["qids"]], "names": names, "ids": z["ids"], "id_rank": z["id_rank"],
               "mins": dict(zip(names, z["mins"].tolist())),
               "parts": {n: Ranked(z[f"{n}.rows"], z[f"{n}.scores"], z[f"{n}.counts"]) for n in names},
               "source": z["source"] if "source" in z else None}
    return out


def ndcg_at_10(ranked, rels: list[dict[int, int]]) -> float:
    """Mean nDCG@10 (trec_eval's: linear gains, log2 discounts); checked against ir-measures below."""
    disc = 1 / np.log2(np.arange(2, 12))
    vals = []
    for i, rel in enumerate(rels):
        rows = ranked[i][0][:10].tolist()
        dcg = sum(rel.get(r, 0) * disc[j] for j, r in enumerate(rows))
        ideal = sorted(rel.values(), reverse=True)[:10]
        idcg = sum(g * disc[j] for j, g in enumerate(ideal))
        vals.append(dcg / idcg if idcg > 0 else 0.0)
    return float(np.mean(vals))


class QuerySet:
    """One query set of a collection: its saved runs and its judgements (used only to evaluate)."""

    def __init__(self, runs: Path, qrels: str) -> None:
        from lsr.eval.metrics import read_qrels

        self.run = load_runs(runs)
        pos = {d: i for i, d in enumerate(self.run["ids"].tolist())}
        if qrels == "source":  # pseudo-queries: the document each was copied from
            ids = self.run["ids"]
            self.qrels = {q: {str(ids[s]): 1} for q, s in zip(self.run["qids"], self.run["source"])}
        else:
            self.qrels = read_qrels(qrels)
        self.rels = [{pos[d]: g for d, g in self.qrels.get(q, {}).items() if d in pos and g > 0}
                     for q in self.run["qids"]]

    def fused(self, weights: dict[str, float]):
        from lsr.fusion import fuse_ranked

        names = [n for n in weights if weights[n] > 0]
        w = np.array([weights[n] for n in names], np.float64)
        return fuse_ranked([self.run["parts"][n] for n in names], weights=list(w / w.sum()),
                           mins=[self.run["mins"][n] for n in names], n_rows=len(self.run["ids"]), top=100,
                           tiebreak=self.run["id_rank"])

    def ndcg(self, weights: dict[str, float]) -> float:
        return ndcg_at_10(self.fused(weights), self.rels)

    def ndcg_ir_measures(self, weights: dict[str, float]) -> float:
        from lsr.eval.metrics import evaluate

        f, ids = self.fused(weights), self.run["ids"]
        run = {q: dict(zip(ids[f[i][0]].tolist(), f[i][1].tolist())) for i, q in enumerate(self.run["qids"])}
        return evaluate(run, {q: r for q, r in self.qrels.items() if q in set(self.run["qids"])},
                        ["ndcg@10"])["ndcg@10"]

    def tuned(self, names: list[str], step: float = 0.1) -> dict[str, float]:
        """lsr.tuning.tune_fusion's choice on these labels: the best of the simplex grid, ties to the weights
        closest to equal."""
        from lsr.tuning import simplex_grid

        grid = [dict(zip(names, w)) for w in simplex_grid(len(names), step)]
        tried = [(w, self.ndcg(w)) for w in grid]
        best = max(tried, key=lambda t: (t[1], -sum((x - 1 / len(names)) ** 2 for x in t[0].values())))
        return best[0]


def fit_on(run: dict, names: list[str], probes: dict | None = None, *,
           drop_sources: bool = True) -> tuple[dict[str, float], dict]:
    """What lsr.adapt.fusion.fit_fusion_unlabelled computes, from saved runs: the weights fitted on
    ``run``'s texts (source check on ``probes``), or on ``probes`` with their sources taken out."""
    from lsr.adapt.fusion import label_free_weights, source_recall, without_sources

    check = probes if probes is not None else run
    parts = [check["parts"][n] for n in names]
    recall = source_recall(parts, check["source"]) if check["source"] is not None else np.ones(len(names))
    keep = recall >= recall.max() / 3
    if run is probes and drop_sources:
        parts = without_sources(parts, probes["source"])
    else:
        parts = [run["parts"][n] for n in names]
    fit = label_free_weights(parts, mins=[run["mins"][n] for n in names], keep=keep)
    return dict(zip(names, fit.weights.tolist())), {"recall": recall.round(2).tolist(), "shrink": fit.lam,
                                                     "correlation": fit.correlation.round(3).tolist()}


def cmd_eval(a) -> int:
    sets: dict[str, dict[str, QuerySet]] = {}
    for spec in a.set:
        coll, split, runs, qrels = spec.split(",")
        sets.setdefault(coll, {})[split] = QuerySet(Path(runs), qrels)
    probes = {c: load_runs(Path(p)) for c, p in (spec.split(",") for spec in a.probes)}
    singles = ["sparse", "dense", "bm25", "sparse-idf"]
    for names in (n.split(",") for n in a.names):
        short = "/".join(names)
        print(f"\n### fusing {', '.join(names)}\n")
        print("| collection | queries | " + " | ".join(singles) + " | equal (default) | "
              "label-free: collection | same, sources kept in | label-free: these texts | "
              "label-free: other split's texts | tuned on other split | best on these labels |")
        print("|---" * (len(singles) + 9) + "|")
        weights_rows = []
        for coll, splits in sets.items():
            w_coll, info = fit_on(probes[coll], names, probes[coll])
            weights_rows.append((coll, "collection (pseudo-queries, sources out)", w_coll, info))
            w_kept, info = fit_on(probes[coll], names, probes[coll], drop_sources=False)
            weights_rows.append((coll, "collection (pseudo-queries, sources kept in)", w_kept, info))
            for split, qs in splits.items():
                others = [o for o in splits if o != split and splits[o].run["source"] is None]
                w_self, i_self = fit_on(qs.run, names, probes[coll])
                weights_rows.append((coll, f"{split} texts", w_self, i_self))
                w_other = fit_on(splits[others[0]].run, names, probes[coll])[0] if others else None
                tuned = qs.tuned(names, 0.1)
                t_other = splits[others[0]].tuned(names, 0.1) if others else None
                eq = qs.ndcg({n: 1.0 for n in names})
                cells = [f"{qs.ndcg({n: 1.0}):.4f}" for n in singles]
                cells.append(f"{eq:.4f}")
                for w in (w_coll, w_kept, w_self, w_other, t_other):
                    cells.append("-" if w is None else f"{qs.ndcg(w):.4f} ({qs.ndcg(w) - eq:+.4f})")
                cells.append(f"{qs.ndcg(tuned):.4f} ({qs.ndcg(tuned) - eq:+.4f}) "
                             + "/".join(f"{tuned[n]:.1f}" for n in names))
                print(f"| {coll} | {split} ({len(qs.rels)}) | " + " | ".join(cells) + " |", flush=True)
                if a.check:  # the fast nDCG against ir-measures, on the label-free weights
                    fast, ref = qs.ndcg(w_coll), qs.ndcg_ir_measures(w_coll)
                    if abs(fast - ref) > 1e-9:
                        raise SystemExit(f"nDCG mismatch on {coll}/{split}: {fast} vs ir-measures {ref}")
        print(f"\nweights ({short}), source check = share of pseudo-queries whose source is in the top 20:\n")
        print("| collection | fitted on | weights | shrinkage | source check | correlation |")
        print("|---|---|---|---|---|---|")
        for coll, what, w, info in weights_rows:
            print(f"| {coll} | {what} | " + "/".join(f"{w[n]:.3f}" for n in names)
                  + f" | {info['shrink']:.3f} | {info['recall']} | {info['correlation']} |")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("runs", help="search each retriever once and save the lists (torch: use the lock)")
    r.add_argument("--index", required=True, type=Path)
    r.add_argument("--queries", required=True, type=Path)
    r.add_argument("--qrels", type=Path, help="keep only the queries judged here")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--depth", type=int, default=100)
    p = sub.add_parser("probes", help="search each retriever with pseudo-queries (torch: use the lock)")
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--depth", type=int, default=100)
    f = sub.add_parser("fit", help="fit_fusion_unlabelled on an index (torch: use the lock)")
    f.add_argument("--index", required=True, type=Path)
    f.add_argument("--queries", type=Path, help="unlabelled queries (default: pseudo-queries only)")
    f.add_argument("--qrels", type=Path, help="keep only the queries listed here (their texts only)")
    f.add_argument("--names", help="retrievers to fuse, comma-separated (default: the untuned hybrid's)")
    e = sub.add_parser("eval", help="the tables of record, from saved runs (numpy only)")
    e.add_argument("--set", action="append", required=True,
                   help="collection,split,runs.npz,qrels.tsv (qrels 'source': a pseudo-query set's sources)")
    e.add_argument("--probes", action="append", required=True, help="collection,probes.npz")
    e.add_argument("--names", action="append", default=None, help="retrievers fused, comma-separated")
    e.add_argument("--check", action="store_true", help="check the fast nDCG@10 against ir-measures")
    m = sub.add_parser("make-titles", help="build the title-hidden SciFact variant (a BEIR folder)")
    m.add_argument("--beir", required=True, type=Path)
    m.add_argument("--out", required=True, type=Path)
    m.add_argument("--n", type=int, default=300, help="title queries per split (test, train)")
    m.add_argument("--seed", type=int, default=13)
    m.add_argument("--keep", type=float, default=0.0, help="share of the title's words left in the text")
    a = ap.parse_args(argv)
    if a.cmd == "eval" and a.names is None:
        a.names = ["sparse,dense,bm25", "sparse-idf,dense,bm25"]
    commands = {"runs": cmd_runs, "probes": cmd_probes, "fit": cmd_fit, "eval": cmd_eval,
                "make-titles": cmd_make_titles}
    return commands[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
