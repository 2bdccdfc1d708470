"""Label-free fusion weights (lsr.adapt.fusion) on hand-made ranked lists whose answer is known."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lsr.adapt import fusion
from lsr.adapt.fusion import (
    SIGNAL,
    fit_fusion_unlabelled,
    label_free_weights,
    min_variance_weights,
    pooled_scores,
    source_recall,
    without_sources,
)
from lsr.params import FusionSpec
from lsr.retrievers.base import Ranked

N_DOCS, N_QUERIES, DEPTH = 200, 60, 30


def truth(seed: int = 0) -> np.ndarray:
    """A relevance signal per (query, document): a few strong documents per query over a weak background."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0.0, 1.0, (N_QUERIES, N_DOCS))
    t[:, :10] += 3.0
    return t


def ranked(scores: np.ndarray, k: int = DEPTH) -> Ranked:
    """Each query's top ``k`` documents by ``scores`` (shifted to be positive, as sparse scores are)."""
    lists = []
    for s in scores:
        top = np.argsort(-s, kind="stable")[:k]
        lists.append((top, (s[top] - s.min() + 1.0).astype(np.float32)))
    return Ranked.from_lists(lists, k=k)


def noisy(t: np.ndarray, seed: int, sd: float = 1.0) -> np.ndarray:
    return t + np.random.default_rng(seed).normal(0.0, sd, t.shape)


def check_weights(w: np.ndarray, n: int) -> None:
    assert w.shape == (n,)
    assert np.isfinite(w).all()
    assert (w >= 0).all()
    assert w.sum() == pytest.approx(1.0)


def test_two_copies_share_one_vote():
    t = truth()
    a = ranked(noisy(t, 1))
    c = ranked(noisy(t, 2))
    fit = label_free_weights([a, a, c], bootstrap=0)
    check_weights(fit.weights, 3)
    assert fit.weights[0] == pytest.approx(fit.weights[1], abs=1e-6)
    # the copies together count as much as the independent retriever of the same quality (equal weights
    # would give the pair two thirds)
    assert fit.weights.tolist() == pytest.approx([0.25, 0.25, 0.5], abs=0.03)


def test_correlated_pair_counts_less_than_two_independent_votes():
    t = truth()
    shared = np.random.default_rng(9).normal(0.0, 1.0, t.shape)  # the pair's common error (both lexical)
    s1 = ranked(t + shared + np.random.default_rng(3).normal(0, 0.4, t.shape))
    s2 = ranked(t + shared + np.random.default_rng(4).normal(0, 0.4, t.shape))
    d = ranked(noisy(t, 5, 1.1))
    w = label_free_weights([s1, s2, d], bootstrap=0).weights
    check_weights(w, 3)
    assert w[2] > max(w[0], w[1])
    assert w[2] > 1 / 3


def random_lists(seed: int) -> Ranked:
    rng = np.random.default_rng(seed)
    return Ranked.from_lists([(rng.permutation(N_DOCS)[:DEPTH], np.sort(rng.random(DEPTH))[::-1])
                              for _ in range(N_QUERIES)], k=DEPTH)


def test_random_retriever_fails_the_source_check_and_is_left_out():
    t = truth()
    a, b, noise = ranked(noisy(t, 1)), ranked(noisy(t, 2)), random_lists(7)
    sources = np.argmax(t, axis=1)  # the document each (pseudo-)query was drawn from
    recall = source_recall([a, noise, b], sources)
    assert recall[0] > 0.5 and recall[2] > 0.5 and recall[1] < 0.2
    keep = recall >= recall.max() / 3
    fit = label_free_weights([a, noise, b], keep=keep, seed=0)
    check_weights(fit.weights, 3)
    assert fit.weights[1] == 0.0 and fit.kept.tolist() == [True, False, True]
    assert fit.weights[0] == pytest.approx(0.5, abs=0.1)
    # without the check, the covariance alone does not tell noise from an independent retriever
    assert label_free_weights([a, noise, b], seed=0).weights[1] > 0.25


def test_without_sources():
    a = Ranked.from_lists([(np.array([4, 2, 7]), np.array([3.0, 2.0, 1.0])),
                           (np.array([1]), np.array([1.0]))], k=3)
    out = without_sources([a], [2, 9])[0]
    assert out[0][0].tolist() == [4, 7] and out[0][1].tolist() == [3.0, 1.0]
    assert out[1][0].tolist() == [1]
    with pytest.raises(ValueError, match="sources for 2 queries"):
        without_sources([a], [2])
    with pytest.raises(ValueError, match="sources for 2 queries"):
        source_recall([a], [2, 3, 4])


