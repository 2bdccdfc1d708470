"""Fusion weights without labels: Bates-Granger weights from how the retrievers' scores co-vary.

The untuned hybrid fuses its retrievers with equal min-max convex weights (:meth:`Manifest.default_fusion`).
:func:`fit_fusion_unlabelled` chooses the weights from the collection itself. It searches every retriever
with pseudo-queries drawn from the documents (:func:`lsr.adapt.data.pseudo_queries`) and, when the user
gives them, with unlabelled queries; pools each query's candidates (the union of every retriever's top
``pool``); and measures over them the covariance ``C`` of the retrievers' normalised scores (min-max, the
fusion's own normalisation; a document missing from a list takes 0, as in fusion).

**Why this works.** Read each retriever's normalised score as an estimate of the same relevance signal:
``s_r = t + e_r``, where ``t`` is what all retrievers try to measure and ``e_r`` is retriever ``r``'s
error, independent of ``t`` but possibly correlated across retrievers (SPLADE and BM25 both match words and
fail on the same vocabulary mismatch). The convex combination with the least error variance is Bates &
Granger's (1969) ``w ∝ Σ_e⁻¹ 1`` over the error covariance ``Σ_e``, which needs labels to measure. But the
score covariance is ``C = σ_t² 1 1ᵀ + Σ_e``, and by the Sherman-Morrison formula ``C⁻¹ 1 = Σ_e⁻¹ 1 /
(1 + σ_t² 1ᵀ Σ_e⁻¹ 1)``: the same direction. So the minimum-variance combination of the *scores*, which
needs no labels, is the Bates-Granger combination of the *errors*. It gives what a label-free signal can
honestly give: retrievers that are near-copies share one vote (two identical retrievers get half a vote
each, not two), and a retriever whose errors are independent of the others' counts fully. It does not
reward a retriever for agreeing with the majority (the failure of consensus and pseudo-label signals, where
two lexical retrievers outvote the dense one), and no pseudo-query's answer enters the weights, so it
cannot learn the shortcut of the easy signal (a sentence copied from a document is answered by exact word
overlap, which pulls the weights to BM25).

**Pseudo-queries, sources taken out.** Without user queries the covariance is measured on the
pseudo-queries' results *with each query's source document removed from every list*: a copied span has a
verbatim answer that every lexical retriever ranks first, a real query has none. What is left is the
neighbourhood of the text (documents about it that do not contain it), where the retrievers' redundancy is
what it is on real queries. Kept in, the source makes the copies look like BM25's strengths (SciFact train
nDCG@10 0.7249 against 0.7291 for equal weights; taken out: 0.7326; ``scripts/labelfree_fusion.py``).

**What it does not do.** The pooled covariance is measured on documents the retrievers chose, so lists that
disagree look negatively correlated (Berkson's selection effect); Bates-Granger reads that as independent
errors, i.e. as diversity, which is the behaviour wanted from fusion but means the fit weighs redundancy,
not quality: it cannot tell a weak retriever from an independent one. It does not find that the lexical
retrievers are useless on a collection (on the script's title-to-abstract set it moves weight to dense and
gains, but the best is dense alone). And without user queries it knows nothing of their style: on queries
that copy a document's words (where BM25 alone is near perfect) the collection-only weights lose to equal
weights; given those queries' texts (no labels) the fit moves to BM25 and gains. Pass the users' queries
when there are any.

Guard rails:

* A retriever that finds the source document of a copied span (in its top ``pool``) less than a third as
  often as the best retriever does is broken for this collection (a wrong model, random scores): its
  weight is 0. This is the one use of the easy signal, and it is a pass/fail check, not a weight: any
  working retriever passes it, and without it the covariance alone would give random scores a full vote.
* The weights are solved under ``w >= 0`` (every subset of retrievers, the best feasible one) with a tiny
  ridge, so exact copies get an even split and the answer is never NaN.
* Shrinkage towards equal weights (James-Stein, positive part): ``w = (1 - λ) w_BG + λ / R`` with ``λ`` the
  bootstrap variance of ``w_BG`` over the queries divided by its squared distance from equal weights; few or
  unstable queries give weights near the untuned default.

Example:
    >>> from lsr.adapt.fusion import fit_fusion_unlabelled
    >>> fit = fit_fusion_unlabelled(Searcher.load("my-index"))         # doctest: +SKIP
    >>> fit.weights                                                     # doctest: +SKIP
    {'sparse': 0.29, 'dense': 0.37, 'bm25': 0.34}
    >>> write_fusion("my-index", fit.fusion)   # lsr.tuning.write_fusion   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from lsr.adapt.data import pseudo_queries
from lsr.params import NORMALIZATIONS
from lsr.retrievers.base import Ranked

#: the signal recorded in the fusion's "tuned" section
SIGNAL = "bates-granger: minimum-variance weights of pooled normalised scores"
#: most retrievers a fit weighs (every subset of them is tried)
MAX_RETRIEVERS = 8


@dataclass
class WeightFit:
    """What :func:`label_free_weights` found: ``weights`` (>= 0, sum 1), the Bates-Granger weights before
    shrinkage (``raw``), the shrinkage ``lam``, the score ``covariance`` and ``correlation`` of the pooled
    candidates, the ``t`` statistics of each covariance (over queries), which retrievers were ``kept``, and
    the counts of ``queries`` and pooled ``pairs``."""

    weights: np.ndarray
    raw: np.ndarray
    lam: float
    covariance: np.ndarray
    correlation: np.ndarray
    t: np.ndarray
    kept: np.ndarray
    queries: int
    pairs: int


@dataclass
class LabelFreeFusion:
    """A label-free fusion fit: ``fusion`` (the dict to record, as :func:`lsr.tuning.write_fusion` takes),
    ``weights`` by retriever, and the :class:`WeightFit` diagnostics (``fit``)."""

    fusion: dict
    weights: dict[str, float]
    names: list[str]
    fit: WeightFit
    source: str
    facts: dict = field(default_factory=dict)


def _normalised(scores: np.ndarray, normalization: str, theoretical_min: float) -> tuple[np.ndarray, float]:
    """One list's normalised scores and the value a missing document takes (as in fusion)."""
    s = scores.astype(np.float64)
    if s.size == 0:
        return s, 0.0
    if normalization == "zscore":
        std = s.std()
        if std == 0:
            return np.zeros_like(s), 0.0
        z = (s - s.mean()) / std
        return z, float(z.min())
    hi = float(s.max())
    lo = float(s.min()) if normalization == "minmax" else float(theoretical_min)
    if hi <= lo:
        return np.full_like(s, 1.0 if normalization == "minmax" else 0.0), 0.0
    return (s - lo) / (hi - lo), 0.0


