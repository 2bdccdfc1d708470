"""The query-weight trainer (lsr.adapt.trainer) on tiny synthetic collections where the right weights are
known: random sparse documents, a hidden true weight vector w*, queries = random token sets, the positive =
the top document under w*, hard negatives = the next ones. No model, no files."""

from __future__ import annotations

import numpy as np
import pytest

from lsr.adapt.trainer import (
    FitResult,
    TrainingSet,
    candidate_ndcg,
    feature_offsets,
    features,
    fit_weights,
    query_cost,
)

VOCAB = 120


def make_docs(rng, n_docs=800, doc_len=20, *, uint8=False, stop=None):
    """Dense D (n_docs x VOCAB) and its forward CSR ((indptr, terms, impacts), scale)."""
    pop = 1.0 / (np.arange(VOCAB) + 1) ** 0.5
    pop /= pop.sum()
    D = np.zeros((n_docs, VOCAB), np.float32)
    for d in range(n_docs):
        t = rng.choice(VOCAB, doc_len, replace=False, p=pop)
        D[d, t] = rng.uniform(0.2, 3.0, doc_len)
    if stop is not None:  # a token in 90% of the documents
        D[:, stop] = np.where(rng.random(n_docs) < 0.9, rng.uniform(0.2, 3.0, n_docs), 0.0)
    scale = 1.0
    if uint8:
        scale = float(D.max()) / 255
        D = (np.round(D / scale) * scale).astype(np.float32)
    indptr = np.zeros(n_docs + 1, np.int64)
    rows = [np.flatnonzero(D[d]) for d in range(n_docs)]
    np.cumsum([r.size for r in rows], out=indptr[1:])
    terms = np.concatenate(rows).astype(np.uint16)
    vals = np.concatenate([D[d, r] for d, r in enumerate(rows)])
    impacts = np.round(vals / scale).astype(np.uint8) if uint8 else vals.astype(np.float32)
    return D, (indptr, terms, impacts), scale


def make_queries(rng, D, w_true, n_queries, pool, *, n_cand=20, q_len=(3, 6), always=None, always_p=0.0):
    """Queries from the tokens ``pool`` (plus ``always`` with probability ``always_p``): candidates = the
    top ``n_cand`` under w*, shuffled; label 1 for the top one; teacher scores = w* scores."""
    toks, rows, labels, teacher = [], [], [], []
    for _ in range(n_queries):
        t = rng.choice(pool, rng.integers(q_len[0], q_len[1] + 1), replace=False)
        if always is not None and rng.random() < always_p and always not in t:
            t = np.append(t, always)
        t = np.sort(t)
        s = D[:, t] @ w_true[t]
        top = np.lexsort((np.arange(D.shape[0]), -s))[:n_cand]
        perm = rng.permutation(n_cand)
        toks.append(t.tolist())
        rows.append(top[perm].tolist())
        labels.append((perm == 0).astype(float).tolist())
        teacher.append(s[top][perm].tolist())
    return TrainingSet.from_lists(toks, rows, labels, teacher=teacher)


def world(seed=0, *, n_train=500, n_held=150, pool_size=50, uint8=False):
    """Documents, w* (log-normal, unrelated to document frequency), train and held-out queries drawn from the
    same ``pool_size`` tokens (so every held-out token is seen in training)."""
    rng = np.random.default_rng(seed)
    D, fwd, scale = make_docs(rng, uint8=uint8)
    w_true = rng.lognormal(0.0, 0.8, VOCAB).astype(np.float32)
    pool = rng.choice(VOCAB, pool_size, replace=False)
    train = make_queries(rng, D, w_true, n_train, pool)
    held = make_queries(rng, D, w_true, n_held, pool)
    return D, fwd, scale, w_true, train, held


def idf_of(D):
    df = (D > 0).sum(0)
    return np.log1p((D.shape[0] - df + 0.5) / (df + 0.5)).astype(np.float32)


@pytest.fixture(scope="module")
def w0():
    return world(0)


# --------------------------------------------------------------------------- features