def test_two_unrelated_retrievers_keep_about_equal_weights():
    fit = label_free_weights([random_lists(3), random_lists(4)], seed=0)
    check_weights(fit.weights, 2)
    assert fit.weights[0] == pytest.approx(0.5, abs=0.1)


def test_degenerate_lists_never_nan():
    empty = Ranked.from_lists([(np.zeros(0, np.int64), np.zeros(0))] * 4, k=5)
    flat = Ranked.from_lists([(np.arange(5), np.ones(5))] * 4, k=5)
    one = Ranked.from_lists([(np.array([3]), np.array([2.0]))] * 4, k=5)
    for parts in ([flat, flat], [flat, one, empty], [one, one], [flat, one]):
        fit = label_free_weights(parts, seed=0)
        check_weights(fit.weights, len(parts))
        assert np.isfinite(fit.covariance).all() and np.isfinite(fit.correlation).all()
    with pytest.raises(ValueError, match="no query has any result"):
        label_free_weights([empty, empty])


def test_shrinkage():
    t = truth()
    a, c = ranked(noisy(t, 1)), ranked(noisy(t, 2))
    raw = label_free_weights([a, a, c], shrink=0.0).weights
    assert raw[2] > 0.4
    assert label_free_weights([a, a, c], shrink=1.0).weights.tolist() == pytest.approx([1 / 3] * 3)
    half = label_free_weights([a, a, c], shrink=0.5).weights
    assert half[2] == pytest.approx((raw[2] + 1 / 3) / 2)
    few = label_free_weights([Ranked(p.rows[:4], p.scores[:4], p.counts[:4]) for p in (a, a, c)], seed=0)
    many = label_free_weights([a, a, c], seed=0)
    assert 0 <= many.lam < few.lam <= 1  # fewer queries: less sure, closer to equal weights


def test_min_variance_weights():
    assert min_variance_weights(np.diag([1.0, 4.0])).tolist() == pytest.approx([0.8, 0.2], abs=1e-5)
    assert min_variance_weights(np.zeros((3, 3))).tolist() == pytest.approx([1 / 3] * 3)
    # negatively weighted in the unconstrained solution: dropped, not negative
    w = min_variance_weights(np.array([[1.0, 1.5], [1.5, 4.0]]))
    assert w.tolist() == pytest.approx([1.0, 0.0], abs=1e-9)
    with pytest.raises(ValueError, match="finite square"):
        min_variance_weights(np.array([[np.nan, 0.0], [0.0, 1.0]]))


def test_pooled_scores_missing_and_normalisation():
    a = Ranked.from_lists([(np.array([0, 1, 2]), np.array([3.0, 2.0, 1.0]))], k=3)
    b = Ranked.from_lists([(np.array([2, 5]), np.array([0.5, -0.5]))], k=3)
    X, q = pooled_scores([a, b], pool=2)  # candidates: a's 0, 1 and b's 2, 5
    assert q.tolist() == [0, 0, 0, 0]
    assert X.tolist() == [[1.0, 0.0], [0.5, 0.0], [0.0, 1.0], [0.0, 0.0]]
    X, _ = pooled_scores([a, b], pool=3, normalization="tmm", mins=[0.0, -1.0])
    assert X[:, 1].tolist() == pytest.approx([0.0, 0.0, 1.0, 1 / 3])


@pytest.mark.parametrize("call, message", [
    (lambda a: label_free_weights([a]), "at least 2"),
    (lambda a: label_free_weights(a), "at least 2"),
    (lambda a: label_free_weights([a, "x"]), "not a Ranked"),
    (lambda a: label_free_weights([a, Ranked(a.rows[:2], a.scores[:2], a.counts[:2])]), "different numbers"),
    (lambda a: label_free_weights([a, a], pool=0), "pool"),
    (lambda a: label_free_weights([a, a], normalization="l2"), "normalization"),
    (lambda a: label_free_weights([a, a], mins=[0.0]), "theoretical minimums"),
    (lambda a: label_free_weights([a, a], shrink=1.5), "shrink"),
    (lambda a: label_free_weights([a, a], keep=[False, False]), "keep"),
    (lambda a: label_free_weights([a, a], keep=[True]), "keep"),
    (lambda a: label_free_weights([a, a], bootstrap=-1), "bootstrap"),
])
def test_bad_input(call, message):
    a = ranked(truth()[:4])
    with pytest.raises(ValueError, match=message):
        call(a)


