"""The query-weight trainer of ``lsr adapt``: one weight per vocabulary token, fitted to the collection.

The model is an inference-free sparse query (Geng et al. 2024, "Towards Competitive Search Relevance for
Inference-Free Learned Sparse Retrievers"): a query is its set of WordPiece tokens T(q), its vector
``{t: w[t] for t in T(q) if w[t] > 0}``, and ``score(q, d) = sum_t w[t] * D[d, t]`` over the frozen SPLADE
document vectors D. Training is numpy + Numba (a vocabulary-sized linear model; no torch).

Parametrisation (why): real queries carry tokens that no training query had (on SciFact, 342 of the
2,003 distinct test-query tokens are in no train query), so a free weight per token alone would leave
those at their initial value, fitted to nothing. Here

    w[t] = g(init[t]) = a * s * (init[t] / s) ** p     tokens in fewer than ``min_queries`` training queries
    w[t] = free, >= 0, prior/2 * ((w[t] - g(init[t])) / s)**2    the others (default: any token seen once)

``init`` is the IDF table that ``sparse-idf`` uses, ``s`` its mean over the training tokens (the fit is
invariant to the scale of ``init`` and, through the temperature below, of D). The global map (a, p) is
fitted jointly: it learns how much sharper or flatter than IDF the collection wants its weights (p > 1:
rare tokens matter more than IDF says) and carries that to unseen tokens; the per-token residuals are
shrunk towards it by an l2 ``prior`` counted in training queries (its weight is ``prior / n_queries``
against the mean loss per query: a token seen in a few queries moves little, one seen in many follows its
data), a hierarchical (MAP) model in place of hard per-token freedom.

Loss, per query: multi-positive listwise softmax cross-entropy ``-log sum_pos softmax(score / tau)`` over
its candidates (hard negatives mined by the caller) plus in-batch negatives (the other queries'
positives in the mini-batch); optionally ``distill * KL(teacher softmax || student softmax)`` over the
candidates where a teacher scored them (teacher scores are standardised per query, so any score scale
works). ``tau`` is ``temperature`` times the mean per-query spread (standard deviation) of the initial
scores, which makes the fit invariant to the scale of D.

Regulariser: the FLOPS regulariser (Paria et al. 2020, "Minimizing FLOPs to Learn Efficient Sparse
Representations"; Formal et al. 2021, SPLADE) counts the postings a query touches; for a model whose query
weights do not depend on the query, its l1 relaxation is ``l1 * E_q[sum_{t in q} (df[t] / N) * w[t] / s]``,
each token's weight penalised by its posting-list length: a document-frequency-aware l1, the query-side
counterpart of Geng et al.'s IDF-aware FLOPS (frequent tokens cost most, rare ones are nearly free).
Its weight ramps up quadratically over ``warmup`` steps as in SPLADE. Adam (Kingma & Ba 2015) with a
proximal step for the l1 and the projection on w >= 0 (Parikh & Boyd 2014), so a token's weight reaches
exactly 0 (pruned) and stays there while its gradient is below its penalty; the learning rate is constant
for half the steps, then decays linearly. Deterministic for a seed (one thread, fixed order).

Example:
    >>> ts = TrainingSet.from_lists([[3, 7]], [[0, 1, 2]], [[1, 0, 0]])               # doctest: +SKIP
    >>> fit = fit_weights(ts, index.forward(), index.scale, idf, epochs=5)           # doctest: +SKIP
    >>> candidate_ndcg(fit.weights, ts, features(index.forward(), index.scale, ts))   # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lsr.adapt import _kernels as K

__all__ = ["TrainingSet", "FitResult", "features", "feature_offsets", "fit_weights", "candidate_ndcg",
           "query_cost"]

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8
#: queries whose initial score spread sets the temperature's unit
_SPREAD_SAMPLE = 2000
#: with ``epochs=None``: at least this many optimiser steps, within [_MIN_EPOCHS, _MAX_EPOCHS] epochs
_AUTO_STEPS, _MIN_EPOCHS, _MAX_EPOCHS = 500, 3, 30
#: candidate features are computed once when there are at most this many (float32: 4 bytes each)
_CACHE_FEATURES = 1 << 26


def _gather(ptr: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows ``idx`` of ``ptr``: (new ptr, positions of their entries in the old flat array)."""
    lengths = ptr[idx + 1] - ptr[idx]
    new_ptr = np.zeros(idx.size + 1, np.int64)
    np.cumsum(lengths, out=new_ptr[1:])
    starts = np.repeat(ptr[idx] - new_ptr[:-1], lengths)
    return new_ptr, np.arange(new_ptr[-1], dtype=np.int64) + starts


