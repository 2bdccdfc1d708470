"""Masked and floored search (SparseIndex kernels, DenseIndex) against brute-force oracles.

Sparse: every route a masked query can take (block-max pruning, the direct scoring of selective masks,
exact TAAT) must return, for every eligible row of the true top-k scoring >= floor, the same rows, the same
float32 scores and the same tie order as an exact search over the eligible rows; masked rows never. The
truth is the index's own exact ranking of every document (checked against a numpy dot-product oracle where
scores are exact integers), filtered by the mask.
"""

import numpy as np
import pytest

import lsr.index.dense as D
import lsr.index.sparse as S
from lsr.index import SparseIndex
from lsr.index.dense import DenseIndex
from lsr.testing import make_ids, random_docs, random_query
from lsr.types import SparseBatch

DENSITIES = (0.0, 0.001, 0.01, 0.1, 0.5, 1.0)
VOCAB = 90
# (seed, quantization, integer values, block size, documents)
BUILDS = [(0, "uint8", True, 8, 700), (1, "float32", False, 8, 600), (2, "uint8", False, 13, 500),
          (3, "float32", True, 16, 650), (4, "uint8", True, 64, 520), (5, "float32", False, 8, 2100)]
# route -> (PLAN_RATIO, TAAT_DENSITY): bmp never hands a query to TAAT or to the direct scoring, ...
ROUTES = {"auto": (S.PLAN_RATIO, S.TAAT_DENSITY), "bmp": (0.0, float("inf")),
          "direct": (float("inf"), float("inf")), "taat": (0.0, 0.0)}


