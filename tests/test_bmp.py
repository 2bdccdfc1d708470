"""Block-max pruning: safe mode is bit-identical to exact search; approximate recall; options; format."""

import json

import numpy as np
import pytest

from lsr.errors import IndexFormatError
from lsr.index import SparseIndex
from lsr.testing import make_ids, random_docs, random_query
from lsr.types import SparseBatch


@pytest.fixture(autouse=True)
def always_bmp(monkeypatch):
    """Never let algorithm="bmp" hand a query to the exact kernel, so that these tests exercise BMP."""
    monkeypatch.setattr("lsr.index.sparse.TAAT_DENSITY", float("inf"))


def assert_same(a, b):
    """Identical results: the same rows in the same order and bit-identical float32 scores."""
    assert a[0].dtype == b[0].dtype == np.int32 and a[1].dtype == b[1].dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].tobytes() == b[1].tobytes()


def with_duplicates(rng, docs, n_copies):
    """Append copies of random rows (exact score ties), at random positions."""
    rows = docs.to_dicts()
    for _ in range(n_copies):
        rows.insert(int(rng.integers(len(rows) + 1)), dict(rows[int(rng.integers(len(rows)))]))
    return SparseBatch.from_dicts(rows, vocab_size=docs.vocab_size)


def queries_for(rng, vocab, n, *, integer):
    """Random queries (some ids beyond the index vocabulary) plus empty and duplicate-term queries."""
    qs = [random_query(rng, vocab, integer=integer, n_terms=int(rng.integers(1, 30))) for _ in range(n)]
    empty = SparseBatch(np.array([0, 0]), np.array([], np.int32), np.array([], np.float32), vocab + 20)
    absent = SparseBatch.from_dicts([{vocab + 3: 1.0}], vocab_size=vocab + 20)
    dup = SparseBatch(np.array([0, 4]), np.array([1, 2, 1, 1]), np.array([0.5, 1.0, 0.25, 2.0]), vocab + 20)
    return qs + [empty, absent, dup]


def check_safe_equals_exact(index, queries, ks):
    for q in queries:
        for k in ks:
            assert_same(index.search_rows(q, k), index.search_rows(q, k, algorithm="exact"))


# ----------------------------------------------------------------------------- safe == exact


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("seed", range(6))
def test_safe_equals_exact_random(tmp_path, quantization, seed):
    rng = np.random.default_rng(1000 + seed)
    integer = seed % 2 == 0  # integer weights: many exactly equal scores
    docs = with_duplicates(rng, random_docs(rng, 400, 120, 12, integer=integer), 60)
    block_size = (8, 13, 32, 64, 256, 8)[seed]
    reorder = seed % 3 != 2
    index = SparseIndex.build(docs, make_ids(len(docs)), tmp_path / "idx", quantization=quantization,
                              block_size=block_size, reorder=reorder)
    assert index.block_size == block_size and index.reordered == reorder
    check_safe_equals_exact(index, queries_for(rng, 120, 40, integer=integer), (1, 3, 10, 57, 1000))


def test_32_bit_document_numbers(tmp_path, monkeypatch):
    """Collections over 65,536 documents store postings' document numbers as int32: same results."""
    rng = np.random.default_rng(77)
    docs = with_duplicates(rng, random_docs(rng, 500, 90, 10, integer=True), 40)
    small = SparseIndex.build(docs, make_ids(len(docs)), tmp_path / "u16")
    monkeypatch.setattr("lsr.index.sparse.U16_DOCS", 100)
    big = SparseIndex.build(docs, make_ids(len(docs)), tmp_path / "i32")
    assert np.load(tmp_path / "u16/sparse/postings.docs.npy").dtype == np.uint16
    assert np.load(tmp_path / "i32/sparse/postings.docs.npy").dtype == np.int32
    queries = queries_for(rng, 90, 25, integer=True)
    check_safe_equals_exact(big, queries, (1, 10, 1000))
    for q in queries:
        for algorithm in ("exact", "bmp"):
            assert_same(big.search_rows(q, 10, algorithm=algorithm),
                        small.search_rows(q, 10, algorithm=algorithm))


def test_safe_equals_exact_ties_everywhere(tmp_path):
    # Few distinct documents, integer weights: long runs of equal scores, cut anywhere by k.
    rng = np.random.default_rng(5)
    patterns = [{1: 2.0, 4: 1.0}, {1: 1.0, 4: 2.0}, {4: 3.0}, {1: 3.0}, {2: 1.0}, {7: 255.0},
                {1: 1.0, 2: 2.0}]
    docs = SparseBatch.from_dicts([patterns[c] for c in rng.integers(0, len(patterns), 700)], vocab_size=8)
    for reorder in (False, True):
        index = SparseIndex.build(docs, make_ids(700), tmp_path / str(reorder), block_size=8, reorder=reorder)
        for q in ({1: 1.0, 4: 1.0}, {1: 2.0, 4: 1.0}, {2: 1.0}, {1: 1.0, 2: 1.0, 4: 1.0, 7: 0.001}):
            query = SparseBatch.from_dicts([q], vocab_size=8)
            check_safe_equals_exact(index, [query], (1, 5, 17, 99, 100, 101, 699, 700, 10_000))


