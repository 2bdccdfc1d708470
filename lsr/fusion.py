"""Fusion of ranked runs from several retrievers (hybrid retrieval).

A run is ``{query_id: {doc_id: score}}`` (what :meth:`lsr.Searcher.batch_search` returns, and what ranx,
ir-measures and pytrec_eval take). Every function here is pure: it reads runs and returns a new run.

* :func:`rrf`: reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009), ``sum_r w_r / (k + rank_r)``.
* :func:`convex`: convex combination ``sum_r w_r * norm_r(score)`` of normalised scores, with the
  normalisations studied by Bruch, Gai & Ingber ("An Analysis of Fusion Functions for Hybrid Retrieval",
  TOIS 2023): ``"minmax"`` (per query, observed min and max), ``"zscore"`` (per query mean and standard
  deviation) and ``"tmm"`` (theoretical min-max: the retriever's lowest possible score, e.g. 0 for SPLADE
  and BM25 and -1 for cosine similarity, and the observed max).

A document missing from one retriever's list takes that list's lowest normalised value (0 for min-max and
theoretical min-max, the lowest z-score for z-score), as if it ranked just below the list; in RRF it adds
nothing. Output lists are sorted by fused score, ties by document id, and cut to ``top`` when given.

Example:
    >>> from lsr.fusion import rrf, convex
    >>> sparse = {"q1": {"a": 12.0, "b": 10.0}}
    >>> dense = {"q1": {"b": 0.9, "c": 0.5}}
    >>> list(rrf([sparse, dense])["q1"])
    ['b', 'a', 'c']
    >>> convex([sparse, dense], weights=[0.5, 0.5])["q1"]
    {'a': 0.5, 'b': 0.5, 'c': 0.0}
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from numba import njit

from lsr.retrievers.base import Ranked

Run = Mapping[str, Mapping[str, float]]

NORMALIZATIONS = ("minmax", "zscore", "tmm")
METHODS = ("rrf", "convex")
#: largest RRF ``k``: beyond it every rank's ``1 / (k + rank)`` is nearly the same and the ranking degenerates
MAX_RRF_K = 1e6


def scaled(weights: Sequence[float]) -> list[float]:
    """Finite weights >= 0 divided by their largest (so their sum cannot overflow); the largest becomes 1.

    Example:
        >>> scaled([1e308, 5e307])
        [1.0, 0.5]
    """
    top = max(weights)
    return [w / top for w in weights]


def _check_runs(runs: Sequence[Run], weights: Sequence[float] | None) -> list[float]:
    if isinstance(runs, Mapping) or not isinstance(runs, Sequence) or len(runs) == 0:
        raise ValueError("runs must be a non-empty list of runs ({query_id: {doc_id: score}})")
    for i, run in enumerate(runs):
        if not isinstance(run, Mapping):
            raise ValueError(f"run #{i} is a {type(run).__name__}, "
                             "not a {query_id: {doc_id: score}} mapping")
    if weights is None:
        return [1.0 / len(runs)] * len(runs)
    weights = [float(w) for w in weights]
    if len(weights) != len(runs):
        raise ValueError(f"got {len(weights)} weights for {len(runs)} runs")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {weights}")
    return weights


def _ranked(scores: Mapping[str, float], top: int | None) -> dict[str, float]:
    items = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    return dict(items[:top] if top is not None else items)


def _queries(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys(q for run in runs for q in run))


def normalize(scores: Mapping[str, float], method: str = "minmax", *,
              theoretical_min: float = 0.0) -> tuple[dict[str, float], float]:
    """Normalise one query's scores; returns (normalised scores, value for a missing document).

    Example:
        >>> normalize({"a": 3.0, "b": 1.0, "c": 2.0})
        ({'a': 1.0, 'b': 0.0, 'c': 0.5}, 0.0)
    """
    if method not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {method!r}: use one of {', '.join(NORMALIZATIONS)}")
    if not scores:
        return {}, 0.0
    vals = list(scores.values())
    if method == "zscore":
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals))
        if std == 0.0:
            return {d: 0.0 for d in scores}, 0.0
        out = {d: (s - mean) / std for d, s in scores.items()}
        return out, min(out.values())
    hi = max(vals)
    lo = min(vals) if method == "minmax" else float(theoretical_min)
    if hi <= lo:  # one score, or all equal (min-max); max not above the theoretical minimum (tmm)
        return {d: (1.0 if hi > lo or method == "minmax" else 0.0) for d in scores}, 0.0
    return {d: (s - lo) / (hi - lo) for d, s in scores.items()}, 0.0


def convex(runs: Sequence[Run], *, weights: Sequence[float] | None = None, normalization: str = "minmax",
           theoretical_mins: Sequence[float] | None = None,
           top: int | None = None) -> dict[str, dict[str, float]]:
    """Convex combination of normalised scores (Bruch et al. 2023); weights (default equal) sum to 1.

    Example:
        >>> convex([{"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1.0}}], weights=[0.3, 0.7])["q"]
        {'b': 0.7, 'a': 0.3}
    """
    weights = scaled(_check_runs(runs, weights))  # scaled first: the sum of 1e308s overflows to inf
    weights = [w / sum(weights) for w in weights]
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}: use one of {', '.join(NORMALIZATIONS)}")
    mins = [0.0] * len(runs) if theoretical_mins is None else [float(m) for m in theoretical_mins]
    if len(mins) != len(runs):
        raise ValueError(f"got {len(mins)} theoretical minimums for {len(runs)} runs")
    out = {}
    for q in _queries(runs):
        normed = [normalize(run.get(q, {}), normalization, theoretical_min=m) for run, m in zip(runs, mins)]
        docs = dict.fromkeys(d for n, _ in normed for d in n)
        fused = {d: sum(w * n.get(d, missing) for w, (n, missing) in zip(weights, normed)) for d in docs}
        out[q] = _ranked(fused, top)
    return out


def rrf(runs: Sequence[Run], *, k: float = 60.0, weights: Sequence[float] | None = None,
        top: int | None = None) -> dict[str, dict[str, float]]:
    """Reciprocal rank fusion (Cormack et al. 2009): ``sum_r w_r / (k + rank)``, ranks from 1.

    Weights default to 1 for every run (the original RRF); weights whose sum overflows are scaled so the
    largest is 1 (the same ranking, finite scores). ``k`` is at most :data:`MAX_RRF_K`.

    Example:
        >>> rrf([{"q": {"a": 9.0, "b": 1.0}}, {"q": {"b": 5.0}}], k=1)["q"]
        {'b': 0.8333333333333333, 'a': 0.5}
    """
    weights = _check_runs(runs, weights if weights is not None else [1.0] * len(runs))
    if not math.isfinite(sum(weights)):  # each score is at most sum(weights) / (k + 1)
        weights = scaled(weights)
    if not isinstance(k, (int, float)) or isinstance(k, bool) or not 0 <= k <= MAX_RRF_K:
        raise ValueError(f"k must be a number in 0..{MAX_RRF_K:.0f}, got {k!r} (with a larger k every rank "
                         "scores about the same)")
    out = {}
    for q in _queries(runs):
        fused: dict[str, float] = {}
        for w, run in zip(weights, runs):
            for rank, d in enumerate(_ranked(run.get(q, {}), None), start=1):
                fused[d] = fused.get(d, 0.0) + w / (k + rank)
        out[q] = _ranked(fused, top)
    return out


def fuse(runs: Sequence[Run], method: str = "convex", *, weights: Sequence[float] | None = None,
         normalization: str = "minmax", k: float = 60.0,
         top: int | None = None) -> dict[str, dict[str, float]]:
    """:func:`rrf` or :func:`convex` by name (what the CLI and HTTP ``fusion`` settings map to).

    Example:
        >>> fuse([{"q": {"a": 1.0}}], "rrf")["q"]
        {'a': 0.01639344262295082}
    """
    if method == "rrf":
        return rrf(runs, k=k, weights=weights, top=top)
    if method == "convex":
        return convex(runs, weights=weights, normalization=normalization, top=top)
    raise ValueError(f"unknown fusion method {method!r}: use one of {', '.join(METHODS)}")


# -- fusion on arrays (what the Searcher runs) --------------------------------------------------------------
_METHOD_CODES = {"rrf": 0, "convex": 1}
_NORM_CODES = {"minmax": 0, "zscore": 1, "tmm": 2}


@njit(cache=True, nogil=True)
def fuse_kernel(rows, scores, counts, weights, mins, method, norm, rrf_k, tiebreak, top, slot, out_rows,
                out_scores, out_counts):
    """Fuse ranked lists into one top list: RRF (Cormack et al. 2009) or convex fusion (Bruch et al. 2023)."""
    # rows/scores: [R, Q, D] padded lists, best first. Sums in list order and breaks ties by tiebreak[row],
    # as rrf() and convex() on dicts do.
    R, Q, D = rows.shape
    touched = np.empty(R * D, np.int64)
    vals = np.empty((R * D, R), np.float64)
    normed = np.empty(D, np.float64)
    ranked = np.empty(D, np.int64)
    missing = np.zeros(R, np.float64)
    for q in range(Q):
        nt = 0
        for r in range(R):
            n = counts[r, q]
            w = weights[r]
            missing[r] = 0.0
            for j in range(n):
                ranked[j] = rows[r, q, j]
            if method == 0:  # ranks count equal scores in tiebreak order, as rrf() on dicts does
                a = 0
                while a < n:
                    b = a + 1
                    while b < n and scores[r, q, b] == scores[r, q, a]:
                        b += 1
                    if b - a > 1:
                        ranked[a:b] = np.sort(ranked[a:b])  # rows of equal score...
                        tk = np.empty(b - a, np.int64)
                        for j in range(a, b):
                            tk[j - a] = tiebreak[ranked[j]]
                        ranked[a:b] = ranked[a:b][np.argsort(tk)]  # ...by tiebreak
                    a = b
                for j in range(n):
                    normed[j] = w / (rrf_k + j + 1)
            elif n > 0:
                if norm == 1:  # z-score
                    mean = 0.0
                    for j in range(n):
                        mean += np.float64(scores[r, q, j])
                    mean /= n
                    var = 0.0
                    for j in range(n):
                        var += (np.float64(scores[r, q, j]) - mean) ** 2
                    std = np.sqrt(var / n)
                    lo = np.inf
                    for j in range(n):
                        z = (np.float64(scores[r, q, j]) - mean) / std if std > 0 else 0.0
                        lo = min(lo, z)
                        normed[j] = w * z
                    missing[r] = w * lo if std > 0 else 0.0
                else:
                    hi = -np.inf
                    lo = np.inf
                    for j in range(n):
                        hi = max(hi, np.float64(scores[r, q, j]))
                        lo = min(lo, np.float64(scores[r, q, j]))
                    if norm == 2:
                        lo = mins[r]
                    for j in range(n):
                        if hi > lo:
                            normed[j] = w * ((np.float64(scores[r, q, j]) - lo) / (hi - lo))
                        else:  # one score or all equal (min-max: 1); max not above the minimum (tmm: 0)
                            normed[j] = w * (1.0 if norm == 0 else 0.0)
            for j in range(n):
                d = ranked[j]
                t = slot[d]
                if t < 0:
                    t = nt
                    slot[d] = t
                    touched[t] = d
                    for x in range(R):
                        vals[t, x] = np.nan  # filled with each list's missing value below
                    nt += 1
                vals[t, r] = normed[j]
        keys = np.empty(nt, np.float64)
        ties = np.empty(nt, np.int64)
        for t in range(nt):
            total = 0.0
            for r in range(R):
                v = vals[t, r]
                total += missing[r] if np.isnan(v) else v
            keys[t] = total
            ties[t] = tiebreak[touched[t]]
        order = np.argsort(ties)
        order = order[np.argsort(-keys[order], kind="mergesort")]
        m = min(top, nt)
        for j in range(m):
            out_rows[q, j] = touched[order[j]]
            out_scores[q, j] = keys[order[j]]
        out_counts[q] = m
        for t in range(nt):
            slot[touched[t]] = -1


def fuse_ranked(parts: Sequence[Ranked], *, weights: Sequence[float], method: str = "convex",
                normalization: str = "minmax", k: float = 60.0, mins: Sequence[float] | None = None,
                n_rows: int, top: int, tiebreak: np.ndarray | None = None) -> Ranked:
    """Fuse ranked lists (:class:`lsr.retrievers.base.Ranked`, one per retriever, same queries) into one
    Ranked of ``top`` rows per query; the array form of :func:`rrf` and :func:`convex`. Ties go to the
    smaller ``tiebreak[row]`` (default: the row; the Searcher passes the rank of each row's id, as the dict
    functions order ties by id). Weights are used as given (normalise them first, as FusionSpec does).

    Example:
        >>> from lsr.retrievers.base import Ranked
        >>> a = Ranked.from_lists([(np.array([0, 1]), np.array([2.0, 1.0]))], k=2)
        >>> b = Ranked.from_lists([(np.array([1]), np.array([0.5]))], k=2)
        >>> fuse_ranked([a, b], weights=[1, 1], method="rrf", n_rows=2, top=2)[0][0].tolist()
        [1, 0]
    """
    nq = len(parts[0])
    depth = max(p.rows.shape[1] for p in parts)
    rows = np.zeros((len(parts), nq, depth), np.int64)
    scores = np.zeros((len(parts), nq, depth), np.float32)
    counts = np.zeros((len(parts), nq), np.int64)
    for i, p in enumerate(parts):
        rows[i, :, :p.rows.shape[1]] = np.maximum(p.rows, 0)
        scores[i, :, :p.scores.shape[1]] = p.scores
        counts[i] = p.counts
    mins = np.zeros(len(parts)) if mins is None else np.asarray(mins, np.float64)
    tiebreak = np.arange(n_rows, dtype=np.int64) if tiebreak is None else np.asarray(tiebreak, np.int64)
    out_rows = np.full((nq, top), -1, np.int64)
    out_scores = np.zeros((nq, top), np.float64)
    out_counts = np.zeros(nq, np.int64)
    slot = np.full(n_rows, -1, np.int64)
    fuse_kernel(rows, scores, counts, np.asarray(weights, np.float64), mins, _METHOD_CODES[method],
                _NORM_CODES[normalization], float(k), tiebreak, int(top), slot, out_rows, out_scores,
                out_counts)
    return Ranked(out_rows, out_scores, out_counts)
