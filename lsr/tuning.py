"""Choose the convex fusion weights that maximise a metric on training queries, and store them.

``lsr tune-fusion --index DIR --queries queries.jsonl --qrels qrels/train.tsv`` runs every retriever of
the index once over the training queries (``depth`` hits each), then scores every weight vector of a grid
on the simplex (``step`` apart; 66 vectors for three retrievers at 0.1) with min-max convex fusion
(Bruch et al. 2023), and writes the best into the index manifest as its default fusion.

Example:
    >>> from lsr.tuning import simplex_grid
    >>> len(simplex_grid(3, 0.5)), simplex_grid(2, 0.5)
    (6, [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from lsr.eval.metrics import evaluate
from lsr.fusion import fuse_ranked
from lsr.manifest import load_manifest, write_manifest
from lsr.params import NORMALIZATIONS, FusionSpec
from lsr.retrievers.base import Ranked


def simplex_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """All weight vectors of n non-negative multiples of ``step`` that sum to 1."""
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1], got {step}")
    m = round(1 / step)
    if abs(m * step - 1) > 1e-9:
        raise ValueError(f"step must divide 1 evenly (0.1, 0.05, 0.25, ...), got {step}")
    out: list[tuple[float, ...]] = []

    def rec(prefix: list[int], left: int) -> None:
        if len(prefix) == n - 1:
            out.append(tuple(round(x / m, 10) for x in (*prefix, left)))
            return
        for i in range(left + 1):
            rec(prefix + [i], left - i)

    rec([], m)
    return out


@dataclass
class TuneResult:
    """The best fusion found, its metric value, and the value of every candidate tried."""

    fusion: dict
    value: float
    metric: str
    singles: dict[str, float] = field(default_factory=dict)
    rrf: float = 0.0
    tried: list[tuple[dict, float]] = field(default_factory=list)


def tune_fusion(searcher, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], *,
                metric: str = "ndcg@10", step: float = 0.1, normalization: str = "minmax", depth: int = 100,
                speed: str = "safe", names: list[str] | None = None) -> TuneResult:
    """Grid-search convex fusion weights of ``names`` (default: the retrievers an untuned hybrid search
    fuses), on ``queries`` judged by ``qrels`` (each retriever searched once; every candidate fused on
    arrays)."""
    names = list(names) if names is not None else searcher.collection.manifest.fused_by_default
    unknown = [n for n in names if n not in searcher.retrievers]
    if unknown:
        raise ValueError(f"the index has no {unknown[0]} retriever (it has {', '.join(searcher.retrievers)})")
    if len(names) < 2:
        raise ValueError(f"the index has only the {names[0]} retriever: nothing to fuse")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    judged = {q: t for q, t in queries.items() if q in qrels}
    if not judged:
        raise ValueError("none of the queries has relevance judgements in the qrels")
    qids, texts = list(judged), list(judged.values())
    ids = searcher.collection.ids
    parts = []
    for n in names:
        results = searcher.query(texts, searcher.params(k=depth, mode=n, speed=speed), annotate=False)
        parts.append(Ranked.from_lists([(r.rows, r.scores) for r in results], k=depth))

    def run(ranked: Ranked) -> dict[str, dict[str, float]]:
        return {q: dict(zip(ids[ranked[i][0]].tolist(), ranked[i][1].tolist())) for i, q in enumerate(qids)}

    singles = {n: evaluate(run(p), qrels, [metric])[metric] for n, p in zip(names, parts)}
    mins = [searcher.retriever(n).theoretical_min for n in names]
    n_rows, ties = len(searcher.collection), searcher.collection.id_rank
    tried = []
    for w in simplex_grid(len(names), step):
        fused = fuse_ranked(parts, weights=list(w), normalization=normalization, mins=mins, n_rows=n_rows,
                            top=depth, tiebreak=ties)
        tried.append(({n: x for n, x in zip(names, w)}, evaluate(run(fused), qrels, [metric])[metric]))
    # Ties (common on few queries) go to the weighting closest to equal weights.
    best_w, best = max(tried, key=lambda t: (t[1], -sum((w - 1 / len(names)) ** 2 for w in t[0].values())))
    fusion = {"method": "convex", "normalization": normalization, "weights": best_w, "depth": depth,
              "tuned": {"metric": metric, "value": best, "queries": len(judged), "step": step}}
    fused = fuse_ranked(parts, weights=[1.0] * len(parts), method="rrf", n_rows=n_rows, top=depth,
                        tiebreak=ties)
    rrf_value = evaluate(run(fused), qrels, [metric])[metric]
    return TuneResult(fusion, best, metric, singles, rrf_value, tried)


def write_fusion(index_path: str | Path, fusion: dict) -> dict:
    """Record ``fusion`` as the index's default (manifest rewritten atomically); returns the manifest."""
    manifest = load_manifest(index_path)
    spec = FusionSpec.check(fusion, list(manifest.retrievers)).to_dict()
    return write_manifest(index_path, manifest.replace(fusion=spec), next_generation=True).to_json()