def test_negative_query_weights(tmp_path):
    rng = np.random.default_rng(9)
    docs = random_docs(rng, 300, 40, 8, integer=True)
    index = SparseIndex.build(docs, make_ids(300), tmp_path / "idx", block_size=16)
    queries = []
    for _ in range(60):
        q = random_query(rng, 40, integer=True, n_terms=int(rng.integers(1, 15)))
        queries.append(SparseBatch(q.indptr, q.indices, q.values * rng.choice([-1, 1], q.nnz), q.vocab_size))
    check_safe_equals_exact(index, queries, (1, 10, 300))


def test_large_k_and_collection(tmp_path):
    rng = np.random.default_rng(21)
    docs = random_docs(rng, 12_000, 300, 10)
    index = SparseIndex.build(docs, make_ids(12_000), tmp_path / "idx")
    queries = [random_query(rng, 300, n_terms=int(rng.integers(1, 40))) for _ in range(12)]
    check_safe_equals_exact(index, queries, (1, 10, 100, 2_500, 10_000, 100_000))
    assert index.search_rows(queries[0], 10_000)[0].size == index.search_rows(queries[0], 10_000,
                                                                              algorithm="exact")[0].size


def test_batch_equals_single(tmp_path):
    rng = np.random.default_rng(31)
    docs = random_docs(rng, 1_500, 150, 12)
    index = SparseIndex.build(docs, make_ids(1_500), tmp_path / "idx", block_size=16)
    queries = SparseBatch.concat(queries_for(rng, 150, 100, integer=False))
    for kwargs in (dict(), dict(alpha=0.8, beta=0.5), dict(algorithm="exact")):
        for k, threads in ((1, 1), (10, 2), (500, None)):
            batch = index.batch_search_rows(queries, k, threads=threads, **kwargs)
            for i, got in enumerate(batch):
                assert_same(got, index.search_rows(queries.row(i), k, **kwargs))
    by_id = index.batch_search(queries, 5, threads=2)
    for i in (0, 50):
        ids, scores = index.search(queries.row(i), 5)
        np.testing.assert_array_equal(by_id[i][0], ids)
        assert by_id[i][1].tobytes() == scores.tobytes()


# ----------------------------------------------------------------------------- reordering


def test_reorder_moves_ids_with_documents(tmp_path):
    rng = np.random.default_rng(41)
    docs = random_docs(rng, 800, 100, 10)
    ids = make_ids(800, "x")
    plain = SparseIndex.build(docs, ids, tmp_path / "plain", reorder=False)
    moved = SparseIndex.build(docs, ids, tmp_path / "moved", reorder=True)
    assert plain.order.tolist() == list(range(800))
    assert sorted(moved.order.tolist()) == list(range(800)) and moved.order.tolist() != list(range(800))
    assert moved.ids.tolist() == [ids[i] for i in moved.order]
    for _ in range(30):
        q = random_query(rng, 100, n_terms=12)
        a_ids, a_scores = plain.search(q, 50)
        b_ids, b_scores = moved.search(q, 50)
        # Same documents with bit-identical scores; only the order among equal scores may differ.
        assert a_scores.tobytes() == b_scores.tobytes()
        cut = a_scores[-1] if a_scores.size == 50 else -1
        assert set(a_ids[a_scores > cut]) == set(b_ids[b_scores > cut])
    # Deterministic: the same input gives the same order.
    again = SparseIndex.build(docs, ids, tmp_path / "again", reorder=True)
    np.testing.assert_array_equal(again.order, moved.order)


# ----------------------------------------------------------------------------- approximate


def test_approximate_recall_floor(tmp_path):
    rng = np.random.default_rng(51)
    docs = random_docs(rng, 4_000, 400, 25)
    # Uniform random weights make bounds tight and approximation costly; the floors are calibrated at
    # block_size=8 (measured recall@10: 0.992, 0.945, 0.847, 0.22).
    index = SparseIndex.build(docs, make_ids(4_000), tmp_path / "idx", block_size=8)
    queries = [random_query(rng, 400, n_terms=25, extra_vocab=0) for _ in range(60)]
    exact = [index.search_rows(q, 4_000, algorithm="exact") for q in queries]
    for alpha, beta, floor in ((0.9, 1.0, 0.95), (1.0, 0.5, 0.9), (0.8, 0.6, 0.78), (0.5, 0.3, 0.1)):
        recall = []
        for q, (ref_rows, ref_scores) in zip(queries, exact):
            rows, scores = index.search_rows(q, 10, alpha=alpha, beta=beta)
            # Whatever is returned carries its exact score, best first.
            true = dict(zip(ref_rows.tolist(), ref_scores.tolist()))
            assert scores.tolist() == [true[r] for r in rows.tolist()]
            assert np.all(np.diff(scores) <= 0)
            recall.append(len(set(ref_rows[:10].tolist()) & set(rows.tolist())) / 10)
        assert np.mean(recall) >= floor, (alpha, beta, np.mean(recall))
        if (alpha, beta) == (0.5, 0.3):
            assert np.mean(recall) < 0.9  # the knobs do prune


