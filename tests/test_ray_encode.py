"""Encoding on Ray (lsr/ray_encode.py): a build on a local Ray instance (2 CPUs, started here) equals
``Collection.build`` of the same corpus, a worker killed mid-build loses and duplicates nothing, and bad lines
are named by file and line, as :func:`lsr.corpus.read_corpus` names them."""

import json
import logging
import re
import sys

import numpy as np
import pytest

from lsr import ray_encode as R
from lsr.collection import Collection
from lsr.corpus import read_corpus
from lsr.demo import write_demo_corpus
from lsr.errors import CorpusError, LsrError
from lsr.params import BuildConfig
from lsr.searcher import Searcher

# float32 weights: the segments' and the single build's scores compare without quantisation steps (each
# uint8 segment has its own scale, so uint8 scores differ by up to a step; docs/living.md)
CONFIG = BuildConfig(dense=None, quantization="float32")
QUERIES = ["how do I read a file line by line", "sort a list of dictionaries", "regular expression groups",
           "json encoding of objects", "thread pool executor"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 passages of the demo corpus, some with metadata (columns are merged across segments)."""
    tmp = tmp_path_factory.mktemp("ray-corpus")
    write_demo_corpus(tmp / "demo.jsonl")
    docs = [json.loads(line) for line in (tmp / "demo.jsonl").read_text().splitlines()[:60]]
    for i, d in enumerate(docs):
        if i % 2:
            d["metadata"] = {"part": i % 3}
    path = tmp / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def local_ray():
    """A Ray instance of this test module (the tests that need Ray skip without the extra)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def built(local_ray, corpus, splade, tmp_path_factory):
    """One build on Ray with 2 actors, several read tasks (small byte ranges), segments of <= 16 documents,
    whose first actor batch kills its worker after writing its segment (the test hook)."""
    tmp = tmp_path_factory.mktemp("ray-built")
    marker = tmp / "died"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(R.FAIL_ONCE_ENV, str(marker))
        mp.setattr(R, "MIN_CHUNK_BYTES", 12_000)
        summary = R.index_corpus_ray(corpus, tmp / "idx", config=CONFIG, segment_docs=16, actors=2,
                                     merge=False, show_progress=False, encoder=splade)
    return tmp / "idx", summary, marker


def _same_ranking(got, want, mode):
    """Equal results up to the order of tied documents (the two collections' rows are in other orders, and
    ties go by row). Scores agree to ~1e-6, not bit for bit: a text's SPLADE weights depend a little on the
    batch it was encoded in (padding changes the float sums)."""
    close = lambda a, b: abs(a - b) <= 1e-5 * abs(b) + 1e-6  # noqa: E731
    assert len(got.ids) == len(want.ids) and np.allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6), mode
    theirs = dict(zip(want.ids.tolist(), want.scores.tolist(), strict=True))
    for doc, score in zip(got.ids.tolist(), got.scores.tolist(), strict=True):
        assert close(score, theirs[doc] if doc in theirs else float(want.scores[-1])), (mode, doc)


def test_build_on_ray_equals_collection_build(built, corpus, splade, tmp_path):
    out, summary, _ = built
    Collection.build(corpus, tmp_path / "one", config=CONFIG, encoder=splade, show_progress=False)
    ours, one = Collection.open(out, device="cpu"), Collection.open(tmp_path / "one", device="cpu")
    assert sorted(ours.ids.tolist()) == sorted(one.ids.tolist()) and summary.documents == 60
    assert len(ours.segments) > 1 and set(ours.stats()["fields"]) == {"part"}
    s1, s2 = Searcher(ours), Searcher(one)
    for mode in ("sparse", "bm25", "sparse-idf", "hybrid"):
        hits = 0
        for got, want in zip(s1.query(QUERIES, s1.params(k=10, mode=mode)),
                             s2.query(QUERIES, s2.params(k=10, mode=mode)), strict=True):
            _same_ranking(got, want, mode)
            hits += len(got.ids)
        assert hits, mode
    ours.close()
    one.close()


def test_a_killed_worker_loses_and_duplicates_nothing(built, corpus):
    out, summary, marker = built
    assert marker.is_file()  # the hook did kill a worker, after it had written this segment
    died = marker.read_text()
    commit = json.loads(max(out.glob("commit-*.json"), key=lambda p: p.stat().st_mtime).read_text())
    names = [s["name"] for s in commit["segments"]]
    assert names.count(died) == 1 and len(set(names)) == len(names)
    assert sorted(p.name for p in (out / "segments").iterdir()) == sorted(names)  # no orphan segment
    assert sum(s["documents"] for s in commit["segments"]) == 60
    ids = Collection.open(out, load_encoders=False).ids.tolist()
    assert sorted(ids) == sorted(r.id for r in read_corpus(corpus).records)  # each document exactly once