@pytest.fixture(scope="module", params=BUILDS, ids=lambda b: f"seed{b[0]}-{b[1]}-bs{b[3]}")
def built(request, tmp_path_factory):
    seed, quantization, integer, block_size, n = request.param
    rng = np.random.default_rng(seed)
    docs = random_docs(rng, n, VOCAB, 9, integer=integer)
    rows = docs.to_dicts()  # exact ties: copies of some documents
    for _ in range(n // 10):
        rows[int(rng.integers(n))] = dict(rows[int(rng.integers(n))])
    docs = SparseBatch.from_dicts(rows, vocab_size=VOCAB)
    index = SparseIndex.build(docs, make_ids(n), tmp_path_factory.mktemp("ix") / "i",
                              quantization=quantization, block_size=block_size, reorder=seed % 2 == 0)
    return index, rng, integer


def ranking(index, q):
    """Every document scoring > 0, best first: the exact search's rows and float32 scores."""
    return index.search_rows(q, index.n_docs, algorithm="exact")


def truth(full, mask, k):
    """The true top-k over the eligible rows."""
    rows, scores = full
    keep = mask[rows] != 0
    return rows[keep][:k], scores[keep][:k]


def check(got, expected, mask, floor, k):
    """The floor contract: the expected rows scoring >= floor come back first, in order, scores identical;
    nothing masked; at most k rows, best first."""
    rows, scores = got
    assert rows.dtype == np.int32 and scores.dtype == np.float32 and rows.size <= k
    assert (mask[rows] != 0).all(), "a masked row was returned"
    need = expected[1] >= floor
    n = int(need.sum())
    np.testing.assert_array_equal(rows[:n], expected[0][need])
    assert scores[:n].tobytes() == expected[1][need].tobytes()
    assert (np.diff(scores) <= 0).all()


def queries(rng, n, integer):
    """Random queries plus a few with negative weights (TAAT's order: positives, then negatives)."""
    qs = [random_query(rng, VOCAB, integer=integer, n_terms=int(rng.integers(1, 25))) for _ in range(n)]
    for _ in range(3):
        t = rng.integers(0, VOCAB, 8)
        w = np.where(rng.random(8) < 0.3, -1.0, 1.0) * (rng.integers(1, 4, 8) if integer else rng.random(8))
        qs.append(SparseBatch(np.array([0, 8]), t, w, VOCAB + 20))
    return qs


def floors_for(expected):
    """No floor, the true k-th score, just below and above it, and one above every score."""
    s = expected[1]
    if s.size == 0:
        return [0.0, 1.0]
    kth = float(s[-1])
    return [0.0, kth, float(np.nextafter(np.float32(kth), np.float32(0))), kth + 0.5 * (float(s[0]) - kth)
            + 1e-3, float(s[0]) * 2]


@pytest.mark.parametrize("route", ROUTES)
def test_masked_single_and_batch_against_truth(built, route, monkeypatch):
    """Per build and route: 6 densities x 9 queries (random k, mask form, three floors), both algorithms,
    single and batch (per-query floors, one floor, none)."""
    index, rng, integer = built
    monkeypatch.setattr(S, "PLAN_RATIO", ROUTES[route][0])
    monkeypatch.setattr(S, "TAAT_DENSITY", ROUTES[route][1])
    qs = queries(rng, 6, integer)
    fulls = [ranking(index, q) for q in qs]
    for density in DENSITIES:
        mask = rng.random(index.n_docs) < density
        as_u8 = mask.astype(np.uint8) * np.uint8(rng.integers(1, 256))  # any nonzero byte is eligible
        forms = (mask, as_u8, index.prepare_mask(mask))
        for q, full in zip(qs, fulls, strict=True):
            k = int(rng.choice([1, 7, 40]))
            expected = truth(full, mask, k)
            options = floors_for(expected)
            for floor in [0.0, *rng.choice(options, 2, replace=False)]:
                for algorithm in ("bmp", "exact"):
                    m = forms[int(rng.integers(3))]
                    check(index.search_rows(q, k, algorithm=algorithm, mask=m, floor=floor), expected, mask,
                          floor, k)
        k = int(rng.choice([1, 7, 40]))
        batch = SparseBatch.concat(qs)
        expected = [truth(full, mask, k) for full in fulls]
        kth = np.array([e[1][-1] if e[1].size == k else 0.0 for e in expected], np.float32)
        one = float(kth.min())
        for floor, fl in ((kth, kth), (one, [one] * len(qs)), (None, [0.0] * len(qs))):
            algorithm = str(rng.choice(["bmp", "exact"]))
            m = forms[int(rng.integers(3))]
            got = index.batch_search_rows(batch, k, threads=2, algorithm=algorithm, mask=m, floor=floor)
            for g, e, f in zip(got, expected, fl, strict=True):
                check(g, e, mask, f, k)


@pytest.mark.parametrize("route", ["bmp", "auto"])
def test_few_masked_rows_keep_the_seed_safe(built, route, monkeypatch):
    """With m masked rows the threshold seed comes from depth >= k + m: mask the documents it would use (each
    query term's highest impacts, the best documents) and the rows around the depths 10, 100 and 1000."""
    index, rng, integer = built
    monkeypatch.setattr(S, "PLAN_RATIO", ROUTES[route][0])
    monkeypatch.setattr(S, "TAAT_DENSITY", ROUTES[route][1])
    f_indptr, f_terms, f_impacts = index.forward()
    doc_of = np.repeat(np.arange(index.n_docs), np.diff(f_indptr))
    frequent = np.argsort(-np.bincount(f_terms, minlength=VOCAB), kind="stable")[:4]
    single = [SparseBatch.from_dicts([{int(t): 1.5}], vocab_size=VOCAB) for t in frequent]  # score = impact
    for q in single + queries(rng, 4, integer):
        full = ranking(index, q)
        # masked first: the best documents, then each query term's documents by impact, heaviest first
        by_term = [doc_of[f_terms == t][np.argsort(-f_impacts[f_terms == t], kind="stable")]
                   for t in q.indices[q.indices < VOCAB]]
        order = np.concatenate([full[0], *by_term, rng.permutation(index.n_docs)])
        order = list(dict.fromkeys(order.tolist()))
        for m in (1, 2, 5, 9, 10, 11, 50, 89, 90, 91, 99, 100, 101, 989, 990, 991):
            if m >= index.n_docs:
                continue
            k = int(rng.choice([1, 3, 10]))
            dropped = order[:m]
            mask = np.ones(index.n_docs, bool)
            mask[dropped] = False
            expected = truth(full, mask, k)
            for floor in (0.0, *floors_for(expected)[1:3]):
                check(index.search_rows(q, k, mask=mask, floor=floor), expected, mask, floor, k)


def test_truth_is_the_dot_product_oracle(built):
    """The truth's ranking equals numpy dot products where scores are exact (integers, uint8 scale 1)."""
    index, rng, integer = built
    if not integer or index.quantization != "uint8":
        pytest.skip("float scores: numpy's sums round differently")
    f_indptr, f_terms, f_impacts = index.forward()
    X = np.zeros((index.n_docs, VOCAB))
    np.add.at(X, (np.repeat(np.arange(index.n_docs), np.diff(f_indptr)), f_terms), f_impacts * index.scale)
    for q in queries(rng, 20, True)[:20]:
        qd = np.zeros(VOCAB)
        keep = q.indices < VOCAB
        np.add.at(qd, q.indices[keep], q.values[keep])
        s = X @ qd
        rows = np.flatnonzero(s > 0)
        rows = rows[np.lexsort((rows, -s[rows]))]
        got = ranking(index, q)
        np.testing.assert_array_equal(got[0], rows)
        np.testing.assert_array_equal(got[1], s[rows].astype(np.float32))


def test_approximate_never_returns_masked_rows(built):
    index, rng, integer = built
    for density in (0.01, 0.1, 0.5):
        mask = rng.random(index.n_docs) < density
        for q in queries(rng, 10, integer):
            full = ranking(index, q)
            exact_score = dict(zip(full[0].tolist(), full[1].tolist(), strict=True))
            for alpha, beta in ((0.5, 1.0), (1.0, 0.4), (0.7, 0.6)):
                rows, scores = index.search_rows(q, 10, alpha=alpha, beta=beta, mask=mask)
                assert (mask[rows]).all()
                assert [exact_score[r] for r in rows.tolist()] == scores.tolist()


def test_block_counts_and_copies(built):
    index, rng, _ = built
    for density in DENSITIES:
        mask = rng.random(index.n_docs) < density
        m = index.prepare_mask(mask)
        starts = np.arange(0, index.n_docs, index.block_size)
        np.testing.assert_array_equal(m.bcount, np.add.reduceat(mask.astype(np.int64), starts))
        assert m.n_eligible == mask.sum() == m.sbcount.sum() and len(m) == index.n_docs
        assert index.prepare_mask(m) is m
    mask = np.ones(index.n_docs, bool)
    m = index.prepare_mask(mask)
    mask[:] = False  # the prepared mask holds a copy
    q = SparseBatch.from_dicts([{t: 1.0 for t in range(10)}], vocab_size=VOCAB)
    assert index.search_rows(q, 5, mask=m)[0].size == 5
    assert index.search_rows(q, 5, mask=mask)[0].size == 0


def test_bad_masks_and_floors(tmp_path):
    rng = np.random.default_rng(9)
    index = SparseIndex.build(random_docs(rng, 50, 30, 5), make_ids(50), tmp_path / "a")
    other = SparseIndex.build(random_docs(rng, 60, 30, 5), make_ids(60), tmp_path / "b")
    q = random_query(rng, 30)
    bad_masks = ((np.ones(49, bool), "one entry per row"), (np.ones((50, 1), bool), "one entry per row"),
                 (np.ones(50, np.int64), "bool or uint8"), (np.ones(50), "bool or uint8"),
                 (other.prepare_mask(np.ones(60, bool)), "another index"))
    calls = (lambda m: index.search_rows(q, 5, mask=m), lambda m: index.batch_search_rows(q, 5, mask=m),
             index.prepare_mask)
    for bad, words in bad_masks:
        for call in calls:
            with pytest.raises(ValueError, match=words):
                call(bad)
    for bad in (float("nan"), "1", True, [1.0]):
        with pytest.raises(ValueError, match="floor"):
            index.search_rows(q, 5, floor=bad)
    two = SparseBatch.concat([q, q])
    for bad in (np.zeros(3), np.array([0.0, np.nan]), np.array(["a", "b"]), float("nan")):
        with pytest.raises(ValueError, match="floor"):
            index.batch_search_rows(two, 5, floor=bad)


# ----------------------------------------------------------------------------- dense


@pytest.mark.parametrize("path", ["auto", "numpy", "selector", "oversample"])
def test_dense_flat_masked_is_exact(path, monkeypatch):
    if path in ("selector", "oversample"):
        monkeypatch.setattr(D, "DIRECT_ROWS", 0)
        monkeypatch.setattr(D, "DIRECT_FRACTION", 0.0)
    if path == "numpy":
        monkeypatch.setattr(D, "DIRECT_ROWS", 10**9)
    if path == "oversample":
        monkeypatch.setattr(D, "_has_selectors", lambda faiss: False)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    index = DenseIndex.build(x)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    for density in DENSITIES:
        mask = rng.random(len(index)) < density
        for k in (1, 10, 50):
            scores, rows = index.search(q, k, mask=mask if density < 1 else mask.astype(np.uint8))
            assert scores.shape == rows.shape == (4, k)
            eligible = np.flatnonzero(mask)
            s = q @ x[eligible].T
            for i in range(4):
                best = eligible[np.argsort(-s[i], kind="stable")[:k]]
                np.testing.assert_array_equal(rows[i, :best.size], best)
                assert (rows[i, best.size:] == -1).all()
                np.testing.assert_allclose(scores[i, :best.size], (x[best] @ q[i]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_dense_approximate_masked(kind):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    index = DenseIndex.build(x, kind=kind, nlist=20, nprobe=20, M=8, ef_construction=40)
    q = rng.standard_normal((4, 16)).astype(np.float32)
    for density in (0.001, 0.01, 0.3, 0.9):
        mask = rng.random(len(index)) < density
        _, rows = index.search(q, 10, mask=mask)
        assert mask[rows[rows >= 0]].all()
        if mask.sum() <= D.DIRECT_ROWS or kind == "ivf":  # exact: scored directly, or IVF probing every list
            eligible = np.flatnonzero(mask)
            s = q @ x[eligible].T
            for i in range(4):
                np.testing.assert_array_equal(rows[i][rows[i] >= 0], eligible[np.argsort(-s[i])[:10]])
        else:  # HNSW through faiss's selector: approximate, but it finds most of the top 10
            assert (rows >= 0).sum() >= 30


def test_dense_bad_mask():
    index = DenseIndex.build(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match="one entry per row"):
        index.search(np.eye(4, dtype=np.float32)[:1], 2, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="bool or uint8"):
        index.search(np.eye(4, dtype=np.float32)[:1], 2, mask=np.ones(4))
