"""The living collection: segments, commit points, deletions, upserts, merges, the writer lock, readers'
snapshots, and exact search across segments (against brute force over the live documents)."""

import json
import os

import numpy as np
import pytest

from lsr.collection import Collection
from lsr.errors import IndexFormatError
from lsr.params import BuildConfig, SearchParams
from lsr.segments import LOCK_FILE, WriterLockedError, commit_generations
from lsr.testing import random_docs, random_query
from lsr.types import SparseBatch
from lsr.writer import tiered_merges

VOCAB = 60
SPARSE_ONLY = BuildConfig(dense=None, bm25=False, sparse_idf=False, quantization="float32")


def _docs(prefix, n, start=0):
    return [{"id": f"{prefix}{i}", "title": "", "text": f"document {prefix}{i}"}
            for i in range(start, start + n)]


def _corpus(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def _base(tmp_path, splade, n, rng, *, config=SPARSE_ONLY, name="coll"):
    """A collection of ``n`` documents with random integer vectors (exact float32 sums)."""
    docs = _docs("b", n)
    vecs = random_docs(rng, n, VOCAB, 6, integer=True)
    out = tmp_path / name
    Collection.build(_corpus(tmp_path / f"{name}.jsonl", docs), out, config=config, encoder=splade,
                     vectors={"sparse": vecs}, show_progress=False)
    return out, dict(zip([d["id"] for d in docs], _rows(vecs), strict=True))


def _rows(batch):
    return [dict(zip(batch.indices[a:b].tolist(), batch.values[a:b].tolist(), strict=True))
            for a, b in zip(batch.indptr[:-1], batch.indptr[1:], strict=True)]


def _brute(truth, q, k):
    """Top-k (id, score) over the live documents ``truth`` by dot product, ties by id order of rows."""
    qd = {}
    for t, w in zip(q.indices.tolist(), q.values.tolist(), strict=True):
        if t < VOCAB:
            qd[t] = qd.get(t, 0.0) + w
    scored = [(sum(w * doc.get(t, 0.0) for t, w in qd.items()), d) for d, doc in truth.items()]
    scored = [(s, d) for s, d in scored if s > 0]
    scored.sort(key=lambda x: -x[0])
    return scored[:k]


def _check_search(c, truth, rng, *, queries=6):
    r = c.retrievers["sparse"]
    mask = c.search_mask()
    for _ in range(queries):
        q = random_query(rng, VOCAB, integer=True, extra_vocab=0)
        for k in (1, 5, 20):
            want = _brute(truth, q, k)
            for speed in ("safe", "exact"):
                got = r.search(q, k, params=SearchParams.check(k=k, speed=speed), mask=mask)[0]
                ids = c.ids[got[0]].tolist()
                assert len(ids) == len(want), (speed, k)
                assert np.allclose(got[1], [s for s, _ in want], rtol=1e-6), (speed, k)
                true = {d: s for s, d in _brute(truth, q, len(truth))}
                assert np.allclose([true.get(d, -1.0) for d in ids], got[1], rtol=1e-6)  # right documents
                assert len(set(ids)) == len(ids)
                assert not set(ids) - set(truth)  # deleted documents never appear


@pytest.mark.parametrize("seed", range(8))
def test_safe_search_is_exact_across_segments_with_deletions(tmp_path, splade, seed):
    rng = np.random.default_rng(seed)
    out, truth = _base(tmp_path, splade, int(rng.integers(20, 120)), rng)
    c = Collection.open(out, load_encoders=False)
    for batch in range(int(rng.integers(2, 6))):
        n = int(rng.integers(1, 40))
        docs = _docs(f"a{batch}-", n)
        vecs = random_docs(rng, n, VOCAB, 6, integer=True)
        c.add(docs, vectors={"sparse": vecs})
        truth.update(zip([d["id"] for d in docs], _rows(vecs), strict=True))
        gone = rng.choice(sorted(truth), size=int(rng.integers(0, 8)), replace=False).tolist()
        c.delete(gone)
        for d in gone:
            truth.pop(d)
        if rng.random() < 0.5 and truth:  # an upsert of a live document
            d = sorted(truth)[int(rng.integers(len(truth)))]
            v = random_docs(rng, 1, VOCAB, 6, integer=True)
            c.add([{"id": d, "text": "replaced"}], vectors={"sparse": v})
            truth[d] = _rows(v)[0]
        c.commit()
        assert len(c) == len(truth)
        _check_search(c, truth, rng, queries=3)
    c.merge(max_segments=2)
    _check_search(c, truth, rng, queries=3)
    c.merge(max_segments=1)
    assert c.stats()["segments"] == 1 and c.stats()["deleted"] == 0
    _check_search(Collection.open(out, load_encoders=False), truth, rng, queries=3)


def test_uint8_segments_each_keep_their_scale(tmp_path, splade):
    """A later document with weights far above the first build's maximum is not clipped."""
    rng = np.random.default_rng(1)
    config = BuildConfig(dense=None, bm25=False, sparse_idf=False)
    out, truth = _base(tmp_path, splade, 50, rng, config=config)
    c = Collection.open(out, load_encoders=False)
    big = SparseBatch.from_dicts([{3: 1000.0, 4: 2.0}], vocab_size=VOCAB)
    c.add([{"id": "big", "text": "big"}], vectors={"sparse": big})
    c.commit()
    q = SparseBatch.from_dicts([{3: 1.0}], vocab_size=VOCAB)
    rows, scores = c.retrievers["sparse"].search(q, 3, params=SearchParams.check(speed="safe"))[0]
    assert c.ids[rows[0]] == "big" and scores[0] == pytest.approx(1000.0, rel=1e-3)


def test_upsert_delete_and_documents(tmp_path, splade):
    rng = np.random.default_rng(2)
    out, _ = _base(tmp_path, splade, 10, rng)
    c = Collection.open(out, load_encoders=False)
    v = random_docs(rng, 2, VOCAB, 4, integer=True)
    assert c.add([{"id": "b3", "title": "T", "text": "new text"}, {"id": "n1", "text": "x"}],
                 vectors={"sparse": v}) == 2
    assert c.delete(["b4", "nope"]) == 1
    info = c.commit()
    assert (info.added, info.deleted, info.documents, info.generation) == (2, 2, 10, 2)
    assert c.docstore.get("b3").text == "new text" and c.docstore.get("b4") is None
    assert c.rows(["b4"]).size == 0 and c.rows(["b3", "n1"]).size == 2
    again = Collection.open(out, load_encoders=False)
    assert len(again) == 10 and again.docstore.get("n1").text == "x"
    assert c.commit() is None  # nothing staged
    with pytest.raises(ValueError, match="max_segments"):
        c.merge(max_segments=0)
    with pytest.raises(ValueError, match="document #0"):
        c.add([{"id": "z", "title": "no text"}],
              vectors={"sparse": SparseBatch.from_dicts([{1: 1.0}], vocab_size=VOCAB)})


def test_second_writer_gets_a_clear_error(tmp_path, splade):
    rng = np.random.default_rng(3)
    out, _ = _base(tmp_path, splade, 10, rng)
    a = Collection.open(out, load_encoders=False)
    b = Collection.open(out, load_encoders=False)
    a.delete(["b1"])
    with pytest.raises(WriterLockedError, match="another writer"):
        b.delete(["b2"])
    a.commit()  # releases the lock
    b.delete(["b2"])
    b.commit()
    assert len(Collection.open(out, load_encoders=False)) == 8
    assert (out / LOCK_FILE).exists()


def test_readers_keep_their_snapshot_and_files_go_after(tmp_path, splade):
    rng = np.random.default_rng(4)
    out, truth = _base(tmp_path, splade, 30, rng)
    w = Collection.open(out, load_encoders=False)
    w.add(_docs("x", 5), vectors={"sparse": random_docs(rng, 5, VOCAB, 5, integer=True)})
    w.commit()
    reader = Collection.open(out, load_encoders=False)  # holds commit 2
    w.delete(["x1"])
    w.commit()
    w.merge(max_segments=1)  # commit 4: the base and x segment merged; commit 2 still held
    assert 2 in commit_generations(out) and all((out / r.dir).is_dir() for r in reader.manifest.segments)
    assert reader.rows(["x1"]).size == 1 and len(reader) == 35  # its snapshot
    q = SparseBatch.from_dicts([{1: 1.0}], vocab_size=VOCAB)
    reader.retrievers["sparse"].search(q, 5, params=SearchParams.check(speed="safe"),
                                       mask=reader.search_mask())
    reader.close()
    w.delete(["x2"])
    w.commit()
    assert commit_generations(out) == [5]
    assert sorted(p.name for p in (out / "segments").iterdir()) == [w.manifest.segments[0].dir.split("/")[1]]
    assert not (out / reader.manifest.segments[1].dir).exists()
    assert not (out / "sparse").exists() and not (out / "ids.txt").exists()  # segment "." merged away
    assert len(Collection.open(out, load_encoders=False)) == 33


def test_stray_and_damaged_files(tmp_path, splade):
    rng = np.random.default_rng(5)
    out, _ = _base(tmp_path, splade, 10, rng)
    c = Collection.open(out, load_encoders=False)
    c.delete(["b0"])
    c.commit()
    (out / "segments").mkdir(exist_ok=True)
    (out / "segments" / "s000009.tmp-0123456789ab").mkdir()
    (out / "deletes" / "orphan-3.npy").write_bytes(b"x")
    (out / "commit-3.json.tmp-01234567").write_text("{")
    (out / "commit-7.json").write_text('{"kind": "commit"}')  # damaged newer commit point: skipped
    assert len(Collection.open(out, load_encoders=False)) == 9
    c.delete(["b1"])
    with pytest.raises(Exception, match="newer|already exists"):  # the damaged one holds generation 7
        c.commit()
    os.remove(out / "commit-7.json")
    c.commit()
    names = sorted(p.name for p in out.iterdir())
    assert "commit-3.json.tmp-01234567" not in names and not (out / "deletes" / "orphan-3.npy").exists()
    assert not (out / "segments" / "s000009.tmp-0123456789ab").exists()
    (out / f"commit-{c.manifest.generation}.json").write_text("{}")
    (out / "commit-2.json").write_text("{}")
    with pytest.raises(IndexFormatError, match="no valid commit point"):
        Collection.open(out, load_encoders=False)


def test_tiered_policy():
    assert tiered_merges([(100, 0)] * 9) == []
    assert tiered_merges([(100, 0)] * 10) == list(range(10))
    assert tiered_merges([(50_000, 0)] + [(100, 0)] * 10) == list(range(1, 11))  # similar sizes only
    assert tiered_merges([(1000, 400), (1000, 0)]) == [0]  # mostly deleted: rewritten
    assert tiered_merges([(10, 0), (5, 0), (7, 0)], max_segments=1) == [0, 1, 2]
    assert tiered_merges([(10, 0), (5, 0), (7, 0)], max_segments=2) == [1, 2]
    assert tiered_merges([(10, 3)], max_segments=1) == [0] and tiered_merges([(10, 0)], max_segments=1) == []