def test_a_bad_line_is_named_by_file_and_line(local_ray, corpus, tmp_path):
    lines = corpus.read_text().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines[:4] + ["{not json"] + lines[4:]) + "\n")
    with pytest.raises(CorpusError, match=rf"^{bad}:5: not valid JSON"):
        R.index_corpus_ray(bad, tmp_path / "idx", config=CONFIG, show_progress=False)
    assert not (tmp_path / "idx").exists()  # repeated ids: test_scan_checks_lines_as_read_corpus_does


# -- no Ray needed --------------------------------------------------------------------------------------
def _scan(path, *, skip_bad, step):
    size = path.stat().st_size
    cols = [R.scan_batch({"path": [str(path)], "start": [s], "end": [min(s + step, size)]}, tokenizer=None)
            for s in range(0, size, step)]
    cat = {k: np.concatenate([c[k] for c in cols]) for k in cols[0]}
    errors = {int(o): m for o, m in zip(cat["offset"], cat["error"], strict=True) if m}
    return R.check_scan(path, cat["offset"], cat["key"], cat["length"], errors, skip_bad=skip_bad)


@pytest.mark.parametrize("step", [1, 7, 64, 1 << 20])
def test_byte_ranges_give_every_line_once(tmp_path, step):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "a", "text": "x"}\n\n{"id": "b", "text": "y"}\r\n{"id": "c", "text": "z"}')
    size = path.stat().st_size
    got = [x for s in range(0, size, step) for x in R.read_range(path, s, min(s + step, size))]
    assert b"".join(line for _, line in got) == path.read_bytes()
    assert [o for o, _ in got] == [0, 25, 26, 52]


@pytest.mark.parametrize("step", [5, 1 << 20])
def test_scan_checks_lines_as_read_corpus_does(tmp_path, step):
    good = [{"_id": f"d{i}", "title": "T", "text": f"text {i}"} for i in range(6)]
    lines = [json.dumps(d) for d in good]
    lines[2] = '{"_id": "d2"}'                       # no text
    lines.insert(4, json.dumps(good[1]))             # repeats d1 (line 5)
    lines.insert(1, "")                              # a blank line: not a document, still counted
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(lines) + "\n")
    want = read_corpus(path, skip_bad=True)
    got = _scan(path, skip_bad=True, step=step)
    assert got.examples == want.skipped_examples and got.skip.size == want.skipped
    ids = [R._id_at(path, int(o)) for o in got.kept]
    assert ids == [r.id for r in want.records]
    with pytest.raises(CorpusError) as e:
        read_corpus(path)
    with pytest.raises(CorpusError, match=f"^{re.escape(str(e.value))}$"):
        _scan(path, skip_bad=False, step=step)
    path.write_bytes(path.read_bytes() + b'{"_id": "x", "text": "\xff"}\n')  # not UTF-8: fatal, as there
    with pytest.raises(CorpusError, match=f"^{path}:9: not valid UTF-8$"):
        _scan(path, skip_bad=True, step=step)


def test_clear_errors_without_ray_or_cluster(monkeypatch):
    with pytest.raises(LsrError, match=r"cannot reach the Ray cluster at '127.0.0.1:1'"):
        R.check_reachable("127.0.0.1:1", timeout=2)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(LsrError, match=r"needs the 'ray' extra: pip install 'lsr-engine\[ray\]'"):
        R.import_ray()


def test_worker_errors_come_back_as_one_line():
    text = ("ray::MapWorker(MapBatches(EncoderActor)).submit() (pid=1)\n  File \"lsr/bulk.py\", line 117\n"
            "lsr.errors.CorpusError: metadata field 'a' mixes integer and keyword values\n\nThe above ...")
    e = R.remote_error(RuntimeError(text))
    assert type(e) is CorpusError and str(e) == "metadata field 'a' mixes integer and keyword values"
    assert type(R.remote_error(RuntimeError("lsr.nowhere.Oops: gone"))) is LsrError
    assert R.remote_error(RuntimeError("a plain failure")) is None
    assert R.remote_error(CorpusError("raised here")) is None


def test_encoding_token_ids_equals_encoding_texts(splade):
    texts = ["a short text", "SPLADE weights vocabulary terms of a longer text " * 40, "x"]
    ids = splade.tokenizer(texts, truncation=True, max_length=splade.max_length)["input_ids"]
    got, want = splade.encode_token_ids(ids, batch_size=2), splade.encode_documents(texts, batch_size=2)
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.values, want.values)
    with pytest.raises(ValueError, match="token ids"):
        splade.encode_token_ids([[]])
