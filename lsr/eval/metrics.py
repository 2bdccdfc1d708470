"""IR metrics over runs, computed by ir-measures (trec_eval semantics via pytrec_eval), not by hand.

Runs are ``{query_id: {doc_id: score}}``; qrels ``{query_id: {doc_id: relevance}}``. Metric names are
ours (``ndcg@10``, ``recall@100``, ``recall@1000``, ``mrr@10``, ``map``) or any ir-measures name.

Example:
    >>> from lsr.eval.metrics import evaluate
    >>> evaluate({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["ndcg@10"])["ndcg@10"]  # doctest: +ELLIPSIS
    0.6309...
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Mapping, Sequence

import ir_measures

__all__ = ["NAMES", "measure", "evaluate", "read_qrels", "write_trec_run", "read_trec_run",
           "drop_identical_ids", "top_overlap"]

NAMES = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "recall@1000": "R@1000", "mrr@10": "RR@10",
         "map": "AP", "recall@10": "R@10", "ndcg@100": "nDCG@100"}


def measure(name: str):
    """The ir-measures measure for a metric name (ours or ir-measures'); ValueError for an unknown one.

    Example:
        >>> str(measure("ndcg@10"))
        'nDCG@10'
    """
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
    measures = {m: measure(m) for m in metrics}
    qrels_l = [ir_measures.Qrel(q, d, int(r)) for q, docs in qrels.items() for d, r in docs.items()]
    run_l = [ir_measures.ScoredDoc(q, d, float(s)) for q, docs in run.items() if q in qrels
             for d, s in docs.items()]
    # Per-query values, then the mean over every judged query: a query without results scores 0 (trec_eval
    # -c). Averaging here keeps that true whether or not the ir-measures version reports such queries.
    values: dict = {v: {q: 0.0 for q in qrels} for v in set(measures.values())}
    for r in ir_measures.iter_calc(list(values), qrels_l, run_l):
        values[r.measure][r.query_id] = float(r.value)
    out = {m: dict(values[v]) for m, v in measures.items()}
    if per_query:
        return out
    return {m: sum(v.values()) / len(v) if v else 0.0 for m, v in out.items()}


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


def write_trec_run(run: Mapping[str, Mapping[str, float]], path: str | Path, *, tag: str = "lsr") -> int:
    """Write a run in TREC format (``qid Q0 docid rank score tag``, rank from 1, best first); lines written.

    Within a query, hits are ordered by score, ties by document id, as trec_eval would order them. The
    file is written to a temporary name and renamed.

    Example:
        >>> write_trec_run({"q1": {"d2": 0.5, "d1": 1.5}}, "run.trec", tag="demo")   # doctest: +SKIP
        2
    """
    if not tag or any(c.isspace() for c in tag):
        raise ValueError(f"a run tag must be one word, got {tag!r}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, docs in run.items():
            for rank, (doc, score) in enumerate(sorted(docs.items(), key=lambda x: (-x[1], x[0])), start=1):
                if any(c.isspace() for c in f"{qid}{doc}"):
                    raise ValueError(f"TREC runs cannot hold ids with spaces: query {qid!r}, doc {doc!r}")
                f.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
                n += 1
    tmp.replace(path)
    return n


def read_trec_run(path: str | Path) -> dict[str, dict[str, float]]:
    """A TREC run file -> ``{qid: {docid: score}}``; ValueError names the line of a malformed row."""
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise ValueError(f"{path}:{n}: expected 6 columns (qid Q0 docid rank score tag), "
                                 f"got {len(parts)}")
            try:
                run.setdefault(parts[0], {})[parts[2]] = float(parts[4])
            except ValueError:
                raise ValueError(f"{path}:{n}: score {parts[4]!r} is not a number") from None
    return run


def drop_identical_ids(run: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """The run without hits whose document id is the query id (BEIR's ``ignore_identical_ids``,
    Anserini's ``-removeQuery``)."""
    return {q: {d: s for d, s in docs.items() if d != q} for q, docs in run.items()}


def top_overlap(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]],
                k: int = 10) -> dict[str, float]:
    """How alike two runs' top ``k`` are, over the queries of ``a``: the mean share of ``a``'s top ``k``
    found in ``b``'s top ``k`` (``overlap``) and the share of queries whose top ``k`` sets are equal."""
    def top(docs: Mapping[str, float]) -> set[str]:
        return {d for d, _ in sorted(docs.items(), key=lambda x: (-x[1], x[0]))[:k]}

    shares, same = [], 0
    for q, docs in a.items():
        ta, tb = top(docs), top(b.get(q, {}))
        shares.append(len(ta & tb) / max(len(ta), 1) if ta else float(not tb))
        same += ta == tb
    n = len(shares)
    return {"overlap": sum(shares) / n if n else 1.0, "identical": same / n if n else 1.0, "queries": n}