def _check_ptr(name: str, ptr: Any, n_entries: int, n_queries: int | None = None) -> None:
    if not isinstance(ptr, np.ndarray) or ptr.dtype != np.int64 or ptr.ndim != 1 or ptr.size < 1:
        raise ValueError(f"{name} must be a 1-D int64 array of n_queries + 1 offsets")
    if n_queries is not None and ptr.size != n_queries + 1:
        raise ValueError(f"{name} has {ptr.size} offsets, expected {n_queries + 1} (one per query + 1)")
    if ptr[0] != 0 or ptr[-1] != n_entries or np.any(np.diff(ptr) < 0):
        raise ValueError(f"{name} must rise from 0 to {n_entries} (the length of its flat array)")


def _check_flat(name: str, a: Any, dtype: type) -> None:
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D {np.dtype(dtype).name} array")


def _first_duplicate(ptr: np.ndarray, values: np.ndarray) -> int:
    """Index of the first query holding a value twice, or -1."""
    owner = np.repeat(np.arange(ptr.size - 1), np.diff(ptr))
    order = np.lexsort((values, owner))
    same = (np.diff(owner[order]) == 0) & (np.diff(values[order]) == 0)
    return int(owner[order][1:][same][0]) if same.any() else -1


@dataclass(frozen=True)
class TrainingSet:
    """Training queries for :func:`fit_weights`, as flat arrays (CSR per query).

    ``q_tokens[q_ptr[i]:q_ptr[i+1]]`` are query ``i``'s unique vocabulary ids (int32);
    ``c_rows[c_ptr[i]:c_ptr[i+1]]`` its candidate document rows (int64, unique per query), ``c_label`` their
    graded relevance (float32, 0 = negative) and ``c_teacher`` optional teacher scores (float32; all NaN
    for a query without a teacher).

    Example:
        >>> ts = TrainingSet.from_lists([[5, 9], [2]], [[0, 3, 4], [1, 2]], [[1, 0, 0], [0, 2]])
        >>> ts.n_queries, ts.subset([1]).c_rows.tolist()
        (2, [1, 2])
    """

    q_ptr: np.ndarray
    q_tokens: np.ndarray
    c_ptr: np.ndarray
    c_rows: np.ndarray
    c_label: np.ndarray
    c_teacher: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check_flat("q_tokens", self.q_tokens, np.int32)
        _check_ptr("q_ptr", self.q_ptr, self.q_tokens.size)
        n = self.q_ptr.size - 1
        _check_flat("c_rows", self.c_rows, np.int64)
        _check_ptr("c_ptr", self.c_ptr, self.c_rows.size, n)
        _check_flat("c_label", self.c_label, np.float32)
        if self.c_label.size != self.c_rows.size:
            raise ValueError(f"c_label has {self.c_label.size} values for {self.c_rows.size} candidates")
        if self.q_tokens.size and self.q_tokens.min() < 0:
            raise ValueError("q_tokens must be vocabulary ids >= 0")
        if self.c_rows.size and self.c_rows.min() < 0:
            raise ValueError("c_rows must be document rows >= 0")
        if not np.all(np.isfinite(self.c_label)) or (self.c_label.size and self.c_label.min() < 0):
            raise ValueError("c_label must be finite relevance grades >= 0")
        for name, ptr, values in (("token", self.q_ptr, self.q_tokens),
                                  ("candidate", self.c_ptr, self.c_rows)):
            dup = _first_duplicate(ptr, values)
            if dup >= 0:
                raise ValueError(f"query {dup} lists a {name} twice ({name}s must be unique per query)")
        if self.c_teacher is not None:
            _check_flat("c_teacher", self.c_teacher, np.float32)
            if self.c_teacher.size != self.c_rows.size:
                raise ValueError(f"c_teacher has {self.c_teacher.size} values for {self.c_rows.size} "
                                 f"candidates")
            if np.any(np.isinf(self.c_teacher)):
                raise ValueError("c_teacher must be finite scores (NaN = no teacher for that query)")
            lengths = np.diff(self.c_ptr)
            owner = np.repeat(np.arange(n), lengths)
            counts = np.bincount(owner[np.isnan(self.c_teacher)], minlength=n)
            mixed = np.flatnonzero((counts > 0) & (counts < lengths))
            if mixed.size:
                raise ValueError(f"query {int(mixed[0])} has teacher scores for some candidates only "
                                 f"(give all of them or none: NaN)")

    @classmethod
    def from_lists(cls, tokens: Sequence[Sequence[int]], rows: Sequence[Sequence[int]],
                   labels: Sequence[Sequence[float]],
                   teacher: Sequence[Sequence[float] | None] | None = None) -> "TrainingSet":
        """Build from per-query lists (``teacher[i]`` None = no teacher for query ``i``).

        Example:
            >>> TrainingSet.from_lists([[1, 2]], [[7, 8]], [[1, 0]], teacher=[[0.9, 0.1]]).n_queries
            1
        """
        if not (len(tokens) == len(rows) == len(labels)) or \
                (teacher is not None and len(teacher) != len(rows)):
            raise ValueError("tokens, rows, labels (and teacher) must have one entry per query")
        for i, (r, lab) in enumerate(zip(rows, labels)):
            if len(r) != len(lab):
                raise ValueError(f"query {i} has {len(r)} candidates and {len(lab)} labels")

        def ptr(lists: Sequence[Sequence[Any]]) -> np.ndarray:
            return np.concatenate([[0], np.cumsum([len(x) for x in lists])]).astype(np.int64)

        def flat(lists: Sequence[Sequence[Any]], dtype: type) -> np.ndarray:
            return np.asarray([v for x in lists for v in x], dtype=dtype).reshape(-1)

        c_teacher = None
        if teacher is not None:
            c_teacher = np.concatenate(
                [np.full(len(r), np.nan, np.float32) if t is None else np.asarray(t, np.float32).reshape(-1)
                 for r, t in zip(rows, teacher)] or [np.zeros(0, np.float32)])
            if c_teacher.size != sum(len(r) for r in rows):
                raise ValueError("teacher must give one score per candidate (or None for the query)")
        return cls(ptr(tokens), flat(tokens, np.int32), ptr(rows), flat(rows, np.int64),
                   flat(labels, np.float32), c_teacher)

    @property
    def n_queries(self) -> int:
        """Number of queries."""
        return self.q_ptr.size - 1

    def subset(self, idx: Any) -> "TrainingSet":
        """The queries ``idx`` (an integer sequence), in that order."""
        idx = np.asarray(idx)
        if idx.ndim != 1 or (idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0
                                          or idx.max() >= self.n_queries)):
            raise ValueError(f"subset indices must be query numbers in [0, {self.n_queries})")
        idx = idx.astype(np.int64)
        q_ptr, q_pos = _gather(self.q_ptr, idx)
        c_ptr, c_pos = _gather(self.c_ptr, idx)
        return TrainingSet(q_ptr, self.q_tokens[q_pos], c_ptr, self.c_rows[c_pos], self.c_label[c_pos],
                           None if self.c_teacher is None else self.c_teacher[c_pos])

    def split(self, holdout_fraction: float, seed: int = 0) -> tuple["TrainingSet", "TrainingSet"]:
        """(train, held): a random ``holdout_fraction`` of the queries held out (at least one each side),
        both in their original order."""
        if not isinstance(holdout_fraction, (int, float)) or not 0.0 < holdout_fraction < 1.0:
            raise ValueError(f"holdout_fraction must be in (0, 1), not {holdout_fraction!r}")
        if self.n_queries < 2:
            raise ValueError(f"cannot split {self.n_queries} query(ies) into train and held-out parts")
        n_held = min(max(1, round(self.n_queries * holdout_fraction)), self.n_queries - 1)
        perm = np.random.default_rng(seed).permutation(self.n_queries)
        return self.subset(np.sort(perm[n_held:])), self.subset(np.sort(perm[:n_held]))


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_weights` returns: ``weights`` (float32 per vocabulary token, >= 0, 0 = token
    dropped from queries), ``history`` (one dict per epoch: ``loss``, ``ce``, ``kl``, ``penalty``, the
    mean ``postings`` a training query touches, ``valid_ndcg``; entry 0 = the start, without losses) and
    ``facts`` (steps, seconds, the fitted global map ``map_a``/``map_p``, free and pruned tokens, ...).

    Example:
        >>> fit = fit_weights(ts, index.forward(), index.scale, idf)                     # doctest: +SKIP
        >>> fit.history[-1]["loss"] < fit.history[1]["loss"], fit.history[0]["postings"]  # doctest: +SKIP
        (True, 10350.1)
    """

    weights: np.ndarray
    history: list[dict] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def _check_forward(forward: Any, scale: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    if not isinstance(forward, (tuple, list)) or len(forward) != 3 or \
            not all(isinstance(a, np.ndarray) and a.ndim == 1 for a in forward):
        raise ValueError("forward must be the index's (indptr, terms, impacts) arrays "
                         "(SparseIndex.forward())")
    indptr, terms, impacts = forward
    if indptr.dtype.kind not in "iu" or terms.dtype.kind not in "iu" or impacts.dtype.kind not in "uif" \
            or indptr.size < 1 or terms.size != impacts.size or indptr[0] != 0 or indptr[-1] != terms.size:
        raise ValueError("forward arrays are inconsistent (indptr must run from 0 to len(terms) == "
                         "len(impacts))")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.floating)) or \
            not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive number, not {scale!r}")
    return indptr, terms, impacts, float(scale)


def _check_rows(ts: TrainingSet, n_docs: int) -> None:
    if ts.c_rows.size and ts.c_rows.max() >= n_docs:
        raise ValueError(f"candidate row {int(ts.c_rows.max())} is outside the collection's "
                         f"{n_docs} documents")


def feature_offsets(ts: TrainingSet) -> np.ndarray:
    """Start of each query's ``n_cand x n_tok`` block in :func:`features`' array (int64, n_queries + 1).

    Example:
        >>> feature_offsets(TrainingSet.from_lists([[1, 2]], [[7, 8, 9]], [[1, 0, 0]])).tolist()
        [0, 6]
    """
    sizes = np.diff(ts.q_ptr) * np.diff(ts.c_ptr)
    out = np.zeros(ts.n_queries + 1, np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


def features(forward: Any, scale: float, ts: TrainingSet) -> np.ndarray:
    """D[c, t] (float32) for every query, candidate and query token: query ``i``'s row-major
    ``n_cand x n_tok`` block starts at ``feature_offsets(ts)[i]``.

    Example:
        >>> x = features(index.forward(), index.scale, ts)                                  # doctest: +SKIP
    """
    indptr, terms, impacts, scale = _check_forward(forward, scale)
    _check_rows(ts, indptr.size - 1)
    x_ptr = feature_offsets(ts)
    out = np.empty(int(x_ptr[-1]), np.float32)
    K.fill_features(indptr, terms, impacts, scale, ts.q_ptr, ts.q_tokens, ts.c_ptr, ts.c_rows, x_ptr, out)
    return out


def _check_weights(name: str, w: Any, ts: TrainingSet | None = None) -> np.ndarray:
    if not isinstance(w, np.ndarray) or w.ndim != 1 or w.dtype.kind != "f" or w.size == 0:
        raise ValueError(f"{name} must be a 1-D float array over the vocabulary")
    if not np.all(np.isfinite(w)) or w.min() < 0:
        raise ValueError(f"{name} must be finite and >= 0")
    if ts is not None and ts.q_tokens.size and ts.q_tokens.max() >= w.size:
        raise ValueError(f"query token {int(ts.q_tokens.max())} is outside the vocabulary of {w.size} "
                         f"({name} has one value per token)")
    return w


def candidate_ndcg(weights: np.ndarray, ts: TrainingSet, feats: np.ndarray, *, k: int = 10) -> float:
    """Mean nDCG@k of re-ranking each query's candidates by ``weights`` (labels: ``c_label``; ties by row);
    queries without a positive candidate are skipped.

    Example:
        >>> candidate_ndcg(fit.weights, held, features(fwd, scale, held), k=10)            # doctest: +SKIP
        0.71
    """
    w = _check_weights("weights", weights, ts).astype(np.float64)
    x_ptr = feature_offsets(ts)
    if not isinstance(feats, np.ndarray) or feats.ndim != 1 or feats.size != x_ptr[-1]:
        raise ValueError(f"feats must be features(..., ts) for this training set ({int(x_ptr[-1])} values)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, not {k!r}")
    out = np.empty(ts.n_queries, np.float64)
    K.candidate_gains(ts.q_ptr, ts.q_tokens, ts.c_ptr, ts.c_rows, ts.c_label.astype(np.float64), x_ptr,
                      feats.astype(np.float32, copy=False), w, int(k), out)
    scored = out[~np.isnan(out)]
    if scored.size == 0:
        raise ValueError("no query has a positive candidate: nDCG is undefined")
    return float(scored.mean())


def query_cost(weights: np.ndarray, ts: TrainingSet, df: np.ndarray) -> float:
    """Average number of postings a query touches: sum of ``df`` over its tokens with weight > 0.

    Example:
        >>> query_cost(np.ones(3), TrainingSet.from_lists([[0, 2]], [[0]], [[1]]), np.array([5, 1, 2]))
        7.0
    """
    w = _check_weights("weights", weights, ts)
    df = np.asarray(df)
    if df.ndim != 1 or df.size != w.size or df.dtype.kind not in "iuf" or \
            not np.all(np.isfinite(df)) or (df.size and df.min() < 0):
        raise ValueError(f"df must be {w.size} non-negative posting-list lengths (one per token)")
    if ts.n_queries == 0:
        raise ValueError("query_cost needs at least one query")
    touched = np.where(w[ts.q_tokens] > 0, df[ts.q_tokens], 0).astype(np.float64)
    return float(touched.sum() / ts.n_queries)


def _positive(name: str, v: Any, *, integer: bool = False, zero: bool = False) -> None:
    ok_type = isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.floating))
    if isinstance(v, bool) or not ok_type or not math.isfinite(v) or v < 0 or (v == 0 and not zero):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} {'>= 0' if zero else '> 0'}, not {v!r}")


def _teacher_z(ts: TrainingSet, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-query standardised teacher scores / temperature (0 where none) and the per-query has-teacher."""
    n = ts.n_queries
    if ts.c_teacher is None or ts.c_rows.size == 0:
        return np.zeros(ts.c_rows.size, np.float64), np.zeros(n, np.bool_)
    t = ts.c_teacher.astype(np.float64)
    lengths = np.diff(ts.c_ptr)
    owner = np.repeat(np.arange(n), lengths)
    has = np.zeros(n, np.bool_)
    has[owner[~np.isnan(t)]] = True
    t = np.where(np.isnan(t), 0.0, t)
    cnt = np.maximum(lengths, 1)
    mean = np.bincount(owner, t, n) / cnt
    var = np.maximum(np.bincount(owner, t * t, n) / cnt - mean ** 2, 0.0)
    std = np.sqrt(var)
    z = (t - mean[owner]) / np.where(std[owner] > 1e-12 * (1 + np.abs(mean[owner])), std[owner], np.inf)
    return z / temperature, has


def fit_weights(ts: TrainingSet, forward: Any, scale: float, init: np.ndarray, *, epochs: int | None = None,
                lr: float = 0.05, batch_size: int = 64, temperature: float = 0.5, distill: float = 0.0,
                in_batch: bool = True, l1: float = 0.3, warmup: int | None = None,
                df: np.ndarray | None = None, prior: float = 1.0, min_queries: int = 1,
                valid: TrainingSet | None = None, seed: int = 0) -> FitResult:
    """Fit query-token weights to ``ts`` against the documents ``forward`` (``SparseIndex.forward()``,
    weights = impacts * ``scale``), starting from ``init`` (float, one per vocabulary token, e.g. the IDF).

    ``epochs`` None: at least 500 steps, 3 to 30 epochs. ``lr``: Adam's step in units of the mean
    initial weight (constant for half the steps, then decayed linearly). ``temperature``: of the softmax,
    in units of the initial per-query score spread (teacher scores: z-scores over it). ``distill``: weight
    of the KL to the teacher (queries with ``c_teacher``). ``in_batch``: the other queries' positives as
    extra negatives. ``l1``: weight of the posting-weighted l1 (expected postings touched per query as a
    fraction of the collection, in mean-initial-weight units; 0 = off), ramped up quadratically over
    ``warmup`` steps (None: the first third). ``df``: posting-list lengths (None: from ``forward``).
    ``prior``: l2 pull of each free weight towards the global map, in training queries. ``min_queries``:
    tokens in at least this many training queries get a free weight. ``valid``: if given, evaluated each
    epoch (``history[e]["valid_ndcg"]``) and the best epoch's weights (the start included) are returned;
    use queries apart from any held-out guard's. ValueError for bad input.

    Example:
        >>> fit = fit_weights(train, index.forward(), index.scale, idf, l1=0.5)         # doctest: +SKIP
        >>> fit.weights.shape == idf.shape, fit.facts["pruned_tokens"]                   # doctest: +SKIP
        (True, 12)
    """
    t_start = time.perf_counter()
    if not isinstance(ts, TrainingSet):
        raise ValueError("ts must be a TrainingSet")
    indptr, terms, impacts, scale = _check_forward(forward, scale)
    n_docs = indptr.size - 1
    init = _check_weights("init", init, ts)
    vocab = init.size
    if terms.size and int(terms.max()) >= vocab:
        raise ValueError(f"the documents use term {int(terms.max())}, outside init's vocabulary of {vocab}")
    _check_rows(ts, n_docs)
    if epochs is not None:
        _positive("epochs", epochs, integer=True)
    _positive("lr", lr)
    _positive("batch_size", batch_size, integer=True)
    _positive("temperature", temperature)
    _positive("distill", distill, zero=True)
    _positive("l1", l1, zero=True)
    _positive("prior", prior, zero=True)
    _positive("min_queries", min_queries, integer=True)
    if warmup is not None:
        _positive("warmup", warmup, integer=True, zero=True)
    if not isinstance(in_batch, bool):
        raise ValueError(f"in_batch must be True or False, not {in_batch!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    if df is None:
        df = np.bincount(terms.astype(np.int64), minlength=vocab)[:vocab].astype(np.float64)
    else:
        df = np.asarray(df)
        if df.ndim != 1 or df.size != vocab or df.dtype.kind not in "iuf" or not np.all(np.isfinite(df)) \
                or (df.size and df.min() < 0):
            raise ValueError(f"df must be {vocab} non-negative posting-list lengths (one per token)")
        df = df.astype(np.float64)
    if valid is not None:
        if not isinstance(valid, TrainingSet):
            raise ValueError("valid must be a TrainingSet")
        _check_weights("init", init, valid)
        valid_feats = features(forward, scale, valid)

    # which queries carry a signal, and the tokens they use
    n_q = ts.n_queries
    lengths_c = np.diff(ts.c_ptr)
    owner_c = np.repeat(np.arange(n_q), lengths_c)
    c_pos = ts.c_label > 0
    has_pos = np.zeros(n_q, np.bool_)
    has_pos[owner_c[c_pos]] = True
    t_z, has_teacher = _teacher_z(ts, float(temperature))
    signal = has_pos | (has_teacher & (distill > 0))
    train_q = np.flatnonzero(signal & (np.diff(ts.q_ptr) > 0) & (lengths_c > 0)).astype(np.int64)
    if train_q.size == 0:
        raise ValueError("no training query has tokens and a positive candidate "
                         "(or a teacher with distill > 0)")
    _, tok_pos = _gather(ts.q_ptr, train_q)
    active, counts = np.unique(ts.q_tokens[tok_pos], return_counts=True)
    active = active.astype(np.int64)
    seen = counts >= min_queries
    init_act = init[active].astype(np.float64)
    if not np.any(init_act > 0):
        raise ValueError("init is 0 on every token of the training queries: nothing to start from")
    s = float(init_act[init_act > 0].mean())
    init_n = init.astype(np.float64) / s
    log_init = np.where(init_act > 0, np.log(np.maximum(init_act / s, 1e-300)), 0.0)
    u = init_n.copy()                      # current weights, in units of s
    g = init_act / s                       # the global map on the active tokens
    glob = np.zeros(2)
    glob[1] = 1.0                          # [log a, p]: g = init at the start

    rng = np.random.default_rng(seed)
    sample = train_q if train_q.size <= _SPREAD_SAMPLE else \
        np.sort(rng.choice(train_q, _SPREAD_SAMPLE, replace=False))
    spread = K.score_spread(ts.q_ptr, ts.q_tokens, ts.c_ptr, ts.c_rows, u, indptr, terms, impacts, scale,
                            sample)
    if spread <= 0:
        spread = 1.0
    inv_tau = 1.0 / (float(temperature) * spread)

    c_sorted = ts.c_rows[np.lexsort((ts.c_rows, owner_c))]
    pos_ptr = np.zeros(n_q + 1, np.int64)
    np.cumsum(np.bincount(owner_c[c_pos], minlength=n_q), out=pos_ptr[1:])
    pos_rows = ts.c_rows[c_pos]
    no_rows = np.zeros(0, np.int64)
    tok_slot = np.full(vocab, -1, np.int64)
    x_ptr = feature_offsets(ts)
    cached = bool(x_ptr[-1] <= _CACHE_FEATURES)
    feats = features(forward, scale, ts) if cached else np.zeros(0, np.float32)

    n_train = train_q.size
    bs = min(int(batch_size), n_train)
    steps_per_epoch = -(-n_train // bs)
    if epochs is None:
        epochs = int(min(_MAX_EPOCHS, max(_MIN_EPOCHS, -(-_AUTO_STEPS // steps_per_epoch))))
    total_steps = epochs * steps_per_epoch
    ramp_steps = total_steps // 3 if warmup is None else int(warmup)
    dfn = df[active] / max(n_docs, 1)
    flops_c = float(l1) * counts / n_train * dfn
    prior_c = float(prior) / n_train

    m1 = np.zeros(active.size)
    m2 = np.zeros(active.size)
    gm1 = np.zeros(2)
    gm2 = np.zeros(2)
    grad = np.zeros(vocab)
    stats = np.zeros(4)
    history: list[dict] = []

    def weights_now() -> np.ndarray:
        """Float32 weights over the whole vocabulary (global map off the active tokens)."""
        with np.errstate(divide="ignore"):
            full = np.where(init_n > 0, np.exp(glob[0] + glob[1] * np.log(np.where(init_n > 0, init_n, 1.0))),
                            0.0)
        full[active] = u[active]
        return (full * s).astype(np.float32)

    def record(epoch: int, loss_stats: np.ndarray | None) -> dict:
        w = weights_now()
        cost = float((w[ts.q_tokens[tok_pos]] > 0) @ df[ts.q_tokens[tok_pos]]) / n_train
        entry: dict = {"epoch": epoch, "postings": cost}
        if loss_stats is not None:
            ce = loss_stats[0] / max(loss_stats[1], 1)
            kl = loss_stats[2] / max(loss_stats[3], 1)
            penalty = float(l1) * float((counts / n_train * dfn) @ u[active])
            entry.update(loss=ce * (loss_stats[1] > 0) + distill * kl * (loss_stats[3] > 0), ce=ce, kl=kl,
                         penalty=penalty)
        if valid is not None:
            entry["valid_ndcg"] = candidate_ndcg(w, valid, valid_feats) if np.any(valid.c_label > 0) else None
        history.append(entry)
        return entry

    def decay(step: int) -> float:
        """Learning-rate factor: constant for the first half of the steps, then linearly down to ~0."""
        return min(1.0, 2.0 * (1.0 - (step - 1) / total_steps))

    best = (record(0, None).get("valid_ndcg"), 0, weights_now())
    step = 0
    for epoch in range(1, epochs + 1):
        stats[:] = 0.0
        perm = rng.permutation(train_q)
        for b0 in range(0, n_train, bs):
            batch = perm[b0:b0 + bs]
            step += 1
            inb = no_rows
            if in_batch:
                _, where = _gather(pos_ptr, batch)
                inb = np.unique(pos_rows[where])
            inb_x = K.inbatch_features(batch, ts.q_ptr, ts.q_tokens, inb, indptr, terms, impacts, scale,
                                       tok_slot)
            grad[:] = 0.0
            K.batch_gradient(batch, ts.q_ptr, ts.q_tokens, ts.c_ptr, ts.c_rows, c_sorted, c_pos, has_pos, t_z,
                             has_teacher, inb, inb_x, tok_slot, u, inv_tau, float(distill), indptr, terms,
                             impacts, scale, x_ptr, feats, cached, grad, stats)
            K.clear_slots(batch, ts.q_ptr, ts.q_tokens, tok_slot)
            ramp = 1.0 if ramp_steps == 0 else min(1.0, (step / ramp_steps) ** 2)
            K.adam_prox_step(active, seen, u, g, log_init, grad, 1.0 / batch.size, m1, m2, flops_c * ramp,
                             prior_c, float(lr) * decay(step), _BETA1, _BETA2, _EPS, step, glob, gm1, gm2)
            g = np.where(init_act > 0, np.exp(glob[0] + glob[1] * log_init), 0.0)
            u[active[~seen]] = g[~seen]
        entry = record(epoch, stats)
        v = entry.get("valid_ndcg")
        if v is not None and (best[0] is None or v > best[0]):
            best = (v, epoch, weights_now())
    final = weights_now()
    best_epoch = epochs
    if valid is not None and best[0] is not None:
        best_epoch, final = best[1], best[2]
    facts = {"epochs": epochs, "steps": step, "seconds": round(time.perf_counter() - t_start, 3),
             "train_queries": int(n_train), "active_tokens": int(active.size), "free_tokens": int(seen.sum()),
             "pruned_tokens": int(np.sum(final[active] == 0)), "map_a": float(math.exp(glob[0])),
             "map_p": float(glob[1]), "weight_unit": s, "score_spread": float(spread),
             "best_epoch": best_epoch}
    return FitResult(weights=final, history=history, facts=facts)