class FakeSearcher:
    """What fit_fusion_unlabelled uses of a Searcher: retrievers, the fused-by-default list, params and query.
    Query text "q<i>" is row i of each retriever's score matrix."""

    def __init__(self, scores: dict[str, np.ndarray]) -> None:
        self.scores = scores
        self.retrievers = list(scores)
        fused = ["sparse", "dense", "bm25"]
        self.collection = SimpleNamespace(manifest=SimpleNamespace(fused_by_default=fused))
        self.searched: list[tuple[str, int]] = []

    def retriever(self, name):
        return SimpleNamespace(theoretical_min=0.0)

    def params(self, *, k, mode, speed):
        return SimpleNamespace(k=k, mode=mode)

    def query(self, texts, params, annotate=True):
        self.searched.append((params.mode, len(texts)))
        r = ranked(self.scores[params.mode][[int(t[1:]) for t in texts]], k=params.k)
        return [SimpleNamespace(rows=r[i][0], scores=r[i][1]) for i in range(len(texts))]


@pytest.fixture
def probes(monkeypatch):
    """Pseudo-queries "q0".."q59", each drawn from the document its truth ranks first."""
    sources = np.argmax(truth(), axis=1)
    monkeypatch.setattr(fusion, "pseudo_queries", lambda collection, *, n, seed: FakeQueries(sources))


class FakeQueries:
    def __init__(self, sources):
        self.texts = [f"q{i}" for i in range(len(sources))]
        self.positives = [{int(d): 1} for d in sources]

    def __len__(self):
        return len(self.texts)


def test_fit_fusion_unlabelled_records_a_valid_fusion(probes):
    t = truth()
    copy = noisy(t, 1)  # sparse and bm25 are copies here; dense is independent
    s = FakeSearcher({"sparse": copy, "dense": noisy(t, 2), "bm25": copy, "sparse-idf": noisy(t, 3)})
    fit = fit_fusion_unlabelled(s, [f"q{i}" for i in range(40)], depth=DEPTH)
    # each retriever searched once with the pseudo-queries (the source check), once with the queries
    assert s.searched == [(n, N_QUERIES) for n in ("sparse", "dense", "bm25")] + \
        [(n, 40) for n in ("sparse", "dense", "bm25")]
    assert list(fit.weights) == ["sparse", "dense", "bm25"]
    assert sum(fit.weights.values()) == pytest.approx(1.0, abs=1e-3)
    assert fit.weights["sparse"] == pytest.approx(fit.weights["bm25"], abs=1e-3)
    assert fit.weights["dense"] > 0.4
    tuned = fit.fusion["tuned"]
    assert tuned["labels"] is False and tuned["signal"] == SIGNAL and tuned["source"] == "queries"
    assert tuned["queries"] == 40 and tuned["left_out"] == []
    spec = FusionSpec.check(fit.fusion, s.retrievers)
    assert spec.method == "convex" and spec.depth == DEPTH
    assert dict(spec.weights) == pytest.approx(fit.weights, abs=1e-3)
    other = fit_fusion_unlabelled(s, names=["sparse-idf", "dense"], depth=DEPTH)  # the pseudo-queries
    assert list(other.weights) == ["sparse-idf", "dense"]
    assert other.fusion["tuned"]["source"].startswith("pseudo")


def test_fit_fusion_unlabelled_leaves_out_a_broken_retriever(probes):
    t = truth()
    broken = np.random.default_rng(5).random(t.shape)
    s = FakeSearcher({"sparse": noisy(t, 1), "dense": broken, "bm25": noisy(t, 2)})
    fit = fit_fusion_unlabelled(s, depth=DEPTH)
    assert fit.weights["dense"] == 0.0 and fit.fusion["tuned"]["left_out"] == ["dense"]
    assert fit.fusion["tuned"]["source_recall"]["dense"] < 0.2
    FusionSpec.check(fit.fusion, s.retrievers)


@pytest.mark.parametrize("kw, message", [
    ({"names": ["sparse", "nope"]}, "no retriever 'nope'"),
    ({"names": ["sparse"]}, "at least 2 retrievers"),
    ({"names": ["sparse", "sparse"]}, "repeats"),
    ({"names": "sparse"}, "list of retriever names"),
    ({"queries": []}, "at least 2 non-empty queries"),
    ({"queries": ["q1", "  "]}, "at least 2 non-empty queries"),
    ({"queries": "q1"}, "list of query texts"),
    ({"queries": ["q1", 3]}, "not a text"),
    ({"depth": 0}, "depth"),
    ({"pool": 200}, "pool"),
    ({"min_recall": 2}, "min_recall"),
])
def test_fit_fusion_unlabelled_bad_input(kw, message, probes):
    s = FakeSearcher({n: noisy(truth(), i) for i, n in enumerate(("sparse", "dense", "bm25"))})
    kw = {"queries": ["q1", "q2", "q3"], **kw}
    with pytest.raises(ValueError, match=message):
        fit_fusion_unlabelled(s, kw.pop("queries"), **kw)
