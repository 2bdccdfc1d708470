"""SparseIndex: exact search against a dense brute-force oracle, storage round trips, atomicity, errors.

The oracle numbers documents by input row, so indexes compared with it are built with ``reorder=False``;
both search algorithms are checked against it (block-max pruning in safe mode is exact too). The
block-max specifics (bit-identity with exact search, reordering, approximation) are in test_bmp.py.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lsr.errors import IndexFormatError
from lsr.index import FORMAT_VERSION, SparseIndex
from lsr.index import _kernels as K
from lsr.index.storage import atomic_folder, load_array, read_manifest, save_array, write_manifest
from lsr.testing import make_ids, random_docs, random_query
from lsr.types import SparseBatch

# ----------------------------------------------------------------------------- helpers


def dense_docs(docs, quantization):
    """The float64 document matrix the index should score against (sum dups, drop <= 0, quantise)."""
    d = np.zeros((len(docs), docs.vocab_size), np.float64)
    rows = np.repeat(np.arange(len(docs)), np.diff(docs.indptr))
    np.add.at(d, (rows, docs.indices), docs.values.astype(np.float64))
    d = d.astype(np.float32).astype(np.float64)
    d[d <= 0] = 0.0
    scale = 1.0
    if quantization == "uint8":
        nz = d > 0
        scale = float(d.max()) / 255.0 if nz.any() else 1.0
        d[nz] = np.clip(np.rint(d[nz] / scale), 1, 255) * scale
    return d, scale


def oracle_scores(dense, query):
    q = np.zeros(dense.shape[1], np.float64)
    keep = query.indices < dense.shape[1]
    np.add.at(q, query.indices[keep], query.values[keep].astype(np.float64))
    return dense @ q


def oracle_topk(scores, k):
    rows = np.flatnonzero(scores > 0)
    order = np.lexsort((rows, -scores[rows]))
    return rows[order][:k]


def assert_exact(rows, scores, oracle, k):
    expected = oracle_topk(oracle, k)
    assert rows.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_array_equal(scores, oracle[expected].astype(np.float32))


def assert_close_topk(rows, scores, oracle, k, rtol=1e-5, atol=1e-6):
    """Tie-aware check for float scores whose last bits may differ from the float64 oracle."""
    positive = np.flatnonzero(oracle > 0)
    n = min(k, positive.size)
    assert rows.dtype == np.int32 and scores.dtype == np.float32
    assert rows.size == scores.size == n
    assert np.unique(rows).size == n
    for i in range(n - 1):  # best first: score desc, then row asc
        assert scores[i] > scores[i + 1] or (scores[i] == scores[i + 1] and rows[i] < rows[i + 1])
    np.testing.assert_allclose(scores, oracle[rows], rtol=rtol, atol=atol)
    if n:
        kth = np.sort(oracle[positive])[::-1][n - 1]
        tol = rtol * abs(kth) + atol
        assert np.all(oracle[rows] >= kth - tol)
        must = positive[oracle[positive] > kth + tol]
        assert set(must.tolist()) <= set(rows.tolist())




@pytest.fixture
def small_index(tmp_path):
    rng = np.random.default_rng(7)
    docs = random_docs(rng, 60, 40, 6, integer=True)
    return SparseIndex.build(docs, make_ids(60), tmp_path / "idx", reorder=False), docs


# ----------------------------------------------------------------------------- exact search


@pytest.fixture(params=["touched-list", "dense-scan"])
def taat_path(request, monkeypatch):
    """Run a test through both exact TAAT paths: a touched-documents list, or a whole-buffer scan."""
    ratio = float("inf") if request.param == "touched-list" else 0.0
    monkeypatch.setattr("lsr.index.sparse.DENSE_TAAT", ratio)
    return request.param


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.usefixtures("taat_path")
def test_integer_weights_match_oracle_exactly(tmp_path, quantization, seed):
    rng = np.random.default_rng(seed)
    docs = random_docs(rng, 150, 60, 8, integer=True)
    index = SparseIndex.build(docs, make_ids(150), tmp_path / "idx", quantization=quantization, reorder=False)
    dense, scale = dense_docs(docs, quantization)
    assert scale == 1.0 and index.scale == 1.0
    for _ in range(15):
        q = random_query(rng, 60, integer=True)
        oracle = oracle_scores(dense, q)
        for k in (1, 3, 10, 1000):
            for algorithm in ("exact", "bmp"):
                rows, scores = index.search_rows(q, k=k, algorithm=algorithm)
                assert_exact(rows, scores, oracle, k)
        ids, scores = index.search(q, k=10)
        np.testing.assert_array_equal(ids, np.array(make_ids(150))[oracle_topk(oracle, 10)])


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.usefixtures("taat_path")
def test_float_weights_match_oracle(tmp_path, quantization, seed):
    rng = np.random.default_rng(100 + seed)
    docs = random_docs(rng, 200, 80, 10)
    index = SparseIndex.build(docs, make_ids(200), tmp_path / "idx", quantization=quantization, reorder=False)
    dense, scale = dense_docs(docs, quantization)
    assert index.scale == pytest.approx(scale, rel=1e-12)
    for _ in range(15):
        q = random_query(rng, 80)
        oracle = oracle_scores(dense, q)
        for k in (1, 7, 50, 500):
            for algorithm in ("exact", "bmp"):
                rows, scores = index.search_rows(q, k=k, algorithm=algorithm)
                assert_close_topk(rows, scores, oracle, k)


@pytest.mark.usefixtures("taat_path")
def test_ties_are_broken_by_lower_row(tmp_path):
    rng = np.random.default_rng(3)
    # {7: 255} makes the uint8 scale 1.0, so the mixed-composition ties below are exact in float32 too
    patterns = [{1: 2.0, 4: 1.0}, {1: 1.0, 4: 2.0}, {4: 3.0}, {1: 3.0}, {2: 1.0}, {7: 255.0}]
    choice = rng.integers(0, len(patterns), 80)
    docs = SparseBatch.from_dicts([patterns[c] for c in choice], vocab_size=8)
    for quantization in ("uint8", "float32"):
        index = SparseIndex.build(docs, make_ids(80), tmp_path / quantization, quantization=quantization,
                                  reorder=False)
        q = SparseBatch.from_dicts([{1: 1.0, 4: 1.0}], vocab_size=8)  # patterns 0..3 all score 3
        rows, scores = index.search_rows(q, k=80)
        tied = np.flatnonzero(choice < 4)
        np.testing.assert_array_equal(rows, tied)  # all tied, so plain ascending row order
        assert np.all(scores == scores[0])
        for k in (1, 5, 17):  # a cut inside the tie group keeps the lowest rows
            np.testing.assert_array_equal(index.search_rows(q, k=k)[0], tied[:k])
        q2 = SparseBatch.from_dicts([{1: 2.0, 4: 1.0}], vocab_size=8)  # 5, 4, 3, 6 for patterns 0..3
        rows, scores = index.search_rows(q2, k=80)
        expected = np.concatenate([np.flatnonzero(choice == c) for c in (3, 0, 1, 2)])
        np.testing.assert_array_equal(rows, expected)
        counts = [np.sum(choice == c) for c in (3, 0, 1, 2)]
        np.testing.assert_allclose(scores, np.repeat([6, 5, 4, 3], counts), rtol=1e-6)


def test_k_larger_than_matching_docs(small_index):
    index, docs = small_index
    q = SparseBatch.from_dicts([{3: 1.0}], vocab_size=40)
    matching = np.flatnonzero(dense_docs(docs, "uint8")[0][:, 3] > 0)
    rows, scores = index.search_rows(q, k=100_000)
    assert sorted(rows.tolist()) == matching.tolist()
    assert np.all(scores > 0) and np.all(rows >= 0)


def test_empty_and_unknown_term_queries(small_index):
    index, _ = small_index
    empty = SparseBatch(np.array([0, 0]), np.array([], np.int32), np.array([], np.float32), 40)
    unknown = SparseBatch.from_dicts([{45: 1.0, 99: 2.0}], vocab_size=100)
    for q in (empty, unknown):
        rows, scores = index.search_rows(q, k=5)
        assert rows.dtype == np.int32 and scores.dtype == np.float32 and rows.size == scores.size == 0
        ids, scores = index.search(q, k=5)
        assert ids.size == 0 and scores.size == 0
    results = index.batch_search(SparseBatch.concat([empty, empty]), k=3)
    assert [r[0].size for r in results] == [0, 0]


def test_query_vocab_larger_than_index_ignores_extra_terms(small_index):
    index, _ = small_index
    base = SparseBatch.from_dicts([{3: 1.0, 7: 2.0}], vocab_size=40)
    wider = SparseBatch.from_dicts([{3: 1.0, 7: 2.0, 40: 5.0, 500: 9.0}], vocab_size=30522)
    for a, b in zip(index.search_rows(base, k=20), index.search_rows(wider, k=20), strict=True):
        np.testing.assert_array_equal(a, b)


def test_duplicate_query_terms_are_summed(small_index):
    index, _ = small_index
    dup = SparseBatch(np.array([0, 4]), np.array([7, 3, 7, 7]), np.array([1.0, 2.0, 0.5, 1.5]), 40)
    summed = SparseBatch.from_dicts([{3: 2.0, 7: 3.0}], vocab_size=40)
    for a, b in zip(index.search_rows(dup, k=30), index.search_rows(summed, k=30), strict=True):
        np.testing.assert_array_equal(a, b)
    cancel = SparseBatch(np.array([0, 3]), np.array([3, 7, 3]), np.array([1.0, 1.0, -1.0]), 40)
    only7 = SparseBatch.from_dicts([{7: 1.0}], vocab_size=40)
    for a, b in zip(index.search_rows(cancel, k=30), index.search_rows(only7, k=30), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.usefixtures("taat_path")
def test_negative_query_weights_match_oracle(tmp_path, seed):
    rng = np.random.default_rng(200 + seed)
    docs = random_docs(rng, 120, 30, 8, integer=True)
    index = SparseIndex.build(docs, make_ids(120), tmp_path / "idx", quantization="float32", reorder=False)
    dense, _ = dense_docs(docs, "float32")
    for _ in range(20):
        q = random_query(rng, 30, integer=True)
        q = SparseBatch(q.indptr, q.indices, q.values * rng.choice([-1, 1], q.nnz), q.vocab_size)
        for algorithm in ("exact", "bmp"):
            assert_exact(*index.search_rows(q, k=25, algorithm=algorithm), oracle_scores(dense, q), 25)


def test_document_duplicates_summed_and_non_positive_dropped(tmp_path):
    docs = SparseBatch(np.array([0, 4, 6]), np.array([2, 2, 5, 6, 1, 3]),
                       np.array([1.0, 2.0, -1.0, 0.0, 4.0, 0.5]), 8)
    index = SparseIndex.build(docs, ["a", "b"], tmp_path / "idx", quantization="float32")
    assert index.nnz == 3  # (a,2)=3.0, (b,1), (b,3)
    ids, scores = index.search(SparseBatch.from_dicts([{2: 1.0, 5: 1.0, 6: 1.0}], vocab_size=8), k=5)
    assert ids.tolist() == ["a"] and scores.tolist() == [3.0]


def test_quantize_uint8_kernel():
    v = np.array([0.001, 1.0, 3.0, 4.0], np.float32)
    q, scale = K.quantize_uint8(v)
    assert scale == pytest.approx(4.0 / 255)
    assert q.dtype == np.uint8
    assert q.tolist() == [1, 64, 191, 255]  # tiny values clip to 1


# ----------------------------------------------------------------------------- batch search


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
@pytest.mark.usefixtures("taat_path")
def test_batch_search_equals_single_search(tmp_path, quantization):
    rng = np.random.default_rng(11)
    docs = random_docs(rng, 300, 70, 10)
    index = SparseIndex.build(docs, make_ids(300), tmp_path / "idx", quantization=quantization)
    empty = SparseBatch(np.array([0, 0]), np.array([], np.int32), np.array([], np.float32), 90)
    queries = SparseBatch.concat([random_query(rng, 70) for _ in range(150)] + [empty])
    for k, threads in ((1, 1), (10, 2), (1000, None)):
        batch = index.batch_search_rows(queries, k=k, threads=threads)
        assert len(batch) == len(queries)
        for i, (rows, scores) in enumerate(batch):
            single = index.search_rows(queries.row(i), k=k)
            np.testing.assert_array_equal(rows, single[0])
            np.testing.assert_array_equal(scores, single[1])
    by_id = index.batch_search(queries, k=5, threads=2)
    for i in (0, 77, 150):
        ids, scores = index.search(queries.row(i), k=5)
        np.testing.assert_array_equal(by_id[i][0], ids)
        np.testing.assert_array_equal(by_id[i][1], scores)
    assert index.batch_search(queries.rows(0, 0), k=3) == []


def test_concurrent_searches_share_one_index(tmp_path):
    rng = np.random.default_rng(12)
    docs = random_docs(rng, 200, 60, 10)
    index = SparseIndex.build(docs, make_ids(200), tmp_path / "idx")
    queries = [random_query(rng, 60) for _ in range(64)]
    expected = [index.search_rows(q, k=10) for q in queries]

    def run(i):
        rows, scores = index.search_rows(queries[i % 64], k=10)
        batch = index.batch_search_rows(SparseBatch.concat(queries[:8]), k=10, threads=2)
        return (np.array_equal(rows, expected[i % 64][0]) and np.array_equal(scores, expected[i % 64][1])
                and all(np.array_equal(b[0], e[0]) for b, e in zip(batch, expected[:8], strict=True)))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, range(200)))


# ----------------------------------------------------------------------------- storage


def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    docs = random_docs(rng, 90, 50, 7)
    meta = {"encoder": {"name": "splade-tiny", "max_length": 256}, "corpus": {"name": "test"}}
    built = SparseIndex.build(docs, make_ids(90, "é"), tmp_path / "idx", metadata=meta, reorder=False)
    loaded = SparseIndex.load(tmp_path / "idx", verify=True)
    assert loaded.path == tmp_path / "idx"
    assert (loaded.n_docs, loaded.vocab_size, loaded.nnz) == (90, 50, built.nnz) and len(loaded) == 90
    assert loaded.quantization == "uint8" and loaded.scale == built.scale
    assert loaded.ids.tolist() == make_ids(90, "é")
    assert isinstance(loaded._docs.base, np.memmap) and not loaded._docs.flags.writeable
    m = loaded.manifest
    assert m["format_version"] == FORMAT_VERSION and m["created_by"].startswith("lsr-engine ")
    assert (m["n_docs"], m["vocab_size"], m["nnz"], m["quantization"]) == (90, 50, built.nnz, "uint8")
    assert m["scale"] == loaded.scale and m["metadata"] == meta
    assert m["sparse"] == {"indptr": "sparse/postings.indptr.npy", "docs": "sparse/postings.docs.npy",
                           "impacts": "sparse/postings.impacts.npy"}
    assert set(m["files"]) == {"docids.txt", m["order"], *m["sparse"].values(), *m["forward"].values(),
                               *m["blocks"].values()}
    for rel, info in m["files"].items():
        assert (tmp_path / "idx" / rel).stat().st_size == info["bytes"] and len(info["sha256"]) == 64
    assert loaded.size_bytes == sum(p.stat().st_size for p in (tmp_path / "idx").rglob("*") if p.is_file())
    assert load_array(tmp_path / "idx", "sparse/postings.impacts.npy").dtype == np.uint8
    for _ in range(10):
        q = random_query(rng, 50)
        for a, b in zip(built.search(q, k=10), loaded.search(q, k=10), strict=True):
            np.testing.assert_array_equal(a, b)


def test_write_into_covers_other_files(tmp_path):
    folder = tmp_path / "f"
    (folder / "extra").mkdir(parents=True)
    (folder / "docs.sqlite").write_bytes(b"x" * 10)
    (folder / "extra" / "notes.txt").write_text("hi")
    docs = SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}], vocab_size=4)
    m = SparseIndex.write_into(folder, docs, ["a", "b"], quantization="float32")
    assert m["files"]["docs.sqlite"]["bytes"] == 10 and "extra/notes.txt" in m["files"]
    assert json.loads((folder / "manifest.json").read_text()) == m
    assert SparseIndex.load(folder).quantization == "float32"


def test_atomic_folder_failure_keeps_existing_index(tmp_path, small_index):
    index, docs = small_index
    path = index.path
    before = {p: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_folder(path, overwrite=True) as tmp:
            save_array(tmp, "sparse/postings.docs.npy", np.zeros(3, np.int32))
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="duplicate"):  # a failing build leaves the old index too
        SparseIndex.build(docs, ["same"] * len(docs), path, overwrite=True)
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert SparseIndex.load(path, verify=True).nnz == index.nnz
    assert sorted(os.listdir(tmp_path)) == ["idx"]


def test_overwrite_flag(tmp_path, small_index):
    index, docs = small_index
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        SparseIndex.build(docs, make_ids(len(docs), "x"), index.path)
    assert SparseIndex.load(index.path).ids[0] == "doc-0"
    other = SparseBatch.from_dicts([{1: 1.0}, {2: 2.0}, {3: 3.0}], vocab_size=10)
    new = SparseIndex.build(other, ["a", "b", "c"], index.path, overwrite=True)
    assert SparseIndex.load(index.path).n_docs == 3 and new.vocab_size == 10
    assert sorted(os.listdir(tmp_path)) == ["idx"]  # no .tmp-* / .old-* left behind


# ----------------------------------------------------------------------------- load errors


def test_load_missing_and_not_an_index(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist") as e:
        SparseIndex.load(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IndexFormatError, match="not an lsr index or an incomplete one"):
        SparseIndex.load(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFormatError, match="not a folder"):
        SparseIndex.load(tmp_path / "file")


def test_load_wrong_format_version_and_bad_json(small_index):
    index, _ = small_index
    mpath = index.path / "manifest.json"
    m = json.loads(mpath.read_text())
    mpath.write_text(json.dumps({**m, "format_version": 999}))
    with pytest.raises(IndexFormatError, match=f"version 999.*version {FORMAT_VERSION}") as e:
        SparseIndex.load(index.path)
    assert "\n" not in str(e.value) and str(index.path) in str(e.value)
    mpath.write_text("{not json")
    with pytest.raises(IndexFormatError, match="unreadable"):
        read_manifest(index.path)


def test_load_truncated_missing_and_corrupted_files(small_index):
    index, _ = small_index
    docs_file = index.path / "sparse" / "postings.docs.npy"
    data = docs_file.read_bytes()
    docs_file.write_bytes(data[:-4])
    with pytest.raises(IndexFormatError, match=r"corrupted: sparse/postings\.docs\.npy has \d+ bytes"):
        SparseIndex.load(index.path)
    with pytest.raises(IndexFormatError, match="postings.docs.npy"):  # the array reader alone, too
        load_array(index.path, "sparse/postings.docs.npy")
    docs_file.write_bytes(data[:-4] + bytes([data[-4] ^ 1]) + data[-3:])  # same size, other content
    assert SparseIndex.load(index.path, validate=False).n_docs == index.n_docs
    with pytest.raises(IndexFormatError, match="sha256"):
        SparseIndex.load(index.path, verify=True)
    docs_file.unlink()
    with pytest.raises(IndexFormatError, match="incomplete: sparse/postings.docs.npy is missing"):
        SparseIndex.load(index.path)


def test_write_manifest_lists_files_and_is_last(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.bin").write_bytes(b"123")
    m = write_manifest(tmp_path, {"hello": 1})
    assert m["hello"] == 1 and set(m["files"]) == {"a/b.bin"}
    assert read_manifest(tmp_path, verify=True)["files"]["a/b.bin"]["bytes"] == 3


# ----------------------------------------------------------------------------- bad inputs


def test_bad_build_inputs(tmp_path):
    docs = SparseBatch.from_dicts([{1: 1.0}, {2: 1.0}], vocab_size=4)
    cases = [
        (dict(ids=["a"]), "got 1 ids for 2 documents"),
        (dict(ids=["a", "a"]), r"id #1 \('a'\) is a duplicate of id #0"),
        (dict(ids=["a", ""]), "id #1 is empty"),
        (dict(ids=["a", "b\nc"]), "line break"),
        (dict(ids=["a", 2]), r"id #1 \(2\) is not a string"),
        (dict(ids="ab"), "not a single string"),
        (dict(ids=["a", "b"], quantization="int4"), "quantization must be one of"),
        (dict(ids=["a", "b"], metadata={"x": object()}), "JSON"),
        (dict(docs=SparseBatch(np.array([0]), [], [], 4), ids=[]), "empty corpus"),
        (dict(docs={1: 1.0}, ids=["a"]), "SparseBatch"),
    ]
    for i, (kwargs, message) in enumerate(cases):
        kwargs = {"docs": docs, **kwargs}
        with pytest.raises(ValueError, match=message):
            SparseIndex.build(path=tmp_path / f"i{i}", **kwargs)
    assert os.listdir(tmp_path) == []


def test_bad_search_inputs(small_index):
    index, _ = small_index
    q = SparseBatch.from_dicts([{1: 1.0}], vocab_size=40)
    for k in (0, -1, 100_001, 1.5, True, "10", None):
        with pytest.raises(ValueError, match="k must be an integer between 1 and 100000"):
            index.search(q, k=k)
        with pytest.raises(ValueError, match="k must be"):
            index.batch_search(q, k=k)
    with pytest.raises(ValueError, match="exactly one row, got 2"):
        index.search(SparseBatch.concat([q, q]))
    with pytest.raises(ValueError, match="must be a SparseBatch"):
        index.search({1: 1.0})
    with pytest.raises(ValueError, match="threads must be"):
        index.batch_search(q, threads=0)
    assert index.search(q, k=np.int64(3))[0].size <= 3


def test_paths_are_strings_or_pathlike(tmp_path):
    docs = SparseBatch.from_dicts([{1: 1.0}], vocab_size=4)
    index = SparseIndex.build(docs, ["only"], str(tmp_path / "s"))
    assert isinstance(index.path, Path) and SparseIndex.load(str(tmp_path / "s")).ids.tolist() == ["only"]