@pytest.mark.parametrize("uint8", [False, True])
def test_features_match_a_dense_computation(uint8):
    rng = np.random.default_rng(3)
    D, fwd, scale = make_docs(rng, n_docs=60, uint8=uint8)
    ts = TrainingSet.from_lists([[0, 5, 119], [], [7]], [[3, 0, 59], [1, 2], []], [[1, 0, 0], [0, 1], []])
    x = features(fwd, scale, ts)
    offsets = feature_offsets(ts)
    assert x.dtype == np.float32 and offsets.tolist() == [0, 9, 9, 9]
    for i in range(ts.n_queries):
        toks = ts.q_tokens[ts.q_ptr[i]:ts.q_ptr[i + 1]]
        rows = ts.c_rows[ts.c_ptr[i]:ts.c_ptr[i + 1]]
        block = x[offsets[i]:offsets[i + 1]].reshape(rows.size, toks.size)
        np.testing.assert_allclose(block, D[np.ix_(rows, toks)], rtol=1e-6, atol=1e-6)
    assert np.count_nonzero(x) > 0


def test_int32_terms_and_float_impacts_give_the_same_features():
    rng = np.random.default_rng(4)
    D, (indptr, terms, impacts), scale = make_docs(rng, n_docs=40, uint8=True)
    ts = TrainingSet.from_lists([[1, 2, 3, 50]], [[0, 9, 39]], [[0, 1, 0]])
    a = features((indptr, terms, impacts), scale, ts)
    b = features((indptr, terms.astype(np.int32), impacts.astype(np.float32) * np.float32(scale)), 1.0, ts)
    np.testing.assert_allclose(a, b, rtol=1e-6)


# --------------------------------------------------------------------------- recovery


@pytest.mark.parametrize("start", ["ones", "shuffled-idf"])
def test_recovers_the_true_weights_from_a_wrong_start(w0, start):
    D, fwd, scale, w_true, train, held = w0
    init = np.ones(VOCAB, np.float32) if start == "ones" else \
        np.random.default_rng(1).permutation(idf_of(D))
    x_held = features(fwd, scale, held)
    before = candidate_ndcg(init, held, x_held)
    fit = fit_weights(train, fwd, scale, init, epochs=40, l1=0.0)
    after = candidate_ndcg(fit.weights, held, x_held)
    assert isinstance(fit, FitResult) and fit.weights.dtype == np.float32 and fit.weights.shape == (VOCAB,)
    assert fit.weights.min() >= 0
    assert candidate_ndcg(w_true, held, x_held) == pytest.approx(1.0)
    assert before < 0.8 and after > 0.93 and after > before + 0.15
    counts = np.bincount(train.q_tokens, minlength=VOCAB)
    frequent = counts >= 20
    assert frequent.sum() >= 30
    r = np.corrcoef(fit.weights[frequent], w_true[frequent])[0, 1]
    r0 = np.corrcoef(init[frequent], w_true[frequent])[0, 1] if start != "ones" else 0.0
    assert r > 0.9 and r > r0 + 0.5
    assert fit.history[-1]["loss"] < 0.5 * fit.history[1]["loss"]


def test_scale_of_documents_and_init_does_not_matter(w0):
    D, (indptr, terms, impacts), scale, w_true, train, held = w0
    init = np.ones(VOCAB, np.float32)
    a = fit_weights(train, (indptr, terms, impacts), scale, init, epochs=5)
    b = fit_weights(train, (indptr, terms, impacts * np.float32(10)), scale, init * np.float32(7), epochs=5)
    assert not np.allclose(a.weights, init)
    np.testing.assert_allclose(b.weights / 7, a.weights, rtol=1e-3, atol=1e-4)
    assert a.facts["pruned_tokens"] == b.facts["pruned_tokens"]