# ----------------------------------------------------------------------------- options and format


def test_bad_options(tmp_path):
    docs = SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}], vocab_size=4)
    for block_size in (7, 257, 0, 32.0, True, "32"):
        with pytest.raises(ValueError, match="block_size must be an integer between 8 and 256"):
            SparseIndex.build(docs, ["a", "b"], tmp_path / "x", block_size=block_size)
    with pytest.raises(ValueError, match="reorder must be True or False"):
        SparseIndex.build(docs, ["a", "b"], tmp_path / "x", reorder="yes")
    index = SparseIndex.build(docs, ["a", "b"], tmp_path / "ok", block_size=8)
    q = SparseBatch.from_dicts([{1: 1.0}], vocab_size=4)
    with pytest.raises(ValueError, match="unknown algorithm 'wand'"):
        index.search(q, algorithm="wand")
    for name in ("alpha", "beta"):
        for bad in (0, 0.0, -0.5, 1.01, float("nan"), "1", None, True):
            with pytest.raises(ValueError, match=f"{name} must be a number in \\(0, 1\\]"):
                index.search_rows(q, **{name: bad})
            with pytest.raises(ValueError, match=f"{name} must be"):
                index.batch_search(q, **{name: bad})
    with pytest.raises(ValueError, match="k must be an integer between 1 and 100000"):
        index.search(q, k=100_001, algorithm="bmp")
    assert index.search(q, k=1, alpha=1, beta=np.float32(0.5))[0].tolist() == ["a"]


def test_manifest_and_round_trip(tmp_path):
    rng = np.random.default_rng(61)
    docs = random_docs(rng, 500, 70, 9)
    built = SparseIndex.build(docs, make_ids(500), tmp_path / "idx", block_size=16, reorder=True)
    m = built.manifest
    assert m["format_version"] == 2 and m["block_size"] == 16 and m["n_blocks"] == 32 and m["reorder"] is True
    for group in ("sparse", "forward", "blocks"):
        assert set(m[group].values()) <= set(m["files"])
    assert m["order"] in m["files"]
    loaded = SparseIndex.load(tmp_path / "idx", verify=True)
    assert loaded.block_size == 16 and loaded.reordered and loaded.order.tolist() == built.order.tolist()
    for _ in range(20):
        q = random_query(rng, 70)
        for kwargs in (dict(), dict(alpha=0.7, beta=0.5), dict(algorithm="exact")):
            a, b = built.search(q, 10, **kwargs), loaded.search(q, 10, **kwargs)
            np.testing.assert_array_equal(a[0], b[0])
            assert a[1].tobytes() == b[1].tobytes()


def test_version_1_index_is_refused(tmp_path):
    docs = SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}], vocab_size=4)
    index = SparseIndex.build(docs, ["a", "b"], tmp_path / "idx")
    mpath = index.path / "manifest.json"
    manifest = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(IndexFormatError, match="has index format version 1.*reads version 2 only: rebuild"):
        SparseIndex.load(index.path)


def test_single_document_and_tiny_blocks(tmp_path):
    docs = SparseBatch.from_dicts([{3: 0.5}], vocab_size=5)
    index = SparseIndex.build(docs, ["only"], tmp_path / "idx", block_size=256)
    q = SparseBatch.from_dicts([{3: 2.0, 4: 1.0}], vocab_size=5)
    ids, scores = index.search(q, k=100)
    assert ids.tolist() == ["only"] and scores.tolist() == [pytest.approx(1.0, rel=1e-2)]
    assert index.search(SparseBatch.from_dicts([{4: 1.0}], vocab_size=5))[0].size == 0


def test_dense_queries_may_be_answered_by_exact_taat(tmp_path, monkeypatch):
    # algorithm="bmp" hands queries whose terms match many postings per document to the exact kernel.
    rng = np.random.default_rng(71)
    docs = random_docs(rng, 600, 60, 15)
    index = SparseIndex.build(docs, make_ids(600), tmp_path / "idx", block_size=8)
    queries = queries_for(rng, 60, 30, integer=False)
    for density in (0.0, float("inf")):
        monkeypatch.setattr("lsr.index.sparse.TAAT_DENSITY", density)
        check_safe_equals_exact(index, queries, (1, 10, 600))
        batch = index.batch_search_rows(SparseBatch.concat(queries), 10, threads=2, alpha=0.5, beta=0.5)
        for q, got in zip(queries, batch):
            assert_same(got, index.search_rows(q, 10, alpha=0.5, beta=0.5))
