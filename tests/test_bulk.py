"""The bounded-memory build (lsr.bulk): a corpus written as segments of a fixed size, merged up to a bounded
size or left as written; search against brute force, the same documents built in one piece, failures that
leave nothing behind, and `lsr index --segment-docs`."""

import json
import os

import numpy as np
import pytest

from lsr.bulk import BulkBuilder, merge_groups, take_rows
from lsr.cli import main
from lsr.collection import Collection
from lsr.corpus import Record
from lsr.errors import CorpusError
from lsr.params import BuildConfig, SearchParams
from lsr.testing import random_docs, random_query
from tests.test_living import VOCAB, _brute, _rows

SPARSE_ONLY = BuildConfig(dense=None, bm25=False, sparse_idf=False, quantization="float32")
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda sigma tau omega protein cell".split()


def _corpus(tmp_path, n, rng, name="c.jsonl"):
    docs = [{"id": f"d{i}", "title": "", "text": " ".join(rng.choice(WORDS, int(rng.integers(2, 9))))}
            for i in range(n)]
    path = tmp_path / name
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path, docs


def _check(c, truth, rng, queries=4):
    r = c.retrievers["sparse"]
    for _ in range(queries):
        q = random_query(rng, VOCAB, integer=True, extra_vocab=0)
        for k in (1, 7, 30):
            want = _brute(truth, q, k)
            p = SearchParams.check(k=k, speed="safe")
            rows, scores = r.search(q, k, params=p, mask=c.search_mask())[0]
            assert np.allclose(scores, [s for s, _ in want], rtol=1e-6)
            true = {d: s for s, d in _brute(truth, q, len(truth))}
            assert np.allclose([true.get(d, -1.0) for d in c.ids[rows].tolist()], scores, rtol=1e-6)


def test_merge_groups_bound_each_merged_segment():
    assert merge_groups([100, 100, 100, 250], 300) == [[0, 1, 2]]
    assert merge_groups([5, 5, 5, 5, 5], 10) == [[0, 1], [2, 3]]
    assert merge_groups([400, 400], 300) == []
    assert merge_groups([1, 2, 3], 100) == [[0, 1, 2]]