def test_distillation_alone_recovers(w0):
    D, fwd, scale, w_true, train, held = w0
    no_labels = TrainingSet(train.q_ptr, train.q_tokens, train.c_ptr, train.c_rows,
                            np.zeros_like(train.c_label), train.c_teacher)
    init = np.ones(VOCAB, np.float32)
    with pytest.raises(ValueError, match="no training query"):
        fit_weights(no_labels, fwd, scale, init)  # distill=0: no signal at all
    fit = fit_weights(no_labels, fwd, scale, init, distill=1.0, epochs=40, l1=0.0)
    x_held = features(fwd, scale, held)
    assert candidate_ndcg(fit.weights, held, x_held) > 0.93 > candidate_ndcg(init, held, x_held) + 0.15
    assert fit.history[-1]["kl"] < fit.history[1]["kl"] and fit.history[-1]["ce"] == 0


def test_in_batch_negatives_are_the_only_negatives_when_candidates_are_just_the_positive(w0):
    D, fwd, scale, w_true, train, held = w0
    pos = train.c_label > 0  # keep only each query's positive: no mined negatives at all
    only_pos = TrainingSet(train.q_ptr, train.q_tokens, np.arange(train.n_queries + 1, dtype=np.int64),
                           train.c_rows[pos], train.c_label[pos])
    init = np.ones(VOCAB, np.float32)
    alone = fit_weights(only_pos, fwd, scale, init, in_batch=False, l1=0.0, epochs=3)
    np.testing.assert_array_equal(alone.weights, init)  # a softmax over one document teaches nothing
    fit = fit_weights(only_pos, fwd, scale, init, in_batch=True, l1=0.0, epochs=20)
    x_held = features(fwd, scale, held)
    assert candidate_ndcg(fit.weights, held, x_held) > candidate_ndcg(init, held, x_held) + 0.1


def test_unseen_tokens_follow_the_fitted_global_map():
    """w* = idf ** 3: the map a * idf ** p learnt on the training tokens carries to tokens never seen."""
    rng = np.random.default_rng(5)
    D, fwd, scale = make_docs(rng, n_docs=800)
    idf = idf_of(D)
    w_true = idf ** 3
    order = rng.permutation(VOCAB)
    train = make_queries(rng, D, w_true, 400, order[:60])
    unseen = make_queries(rng, D, w_true, 150, order[60:])
    assert not set(train.q_tokens.tolist()) & set(unseen.q_tokens.tolist())
    fit = fit_weights(train, fwd, scale, idf, epochs=30, l1=0.0)
    assert fit.facts["map_p"] > 1.5
    x = features(fwd, scale, unseen)
    assert candidate_ndcg(fit.weights, unseen, x) > candidate_ndcg(idf, unseen, x) + 0.05


# --------------------------------------------------------------------------- FLOPS regulariser


def test_l1_lowers_query_cost_and_prunes_a_useless_frequent_token():
    rng = np.random.default_rng(7)
    stop = 0
    D, fwd, scale = make_docs(rng, stop=stop)
    w_true = rng.lognormal(0.0, 0.8, VOCAB).astype(np.float32)
    w_true[stop] = 0.02 * w_true.mean()  # nearly useless, in most documents and most queries
    pool = rng.choice(np.arange(1, VOCAB), 50, replace=False)
    train = make_queries(rng, D, w_true, 500, pool, always=stop, always_p=0.8)
    held = make_queries(rng, D, w_true, 150, pool, always=stop, always_p=0.8)
    df = (D > 0).sum(0)
    init = np.ones(VOCAB, np.float32)
    free = fit_weights(train, fwd, scale, init, epochs=30, l1=0.0, df=df)
    lean = fit_weights(train, fwd, scale, init, epochs=30, l1=1.0, df=df)
    assert free.weights[stop] > 0 and lean.weights[stop] == 0
    assert query_cost(lean.weights, held, df) < 0.85 * query_cost(free.weights, held, df)
    assert query_cost(init, held, df) == query_cost(free.weights, held, df)
    x_held = features(fwd, scale, held)
    assert candidate_ndcg(lean.weights, held, x_held) > 0.9
    assert lean.history[-1]["penalty"] > 0 and lean.facts["pruned_tokens"] >= 1


# --------------------------------------------------------------------------- API behaviour