def _check_parts(parts: Sequence[Ranked], *, least: int = 2) -> None:
    if isinstance(parts, Ranked) or not isinstance(parts, Sequence) or len(parts) < least:
        raise ValueError(f"parts must be a list of at least {least} Ranked lists (one per retriever)")
    if len(parts) > MAX_RETRIEVERS:
        raise ValueError(f"at most {MAX_RETRIEVERS} retrievers can be weighed, got {len(parts)}")
    for i, p in enumerate(parts):
        if not isinstance(p, Ranked):
            raise ValueError(f"parts[{i}] is a {type(p).__name__}, not a Ranked")
    n = {len(p) for p in parts}
    if len(n) != 1:
        raise ValueError(f"the retrievers' lists cover different numbers of queries: {sorted(n)}")
    if n == {0}:
        raise ValueError("no queries: the lists are empty")


def pooled_scores(parts: Sequence[Ranked], *, pool: int = 20, normalization: str = "minmax",
                  mins: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query's candidates (the union of every retriever's top ``pool``) with every retriever's
    normalised score for them (a document missing from a list takes that list's missing value, as in fusion).
    Returns ``(X, q)``: ``X[j, r]`` the score of pooled pair ``j`` by retriever ``r``, ``q[j]`` its query.

    Example:
        >>> a = Ranked.from_lists([(np.array([0, 1]), np.array([2.0, 1.0]))], k=2)
        >>> b = Ranked.from_lists([(np.array([1]), np.array([5.0]))], k=2)
        >>> pooled_scores([a, b], pool=2)[0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    _check_parts(parts)
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be a positive integer, got {pool!r}")
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    mins = [0.0] * len(parts) if mins is None else [float(m) for m in mins]
    if len(mins) != len(parts):
        raise ValueError(f"got {len(mins)} theoretical minimums for {len(parts)} retrievers")
    xs, qs = [], []
    for i in range(len(parts[0])):
        lists = [p[i] for p in parts]
        cand = np.unique(np.concatenate([rows[:pool] for rows, _ in lists]))
        if cand.size == 0:
            continue
        x = np.empty((cand.size, len(parts)))
        for r, ((rows, scores), m) in enumerate(zip(lists, mins)):
            normed, missing = _normalised(scores, normalization, m)
            x[:, r] = missing
            if rows.size:
                order = np.argsort(rows, kind="stable")
                at = np.searchsorted(rows[order], cand)
                found = (at < rows.size) & (rows[order][np.minimum(at, rows.size - 1)] == cand)
                x[found, r] = normed[order][at[found]]
        xs.append(x)
        qs.append(np.full(cand.size, i, np.int64))
    if not xs:
        raise ValueError("no query has any result: nothing to measure")
    return np.concatenate(xs), np.concatenate(qs)


def query_covariances(X: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per query, the covariance of the retrievers' scores over its pooled candidates: ``[queries, R, R]``
    (each query counts once, however many candidates it pooled)."""
    _, start, counts = np.unique(q, return_index=True, return_counts=True)
    out = np.empty((start.size, X.shape[1], X.shape[1]))
    for k, (a, n) in enumerate(zip(start, counts)):
        x = X[a:a + n] - X[a:a + n].mean(axis=0)
        out[k] = x.T @ x / n
    return out


def min_variance_weights(cov: np.ndarray, *, ridge: float = 1e-6) -> np.ndarray:
    """The convex weights ``w >= 0``, ``sum(w) = 1``, minimising ``w' C w`` (Bates & Granger 1969: ``w ∝
    C⁻¹ 1`` on the best subset whose solution is non-negative); ``ridge`` (times the mean variance) splits
    exact copies evenly. Equal weights when ``C`` is 0.

    Example:
        >>> C = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])    # two copies, one other
        >>> min_variance_weights(C).round(3).tolist()
        [0.25, 0.25, 0.5]
    """
    C = np.asarray(cov, np.float64)
    R = C.shape[0]
    if C.shape != (R, R) or not np.isfinite(C).all():
        raise ValueError("cov must be a finite square matrix")
    scale = float(np.trace(C)) / R
    if scale <= 0:
        return np.full(R, 1.0 / R)
    C = (C + C.T) / 2 + ridge * scale * np.eye(R)
    best, best_v = None, math.inf
    for size in range(R, 0, -1):
        for subset in itertools.combinations(range(R), size):
            S = list(subset)
            try:
                w_s = np.linalg.solve(C[np.ix_(S, S)], np.ones(len(S)))
            except np.linalg.LinAlgError:
                continue
            if w_s.sum() <= 0 or (w_s < -1e-12).any():
                continue
            w = np.zeros(R)
            w[S] = np.clip(w_s, 0, None) / np.clip(w_s, 0, None).sum()
            v = float(w @ C @ w)
            if v < best_v - 1e-15:
                best, best_v = w, v
    return best if best is not None else np.full(R, 1.0 / R)


def _fit(covs: np.ndarray, keep: np.ndarray, ridge: float) -> np.ndarray:
    w = np.zeros(covs.shape[1])
    idx = np.flatnonzero(keep)
    w[idx] = min_variance_weights(covs.mean(axis=0)[np.ix_(idx, idx)], ridge=ridge)
    return w


def without_sources(parts: Sequence[Ranked], sources: Sequence[int]) -> list[Ranked]:
    """The lists with each query's source document (``sources[i]``, a row) taken out: what is left of a
    pseudo-query's results once the verbatim answer is gone.

    Example:
        >>> a = Ranked.from_lists([(np.array([4, 2]), np.array([2.0, 1.0]))], k=2)
        >>> without_sources([a], [4])[0][0][0].tolist()
        [2]
    """
    _check_parts(parts, least=1)
    src = np.asarray(sources, np.int64)
    if src.shape != (len(parts[0]),):
        raise ValueError(f"got {src.size} sources for {len(parts[0])} queries")
    out = []
    for p in parts:
        lists = []
        for i in range(len(p)):
            rows, scores = p[i]
            keep = rows != src[i]
            lists.append((rows[keep], scores[keep]))
        out.append(Ranked.from_lists(lists, k=p.rows.shape[1]))
    return out


def source_recall(parts: Sequence[Ranked], sources: Sequence[int], *, pool: int = 20) -> np.ndarray:
    """Per retriever, the share of pseudo-queries whose source document (a row) it ranks in its top
    ``pool``: a sanity check (a text copied from a document finds it), not a quality measure.

    Example:
        >>> a = Ranked.from_lists([(np.array([4, 2]), np.array([2.0, 1.0]))] * 2, k=2)
        >>> source_recall([a], [2, 5], pool=2).tolist()
        [0.5]
    """
    _check_parts(parts, least=1)
    src = np.asarray(sources, np.int64)
    if src.shape != (len(parts[0]),):
        raise ValueError(f"got {src.size} sources for {len(parts[0])} queries")
    return np.array([float(np.mean([src[i] in p[i][0][:pool] for i in range(len(p))])) for p in parts])


def label_free_weights(parts: Sequence[Ranked], *, pool: int = 20, normalization: str = "minmax",
                       mins: Sequence[float] | None = None, keep: Sequence[bool] | None = None,
                       shrink: float | None = None, bootstrap: int = 200, seed: int = 0,
                       ridge: float = 1e-6) -> WeightFit:
    """Convex fusion weights for ``parts`` (one :class:`Ranked` per retriever, the same queries) from how
    their scores co-vary (see the module docstring). ``keep``: which retrievers may get weight (default
    all; the others get 0). ``shrink``: a fixed shrinkage towards equal weights (over those kept) in [0, 1]
    (default: estimated from ``bootstrap`` resamples of the queries).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> lists = [(np.arange(20), np.sort(rng.random(20))[::-1]) for _ in range(30)]
        >>> a = Ranked.from_lists(lists, k=20)
        >>> label_free_weights([a, a], bootstrap=0).weights.round(3).tolist()   # two copies: an even split
        [0.5, 0.5]
    """
    if shrink is not None and (isinstance(shrink, bool) or not isinstance(shrink, (int, float))
                               or not 0 <= shrink <= 1):
        raise ValueError(f"shrink must be a number in [0, 1] or None, got {shrink!r}")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 0:
        raise ValueError(f"bootstrap must be an integer >= 0, got {bootstrap!r}")
    X, q = pooled_scores(parts, pool=pool, normalization=normalization, mins=mins)
    R = len(parts)
    keep = np.ones(R, bool) if keep is None else np.asarray(keep, bool)
    if keep.shape != (R,) or not keep.any():
        raise ValueError(f"keep must name at least one of the {R} retrievers (a list of {R} booleans)")
    covs = query_covariances(X, q)
    nq = covs.shape[0]
    mean = covs.mean(axis=0)
    se = covs.std(axis=0) / math.sqrt(max(nq - 1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, mean / se, 0.0)
        d = np.sqrt(np.clip(np.diag(mean), 0, None))
        corr = np.where(np.outer(d, d) > 0, mean / np.outer(d, d), 0.0)
    raw = _fit(covs, keep, ridge)
    equal = keep / keep.sum()  # equal weights over the retrievers kept
    if shrink is None:
        if bootstrap and nq > 1:
            rng = np.random.default_rng(seed)
            boot = np.array([_fit(covs[rng.integers(nq, size=nq)], keep, ridge) for _ in range(bootstrap)])
            spread = float(boot.var(axis=0).sum())
            dist = float(((raw - equal) ** 2).sum())
            lam = 1.0 if dist <= 0 else min(1.0, spread / dist)
        else:
            lam = 0.0 if nq > 1 else 1.0
    else:
        lam = float(shrink)
    w = (1 - lam) * raw + lam * equal
    w = w / w.sum()
    return WeightFit(weights=w, raw=raw, lam=lam, covariance=mean, correlation=corr, t=t, kept=keep,
                     queries=nq, pairs=int(X.shape[0]))


def _check_names(searcher, names: Sequence[str] | None) -> list[str]:
    have = list(searcher.retrievers)
    if names is None:
        names = list(searcher.collection.manifest.fused_by_default)
    elif isinstance(names, str) or not isinstance(names, Sequence):
        raise ValueError(f"names must be a list of retriever names, got {type(names).__name__}")
    names = list(names)
    for n in names:
        if n not in have:
            raise ValueError(f"no retriever {n!r} in this collection (it has {', '.join(have)})")
    if len(set(names)) != len(names):
        raise ValueError(f"names repeats a retriever: {names}")
    if len(names) < 2:
        raise ValueError(f"fusion needs at least 2 retrievers, got {names}: nothing to weigh")
    return names


def _check_queries(queries: Sequence[str]) -> list[str]:
    if isinstance(queries, str) or not isinstance(queries, Sequence):
        raise ValueError(f"queries must be a list of query texts, got {type(queries).__name__}")
    bad = next((i for i, t in enumerate(queries) if not isinstance(t, str)), None)
    if bad is not None:
        raise ValueError(f"queries[{bad}] is a {type(queries[bad]).__name__}, not a text")
    texts = [t for t in queries if t.strip()]
    if len(texts) < 2:
        raise ValueError(f"label-free fusion needs at least 2 non-empty queries, got {len(texts)}")
    return texts


def fit_fusion_unlabelled(searcher, queries: Sequence[str] | None = None, *,
                          names: Sequence[str] | None = None, depth: int = 100, pool: int = 20,
                          normalization: str = "minmax", n_pseudo: int = 1000, seed: int = 0,
                          min_recall: float = 1 / 3, shrink: float | None = None,
                          speed: str = "safe") -> LabelFreeFusion:
    """Convex fusion weights for ``names`` (default: the retrievers an untuned hybrid fuses) without labels.

    ``n_pseudo`` pseudo-queries are drawn from the documents (:func:`lsr.adapt.data.pseudo_queries`) and
    every retriever searched once with them (``depth`` hits). A retriever that finds the source document of
    fewer than ``min_recall`` times as many of them (in its top ``pool``) as the best retriever does is
    broken for this collection and gets weight 0. The weights come from :func:`label_free_weights` over the
    user's unlabelled ``queries`` when given, else over the pseudo-queries' results with each source
    document taken out. ValueError names bad input.

    Example:
        >>> fit = fit_fusion_unlabelled(searcher, ["fever after a tick bite", "aspirin and colon cancer"])
        ...                                                                   # doctest: +SKIP
        >>> fit.fusion["tuned"]["labels"], sum(fit.weights.values())          # doctest: +SKIP
        (False, 1.0)
    """
    names = _check_names(searcher, names)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, got {depth!r}")
    if isinstance(pool, bool) or not isinstance(pool, int) or not 1 <= pool <= depth:
        raise ValueError(f"pool must be an integer in 1..depth ({depth}), got {pool!r}")
    if isinstance(min_recall, bool) or not isinstance(min_recall, (int, float)) or not 0 <= min_recall <= 1:
        raise ValueError(f"min_recall must be a number in [0, 1], got {min_recall!r}")
    texts = None if queries is None else _check_queries(queries)
    probes = pseudo_queries(searcher.collection, n=n_pseudo, seed=seed)
    sources = [next(iter(p)) for p in probes.positives]

    def search(batch: list[str]) -> list[Ranked]:
        out = []
        for n in names:
            results = searcher.query(batch, searcher.params(k=depth, mode=n, speed=speed), annotate=False)
            out.append(Ranked.from_lists([(r.rows, r.scores) for r in results], k=depth))
        return out

    probe_parts = search(probes.texts)
    recall = source_recall(probe_parts, sources, pool=pool)
    keep = recall >= min_recall * recall.max() if recall.max() > 0 else np.ones(len(names), bool)
    if texts is None:
        parts, source = without_sources(probe_parts, sources), "pseudo-queries, sources taken out"
    else:
        parts, source = search(texts), "queries"
    mins = [searcher.retriever(n).theoretical_min for n in names]
    fit = label_free_weights(parts, pool=pool, normalization=normalization, mins=mins, keep=keep,
                             shrink=shrink, seed=seed)
    weights = {n: round(float(w), 4) for n, w in zip(names, fit.weights)}

    def by_name(values: np.ndarray) -> dict[str, float]:
        return {n: round(float(v), 4) for n, v in zip(names, values)}

    tuned = {"labels": False, "signal": SIGNAL, "source": source, "queries": fit.queries, "pool": pool,
             "shrink": round(fit.lam, 4), "raw": by_name(fit.raw), "source_recall": by_name(recall),
             "left_out": [n for n, k in zip(names, keep) if not k],
             "correlation": [[round(float(c), 4) for c in row] for row in fit.correlation]}
    fusion = {"method": "convex", "normalization": normalization, "weights": weights, "depth": depth,
              "tuned": tuned}
    return LabelFreeFusion(fusion=fusion, weights=weights, names=names, fit=fit, source=source,
                           facts={"pairs": fit.pairs, "pseudo_queries": len(probes)})
