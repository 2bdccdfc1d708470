"""IR metrics over runs, computed by ir-measures (trec_eval semantics via pytrec_eval), not by hand.

Runs are ``{query_id: {doc_id: score}}``; qrels ``{query_id: {doc_id: relevance}}``. Metric names are
ours (``ndcg@10``, ``recall@100``, ``recall@1000``, ``mrr@10``, ``map``) or any ir-measures name.

Example:
    >>> from lsr.evaluation import evaluate
    >>> evaluate({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["ndcg@10"])["ndcg@10"]  # doctest: +ELLIPSIS
    0.6309...
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

NAMES = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "recall@1000": "R@1000", "mrr@10": "RR@10",
         "map": "AP", "recall@10": "R@10", "ndcg@100": "nDCG@100"}


def _measure(name: str):
    import ir_measures

    try:
        return ir_measures.parse_measure(NAMES.get(name.lower(), name))
    except (ValueError, NameError, SyntaxError):
        raise ValueError(f"unknown metric {name!r}: use one of {', '.join(NAMES)} or an ir-measures name"
                         ) from None


def evaluate(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
             metrics: Sequence[str] = ("ndcg@10", "recall@100"), *, per_query: bool = False) -> dict:
    """Mean of each metric over the queries that have qrels (a query with no results scores 0).

    With ``per_query=True`` returns ``{metric: {query_id: value}}`` instead.
    """
    import ir_measures

    measures = {m: _measure(m) for m in metrics}
    qrels_l = [ir_measures.Qrel(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()]
    run_l = [ir_measures.ScoredDoc(q, d, float(s)) for q, docs in run.items() if q in qrels
             for d, s in docs.items()]
    if per_query:
        out: dict = {m: {q: 0.0 for q in qrels} for m in metrics}
        by_measure = {v: k for k, v in measures.items()}
        for r in ir_measures.iter_calc(list(measures.values()), qrels_l, run_l):
            out[by_measure[r.measure]][r.query_id] = float(r.value)
        return out
    agg = ir_measures.calc_aggregate(list(measures.values()), qrels_l, run_l)
    n_judged = len(qrels)
    n_run = len({q for q in run if q in qrels and run[q]})
    # ir-measures averages over queries present in the run: queries without results count as 0.
    return {m: float(agg.get(v, 0.0)) * n_run / n_judged if n_judged else 0.0 for m, v in measures.items()}


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR ``qrels/<split>.tsv`` (query-id, corpus-id, score, with a header) or TREC qrels (4 columns)."""
    path = Path(path)
    out: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else " "), start=1):
            row = [c for c in row if c != ""]
            if not row or (n == 1 and not row[-1].lstrip("-").isdigit()):
                continue
            if len(row) == 3:
                q, d, r = row
            elif len(row) == 4:
                q, _, d, r = row
            else:
                raise ValueError(f"{path}:{n}: expected 3 (BEIR) or 4 (TREC) columns, got {len(row)}")
            try:
                out.setdefault(q, {})[d] = int(r)
            except ValueError:
                raise ValueError(f"{path}:{n}: relevance {r!r} is not an integer") from None
    return out