def test_deterministic_for_a_seed(w0):
    D, fwd, scale, w_true, train, held = w0
    init = np.ones(VOCAB, np.float32)
    a = fit_weights(train, fwd, scale, init, epochs=2, seed=3)
    b = fit_weights(train, fwd, scale, init, epochs=2, seed=3)
    c = fit_weights(train, fwd, scale, init, epochs=2, seed=4)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert not np.array_equal(a.weights, c.weights)


def test_valid_set_keeps_the_best_epoch(w0):
    D, fwd, scale, w_true, train, held = w0
    init = np.ones(VOCAB, np.float32)
    fit = fit_weights(train, fwd, scale, init, epochs=4, valid=held)
    scores = [h["valid_ndcg"] for h in fit.history]
    assert len(scores) == 5 and fit.facts["best_epoch"] == int(np.argmax(scores))
    assert candidate_ndcg(fit.weights, held, features(fwd, scale, held)) == pytest.approx(max(scores))


def test_training_set_subset_and_split():
    ts = TrainingSet.from_lists([[1, 2], [3], [4, 5, 6], [7]], [[0, 1], [2], [3, 4], [5, 6, 7]],
                                [[1, 0], [1], [0, 2], [0, 0, 1]], teacher=[[1, 2], None, [3, 4], [5, 6, 7]])
    sub = ts.subset([2, 0])
    assert sub.q_tokens.tolist() == [4, 5, 6, 1, 2] and sub.c_rows.tolist() == [3, 4, 0, 1]
    assert sub.c_label.tolist() == [0, 2, 1, 0] and sub.c_teacher.tolist() == [3, 4, 1, 2]
    assert sub.q_ptr.tolist() == [0, 3, 5] and sub.c_ptr.tolist() == [0, 2, 4]
    train, held = ts.split(0.25, seed=1)
    assert (train.n_queries, held.n_queries) == (3, 1)
    assert sorted(train.q_tokens.tolist() + held.q_tokens.tolist()) == list(range(1, 8))
    again = ts.split(0.25, seed=1)
    np.testing.assert_array_equal(again[1].q_tokens, held.q_tokens)
    assert np.isnan(ts.subset([1]).c_teacher).all()
    # queries without candidates (also the last ones) are fine, with or without a teacher
    empty_tail = TrainingSet.from_lists([[1], [2], [3]], [[0, 1], [], []], [[1, 0], [], []],
                                        teacher=[[1, 2], None, None])
    assert empty_tail.subset([2, 1]).c_rows.size == 0 and empty_tail.split(0.5)[0].n_queries >= 1


def test_candidate_ndcg_breaks_ties_by_row_not_by_list_order():
    # all scores 0: the ranking is by row, whatever order the candidates are listed in
    ts = TrainingSet.from_lists([[1]], [[9, 3]], [[1, 0]])
    empty = (np.zeros(11, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))  # 10 empty documents
    x = features(empty, 1.0, ts)
    assert candidate_ndcg(np.ones(2, np.float32), ts, x) == pytest.approx(1 / np.log2(3))
    # a 2-query hand example: query 0 ranks its positive second, query 1 has no positive (skipped)
    ts = TrainingSet.from_lists([[0], [1]], [[0, 1], [0]], [[0, 1], [0]])
    fwd = (np.array([0, 2, 3], np.int64), np.array([0, 1, 0], np.int32),
           np.array([2.0, 1.0, 1.0], np.float32))
    x = features(fwd, 1.0, ts)
    assert x.tolist() == [2.0, 1.0, 1.0]
    assert candidate_ndcg(np.ones(2, np.float32), ts, x, k=10) == pytest.approx(1 / np.log2(3))
    assert candidate_ndcg(np.ones(2, np.float32), ts, x, k=1) == 0.0


def test_query_cost_counts_postings_of_tokens_with_positive_weight():
    ts = TrainingSet.from_lists([[0, 1, 2], [2]], [[0], [0]], [[1], [1]])
    df = np.array([10, 20, 5])
    assert query_cost(np.array([1.0, 1.0, 1.0]), ts, df) == pytest.approx((35 + 5) / 2)
    assert query_cost(np.array([1.0, 0.0, 2.0]), ts, df) == pytest.approx((15 + 5) / 2)