@pytest.mark.parametrize("seed", range(3))
def test_segments_of_a_bounded_build_search_exactly(tmp_path, splade, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(120, 220))
    path, docs = _corpus(tmp_path, n, rng)
    vecs = random_docs(rng, n, VOCAB, 6, integer=True)
    truth = dict(zip([d["id"] for d in docs], _rows(vecs), strict=True))
    out = tmp_path / "idx"
    summary = Collection.build(path, out, config=SPARSE_ONLY, encoder=splade, vectors={"sparse": vecs},
                               segment_docs=40, merge=False, show_progress=False)
    assert summary.documents == n
    c = Collection.open(out, load_encoders=False)
    assert [s.ref.documents for s in c.segments] == [40] * (n // 40) + ([n % 40] if n % 40 else [])
    assert sorted(c.ids.tolist()) == sorted(truth)
    _check(c, truth, rng)
    c.close()
    assert BulkBuilder.merge_bounded(out, max_docs=100) >= 1
    c = Collection.open(out, load_encoders=False)
    assert all(s.ref.documents <= 100 for s in c.segments) and len(c) == n
    _check(c, truth, rng)
    c.close()
    # the same corpus in one segment: a plain folder (no commit point), same answers
    plain = tmp_path / "plain"
    Collection.build(path, plain, config=SPARSE_ONLY, encoder=splade, vectors={"sparse": vecs},
                     show_progress=False)
    p = Collection.open(plain, load_encoders=False)
    assert p.segments is None and not any(f.startswith("commit-") for f in os.listdir(plain))
    _check(p, truth, rng)


@pytest.mark.parametrize("bm25", [True, False])
def test_sparse_idf_weights_match_a_build_in_one_piece(tmp_path, splade, bm25):
    """sparse-idf's IDF comes from every segment's texts (with or without BM25's statistics)."""
    rng = np.random.default_rng(7)
    path, docs = _corpus(tmp_path, 90, rng)
    vecs = random_docs(rng, 90, VOCAB, 6, integer=True)
    cfg = BuildConfig(dense=None, bm25=bm25, sparse_idf=True, quantization="float32")
    Collection.build(path, tmp_path / "seg", config=cfg, encoder=splade, vectors={"sparse": vecs},
                     segment_docs=25, merge=False, show_progress=False)
    Collection.build(path, tmp_path / "one", config=cfg, encoder=splade, vectors={"sparse": vecs},
                     show_progress=False)
    seg = Collection.open(tmp_path / "seg", load_encoders=False)
    one = Collection.open(tmp_path / "one", load_encoders=False)
    assert len(seg.segments) == 4
    a = seg.retrievers["sparse-idf"].parts[0].retriever.weights
    b = one.retrievers["sparse-idf"].weights
    assert np.allclose(a, b, rtol=1e-6) and (b > 0).any()


def test_a_failed_build_leaves_the_previous_index_alone(tmp_path, splade):
    rng = np.random.default_rng(3)
    path, docs = _corpus(tmp_path, 60, rng)
    vecs = random_docs(rng, 60, VOCAB, 6, integer=True)
    out = tmp_path / "idx"
    Collection.build(path, out, config=SPARSE_ONLY, encoder=splade, vectors={"sparse": vecs},
                     show_progress=False)
    before = sorted(os.listdir(out)), (out / "manifest.json").read_bytes()
    records = [Record(d["id"], "", d["text"]) for d in docs]
    with pytest.raises(RuntimeError, match="boom"):
        with BulkBuilder(out, config=SPARSE_ONLY, segment_docs=20, overwrite=True,
                         splade_info={"name": "splade-tiny"}, show_progress=False) as b:
            b.add(records[:50], sparse=take_rows(vecs, 0, 50))
            assert len(os.listdir(b.folder / "segments")) == 2
            raise RuntimeError("boom")
    assert (sorted(os.listdir(out)), (out / "manifest.json").read_bytes()) == before
    assert sorted(os.listdir(tmp_path)) == ["c.jsonl", "idx"]  # no scratch folder left
    with BulkBuilder(tmp_path / "never", config=SPARSE_ONLY, segment_docs=20, show_progress=False) as b:
        b.add(records[:30], sparse=take_rows(vecs, 0, 30))  # left without finish(): nothing kept
    assert not (tmp_path / "never").exists()


def test_an_id_repeated_across_segments_is_refused(tmp_path):
    rng = np.random.default_rng(4)
    vecs = random_docs(rng, 50, VOCAB, 6, integer=True)
    records = [Record(f"d{i % 30}", "", "text") for i in range(50)]
    with pytest.raises(CorpusError, match="repeat id 'd"):
        with BulkBuilder(tmp_path / "idx", config=SPARSE_ONLY, segment_docs=20, show_progress=False,
                         splade_info={"name": "x"}) as b:
            b.add(records, sparse=vecs)
            b.finish()
    assert os.listdir(tmp_path) == []


def test_cli_index_writes_bounded_segments(tmp_path, capsys):
    rng = np.random.default_rng(5)
    path, docs = _corpus(tmp_path, 45, rng)
    out = tmp_path / "idx"
    assert main(["index", "--corpus", str(path), "--out", str(out), "--no-dense", "--no-bm25",
                 "--no-sparse-idf", "--segment-docs", "20", "--no-merge", "--no-progress"]) == 0
    c = Collection.open(out, load_encoders=False)
    assert [s.ref.documents for s in c.segments] == [20, 20, 5] and len(c) == 45
    c.close()
    assert main(["merge", "--index", str(out), "--max-segments", "1"]) == 0
    with pytest.raises(SystemExit) as e:
        main(["index", "--corpus", str(path), "--out", str(tmp_path / "x"), "--segment-docs", "0"])
    assert e.value.code == 2
    assert main(["index", "--corpus", str(path), "--out", str(tmp_path / "x"), "--actors", "2"]) == 2
    err = capsys.readouterr().err
    assert "--actors goes with --ray" in err


_KILLED_CHILD = """
import os, signal, sys
import numpy as np
from lsr.bulk import BulkBuilder, take_rows
from lsr.corpus import Record
from lsr.params import BuildConfig
from lsr.testing import random_docs
vecs = random_docs(np.random.default_rng(1), 90, 60, 6, integer=True)
cfg = BuildConfig(dense=None, bm25=False, sparse_idf=False, quantization="float32")
with BulkBuilder(sys.argv[1], config=cfg, segment_docs=20, overwrite=True, splade_info={"name": "x"},
                 show_progress=False) as b:
    b.add([Record(f"n{i}", "", "t") for i in range(50)], sparse=take_rows(vecs, 0, 50))
    print(len(os.listdir(b.folder / "segments")), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_build_leaves_the_previous_index_and_no_scratch(tmp_path, splade):
    """A build process killed (SIGKILL) after writing segments: the index at the target is untouched, and the
    next build removes what the killed one left."""
    import subprocess
    import sys

    rng = np.random.default_rng(6)
    path, _ = _corpus(tmp_path, 30, rng)
    out = tmp_path / "idx"
    Collection.build(path, out, config=SPARSE_ONLY, encoder=splade,
                     vectors={"sparse": random_docs(rng, 30, VOCAB, 6, integer=True)}, show_progress=False)
    before = (out / "manifest.json").read_bytes()
    p = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(out)], capture_output=True, text=True)
    assert p.returncode == -9 and p.stdout.strip() == "2"
    assert (out / "manifest.json").read_bytes() == before
    assert len(Collection.open(out, load_encoders=False)) == 30
    left = [n for n in os.listdir(tmp_path) if n.startswith("idx.")]
    assert left  # the killed build's scratch folder, locked by nobody now
    Collection.build(path, out, config=SPARSE_ONLY, encoder=splade, overwrite=True,
                     vectors={"sparse": random_docs(rng, 30, VOCAB, 6, integer=True)}, show_progress=False)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("idx.")]