# --------------------------------------------------------------------------- bad input

def _ts(**change):
    base = dict(q_ptr=np.array([0, 2], np.int64), q_tokens=np.array([1, 2], np.int32),
                c_ptr=np.array([0, 2], np.int64), c_rows=np.array([0, 1], np.int64),
                c_label=np.array([1, 0], np.float32), c_teacher=None)
    base.update(change)
    return TrainingSet(**base)


@pytest.mark.parametrize("change, message", [
    (dict(q_tokens=np.array([1, 2], np.int64)), "q_tokens must be a 1-D int32"),
    (dict(q_ptr=np.array([0, 3], np.int64)), "q_ptr must rise from 0 to 2"),
    (dict(c_ptr=np.array([0, 1, 2], np.int64)), "c_ptr has 3 offsets, expected 2"),
    (dict(q_tokens=np.array([2, 2], np.int32)), "query 0 lists a token twice"),
    (dict(c_rows=np.array([4, 4], np.int64)), "query 0 lists a candidate twice"),
    (dict(c_rows=np.array([-1, 1], np.int64)), "c_rows must be document rows >= 0"),
    (dict(c_label=np.array([1, -1], np.float32)), "c_label must be finite"),
    (dict(c_label=np.array([1, np.nan], np.float32)), "c_label must be finite"),
    (dict(c_label=np.array([1], np.float32)), "c_label has 1 values for 2 candidates"),
    (dict(c_teacher=np.array([1.0, np.nan], np.float32)), "teacher scores for some candidates only"),
    (dict(c_teacher=np.array([1.0, np.inf], np.float32)), "c_teacher must be finite"),
])
def test_bad_training_sets_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        _ts(**change)


def test_bad_fit_arguments_are_refused(w0):
    D, fwd, scale, w_true, train, held = w0
    init = np.ones(VOCAB, np.float32)
    for kwargs, message in [
        (dict(epochs=0), "epochs must be an integer > 0"),
        (dict(lr=-1.0), "lr must be a number > 0"),
        (dict(batch_size=2.5), "batch_size must be an integer"),
        (dict(temperature=0), "temperature must be"),
        (dict(l1=float("nan")), "l1 must be a number >= 0"),
        (dict(distill=-0.1), "distill must be"),
        (dict(in_batch="yes"), "in_batch must be True or False"),
        (dict(df=np.ones(3)), f"df must be {VOCAB} non-negative"),
        (dict(valid="held"), "valid must be a TrainingSet"),
    ]:
        with pytest.raises(ValueError, match=message):
            fit_weights(train, fwd, scale, init, **kwargs)
    with pytest.raises(ValueError, match="init must be a 1-D float array"):
        fit_weights(train, fwd, scale, np.ones(VOCAB, np.int64))
    with pytest.raises(ValueError, match="outside the vocabulary of 10"):
        fit_weights(train, fwd, scale, np.ones(10, np.float32))
    with pytest.raises(ValueError, match="init must be finite and >= 0"):
        fit_weights(train, fwd, scale, -init)
    with pytest.raises(ValueError, match="init is 0 on every token"):
        fit_weights(train, fwd, scale, np.zeros(VOCAB, np.float32))
    with pytest.raises(ValueError, match="scale must be a positive number"):
        fit_weights(train, fwd, 0.0, init)
    with pytest.raises(ValueError, match="forward must be the index's"):
        fit_weights(train, fwd[:2], scale, init)
    far = train.subset([0])
    far = TrainingSet(far.q_ptr, far.q_tokens, far.c_ptr, far.c_rows + 10_000, far.c_label)
    with pytest.raises(ValueError, match="outside the collection's 800 documents"):
        fit_weights(far, fwd, scale, init)
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        train.split(1.0)
    with pytest.raises(ValueError, match="subset indices"):
        train.subset([train.n_queries])
    with pytest.raises(ValueError, match="feats must be features"):
        candidate_ndcg(init, held, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="df must be"):
        query_cost(init, held, np.ones(5))
