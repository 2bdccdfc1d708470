"""Vectors encoded elsewhere (`lsr index --vectors`): the JsonVectorCollection reader (batches, folders, gzip,
every bad line named by file and line), the vocabularies (a tokenizer, the files' tokens, integer ids), and
round trips through `lsr export` in both directions. No SPLADE model runs: the vectors are given, and only
splade-tiny's tokenizer is loaded."""

import gzip
import json

import numpy as np
import pytest

from lsr.cli import main
from lsr.collection import Collection
from lsr.errors import CorpusError, IndexFormatError
from lsr.export import export_pyserini
from lsr.params import BuildConfig, SearchParams
from lsr.searcher import Searcher
from lsr.testing import random_docs
from lsr.types import SparseBatch
from lsr.vectorfiles import (
    VOCABULARY_FILE,
    VectorFileError,
    Vocabulary,
    index_vectors,
    read_vector_files,
    vector_files,
)

SPARSE = BuildConfig(dense=None, bm25=False, sparse_idf=False)


@pytest.fixture(scope="module")
def bert():
    """splade-tiny's WordPiece vocabulary (the tokenizer only)."""
    return Vocabulary.from_model("splade-tiny")


def _write(path, docs, *, gz=False):
    text = "".join(d if isinstance(d, str) else json.dumps(d) + "\n" for d in docs)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _doc(i, vec, **extra):
    return {"id": f"d{i}", "contents": "", "vector": vec, **extra}


def _read_all(path, vocab, **kw):
    reader = read_vector_files(path, vocab=vocab, **kw)
    batches = list(reader)
    return reader, batches


def _rows(batch):
    return [dict(zip(batch.indices[a:b].tolist(), batch.values[a:b].tolist(), strict=True))
            for a, b in zip(batch.indptr[:-1], batch.indptr[1:], strict=True)]


def _export_docs(folder):
    """{id: {token: weight}} of an export folder, and its lines in file order."""
    lines = [line for f in sorted((folder / "docs").iterdir()) for line in f.read_text().splitlines()]
    return {(o := json.loads(line))["id"]: o["vector"] for line in lines}, lines


# -- the reader ----------------------------------------------------------------------------------------------
def test_reader_streams_a_folder_in_batches(tmp_path, bert):
    src = tmp_path / "vecs"
    _write(src / "b.jsonl", [_doc(3, {"fever": 0.5}), _doc(4, {"cold": 1.0})])
    _write(src / "a.jsonl.gz", [_doc(1, {"hello": 1.5, "world": 0.25, "##s": 0}, contents="hello world",
                                     metadata={"lang": "en"}), "\n", _doc(2, {})], gz=True)
    _write(src / "sub" / "c.json", [_doc(5, {"[id30521]": 2.0, "fever": 1})])
    _write(src / ".hidden.jsonl", ["not json\n"])
    (src / "notes.txt").write_text("ignored")
    found = [f.relative_to(src).as_posix() for f in vector_files(src)]
    assert found == ["a.jsonl.gz", "b.jsonl", "sub/c.json"]
    reader, batches = _read_all(src, bert, batch_docs=2)
    assert [len(r) for r, _ in batches] == [2, 2, 1] and reader.documents == 5 and reader.skipped == 0
    records = [r for rs, _ in batches for r in rs]
    assert [r.id for r in records] == ["d1", "d2", "d3", "d4", "d5"]
    assert (records[0].text, records[0].title, records[0].metadata) == ("hello world", "", {"lang": "en"})
    rows = [row for _, b in batches for row in _rows(b)]
    tok = bert.term
    assert rows[0] == {tok("hello"): 1.5, tok("world"): 0.25}  # the weight 0 is dropped
    assert rows[1] == {} and rows[4] == {30521: 2.0, tok("fever"): 1.0}
    for _, b in batches:  # ascending term ids within each row, the vocabulary's size
        assert b.vocab_size == 30522
        assert all(np.all(np.diff(b.indices[x:y]) > 0) for x, y in zip(b.indptr[:-1], b.indptr[1:]))


BAD = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ({"vector": {"fever": 1}}, "no 'id' field"),
    ({"id": None, "vector": {"fever": 1}}, "the document id is null"),
    ({"id": " ", "vector": {"fever": 1}}, "non-empty single-line string"),
    ({"id": "x"}, "has no 'vector' field"),
    ({"id": "x", "vector": [["fever", 1]]}, "'vector' must be an object"),
    ({"id": "x", "vector": {"fever": "1.5"}}, "must be a number, got \"1.5\""),
    ({"id": "x", "vector": {"fever": True}}, "must be a number, got True"),
    ({"id": "x", "vector": {"fever": -0.5}}, "must be a finite number >= 0, got -0.5"),
    ('{"id": "x", "vector": {"fever": NaN}}\n', "got nan"),
    ('{"id": "x", "vector": {"fever": 1e400}}\n', "got inf"),
    ({"id": "x", "vector": {"fever": 1e39}}, "finite number >= 0"),  # beyond float32
    ('{"id": "x", "vector": {"fever": 1, "cold": 2, "fever": 3}}\n', "token 'fever' appears twice"),
    ({"id": "x", "vector": {"fever": 1, "no-such-token": 2}}, "token 'no-such-token' is not in the vocab"),
    ({"id": "x", "vector": {"[unused0]": 1, "[id1]": 2}}, "are the same term (id 1)"),
    ({"id": "x", "vector": {"fever": 1}, "contents": 7}, "'contents' must be a string"),
    ({"id": "x", "vector": {"fever": 1}, "metadata": {"a": {"b": 1}}}, "metadata"),
    ({"id": "d0", "vector": {"cold": 1}}, "repeats id 'd0' (first seen at {f}:1)"),
]


@pytest.mark.parametrize("line,message", BAD, ids=[m.split("(")[0][:30] for _, m in BAD])
def test_a_bad_line_names_file_and_line(tmp_path, bert, line, message):
    f = _write(tmp_path / "v.jsonl", [_doc(0, {"fever": 1.0}), "\n", line])
    with pytest.raises(VectorFileError) as e:
        _read_all(f, bert)
    assert isinstance(e.value, CorpusError)
    assert str(e.value).startswith(f"{f}:3: ") and message.format(f=f) in str(e.value), str(e.value)
    reader, batches = _read_all(f, bert, skip_bad=True)  # skipped and counted instead
    assert reader.skipped == 1 and [r.id for rs, _ in batches for r in rs] == ["d0"]
    assert reader.skipped_examples == [str(e.value)]


def test_repeated_ids_across_batches_and_files(tmp_path, bert):
    a = _write(tmp_path / "v" / "a.jsonl", [_doc(i, {"fever": 1.0}) for i in range(5)])
    b = _write(tmp_path / "v" / "b.jsonl", [_doc(7, {"cold": 1.0}), _doc(3, {"cold": 2.0}), "{bad\n"])
    with pytest.raises(VectorFileError, match=f"^{b}:2: repeats id 'd3' \\(first seen at {a}:4\\)"):
        _read_all(tmp_path / "v", bert, batch_docs=2)  # the earlier repeat, not the later bad JSON
    reader, batches = _read_all(tmp_path / "v", bert, batch_docs=2, skip_bad=True)
    assert [r.id for rs, _ in batches for r in rs] == ["d0", "d1", "d2", "d3", "d4", "d7"]
    assert reader.skipped == 2 and reader.documents == 6
    assert sum(len(b) for _, b in batches) == 6


def test_unreadable_inputs(tmp_path, bert):
    with pytest.raises(VectorFileError, match="no such file or folder"):
        read_vector_files(tmp_path / "nope", vocab=bert)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VectorFileError, match=r"no \*\.jsonl"):
        read_vector_files(tmp_path / "empty", vocab=bert)
    bad_gz = tmp_path / "x.jsonl.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(VectorFileError, match="not a readable gzip file"):
        _read_all(bad_gz, bert)
    latin = tmp_path / "l.jsonl"
    latin.write_bytes(b'{"id": "a", "vector": {}}\n{"id": "\xe9", "vector": {}}\n')
    with pytest.raises(VectorFileError, match=f"^{latin}:2: not valid UTF-8"):
        _read_all(latin, bert)


# -- vocabularies -------------------------------------------------------------------------------------------
def test_vocabularies(tmp_path, bert):
    assert bert.term("fever") == 9016 and bert.term("[id5]") == 5 and bert.term("no-such-token") is None
    f = _write(tmp_path / "v.jsonl", [_doc(1, {"zeta": 1, "alpha": 2}), "{bad\n", _doc(2, {"Émile": 1})])
    v = Vocabulary.from_files(f)
    assert v.tokens == ["alpha", "zeta", "Émile"] and v.vocab_size == 3  # sorted by code point
    back = Vocabulary.load(v.save(tmp_path))
    assert back.tokens == v.tokens and Vocabulary.load(tmp_path).tokens == v.tokens
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / VOCABULARY_FILE).write_text('["a", "a"]')
    with pytest.raises(VectorFileError, match="distinct"):
        Vocabulary.load(tmp_path / "broken")
    q = v.batch([{"zeta": 0.5, "Émile": 2.0}])
    assert q.indices.tolist() == [1, 2] and q.values.tolist() == [0.5, 2.0] and q.vocab_size == 3
    with pytest.raises(ValueError, match="'beta' is not in the vocabulary"):
        v.batch([{"beta": 1.0}])
    ids = Vocabulary.ids(100)
    assert ids.term("42") == 42 and ids.term("042") is None and ids.term("100") is None
    g = _write(tmp_path / "ids.jsonl", [{"id": "a", "vector": {"7": 1.5, "99": 0.5}},
                                        {"id": "b", "vector": {}}])
    _, batches = _read_all(g, ids)
    assert _rows(batches[0][1]) == [{7: 1.5, 99: 0.5}, {}]
    with pytest.raises(VectorFileError, match="token '100' is not in the vocabulary"):
        _read_all(_write(tmp_path / "big.jsonl", [{"id": "a", "vector": {"100": 1}}]), ids)


# -- building -----------------------------------------------------------------------------------------------
class _Described:
    """Stands for splade-tiny where a build only asks the encoder to describe itself (vectors given)."""

    def describe(self):
        return {"name": "splade-tiny", "max_length": 256}


def _collection(tmp_path, rng, n, *, quantization):
    docs = [{"id": f"doc{i:03d}", "title": "", "text": f"text {i}"} for i in range(n)]
    corpus = _write(tmp_path / "corpus.jsonl", docs)
    vecs = random_docs(rng, n, 30522, 12)
    out = tmp_path / "orig"
    Collection.build(corpus, out, config=BuildConfig(dense=None, bm25=False, sparse_idf=False,
                                                     quantization=quantization),
                     encoder=_Described(), vectors={"sparse": vecs}, show_progress=False)
    return out


def _same_search(a, b, rng, *, step=0.0):
    """The same top 10 (ids, order, scores) in collections ``a`` and ``b``; with ``step`` (b's weights are
    a's rounded to that step) the k-th best scores differ by at most half a step per query weight."""
    ca, cb = Collection.open(a, load_encoders=False), Collection.open(b, load_encoders=False)
    for _ in range(8):
        q = SparseBatch.from_dicts([{int(t): float(rng.uniform(0.2, 2.0)) for t in rng.choice(150, 10)}],
                                   vocab_size=30522)  # the frequent terms of random_docs
        params = SearchParams.check(k=10, speed="safe")
        ra = ca.retrievers["sparse"].search(q, 10, params=params)[0]
        rb = cb.retrievers["sparse"].search(q, 10, params=params)[0]
        assert len(ra[0]) == len(rb[0]) > 0
        if step:
            assert np.all(np.abs(ra[1] - rb[1]) <= step / 2 * q.values.sum() + 1e-5)
        else:
            assert ca.ids[ra[0]].tolist() == cb.ids[rb[0]].tolist()
            assert np.allclose(ra[1], rb[1], rtol=1e-5)


@pytest.mark.parametrize("quantization", ["uint8", "float32"])
def test_round_trip_through_our_export(tmp_path, bert, quantization):
    rng = np.random.default_rng(7)
    orig = _collection(tmp_path, rng, 40, quantization=quantization)
    first = export_pyserini(orig, tmp_path / "exp1")
    config = BuildConfig(dense=None, quantization=quantization, reorder=False)  # rows as the export has them
    s = index_vectors(tmp_path / "exp1", tmp_path / "copy", vocab=bert, config=config, show_progress=False)
    assert (s.documents, s.postings) == (40, first.postings)
    copy = Collection.open(tmp_path / "copy", load_encoders=False)
    assert list(copy.retrievers) == ["sparse"]  # no texts in an export: no bm25, no sparse-idf
    assert copy.manifest.retrievers["sparse"].encoder["name"] == "splade-tiny"
    export_pyserini(tmp_path / "copy", tmp_path / "exp2")
    one, lines1 = _export_docs(tmp_path / "exp1")
    two, lines2 = _export_docs(tmp_path / "exp2")
    assert lines1 == lines2 and one == two  # the same ids, tokens and integer weights, in the same order
    # scores too (the export's scale is applied): exactly for uint8 impacts, within export's rounding of
    # float32 weights to 0.01
    _same_search(orig, tmp_path / "copy", rng, step=0.0 if quantization == "uint8" else 0.01)
    # the default build re-orders rows (block-max pruning): the same documents, the same search
    index_vectors(tmp_path / "exp1", tmp_path / "copy2", vocab=bert,
                  config=BuildConfig(quantization=quantization), show_progress=False)
    export_pyserini(tmp_path / "copy2", tmp_path / "exp3")
    assert _export_docs(tmp_path / "exp3")[0] == one
    _same_search(tmp_path / "copy", tmp_path / "copy2", rng)


def test_hand_written_collection_to_export_within_the_quantisation_step(tmp_path, bert):
    rng = np.random.default_rng(3)
    words = ["fever", "cold", "virus", "cell", "protein", "gene", "##s", "the", "[unused7]", "treatment"]
    docs = {f"p{i}": {w: round(float(rng.uniform(0.01, 4.0)), 4) for w in rng.choice(words, 5, replace=False)}
            for i in range(30)}
    _write(tmp_path / "in.jsonl", [{"id": i, "contents": f"about {' '.join(v)}", "vector": v}
                                   for i, v in docs.items()])
    s = index_vectors(tmp_path / "in.jsonl", tmp_path / "c", vocab=bert, show_progress=False)
    assert s.documents == 30
    c = Collection.open(tmp_path / "c", load_encoders=False)
    assert list(c.retrievers) == ["sparse", "bm25", "sparse-idf"]  # texts and a tokenizer: all three
    assert c.retrievers["bm25"].index.nnz >= 30 * 6  # "about" and 5 words a document
    # the manifest names splade-tiny: text queries are encoded with it (the one model this file loads)
    hits = Searcher.load(tmp_path / "c", device="cpu").search("fever", k=30, mode="sparse", with_text=False)
    assert {i for i, v in docs.items() if "fever" in v} <= {h.id for h in hits}
    assert "fever" in docs[hits[0].id]
    export_pyserini(tmp_path / "c", tmp_path / "exp")
    scale = json.loads((tmp_path / "exp" / "export.json").read_text())["scale"]
    got, _ = _export_docs(tmp_path / "exp")
    assert got.keys() == docs.keys()
    for i, vec in docs.items():
        assert got[i].keys() == vec.keys()
        for t, w in vec.items():
            assert abs(got[i][t] * scale - w) <= scale / 2 + 1e-6, (i, t)


def test_files_vocabulary_and_query_vectors(tmp_path):
    words = [["apple", "pear"], ["pear", "plum"], ["kiwi"], ["apple", "kiwi", "plum"]]
    docs = [_doc(i, {w: float(i + j + 1) for j, w in enumerate(ws)}, contents="some text")
            for i, ws in enumerate(words)]
    _write(tmp_path / "in.jsonl", docs)
    s = index_vectors(tmp_path / "in.jsonl", tmp_path / "c", vocab="files", segment_docs=2, merge=False,
                      show_progress=False)
    assert s.documents == 4
    c = Collection.open(tmp_path / "c", load_encoders=False)
    assert len(c.segments) == 2 and list(c.retrievers) == ["sparse"]  # no tokenizer: no bm25
    info = c.manifest.retrievers["sparse"].encoder
    assert "name" not in info and info["vocabulary_file"] == VOCABULARY_FILE
    v = Vocabulary.load(tmp_path / "c")
    assert v.tokens == ["apple", "kiwi", "pear", "plum"]
    hits = Searcher(c).search_vector(v.batch([{"plum": 1.0}]), k=5, with_text=False)
    assert [h.id for h in hits] == ["d3", "d1"] and [h.score for h in hits] == pytest.approx([6.0, 3.0])
    with pytest.raises(IndexFormatError, match="names no encoder"):  # text queries need a model
        Collection.open(tmp_path / "c")
    # the saved vocabulary reads more files with the same term ids
    _write(tmp_path / "more.jsonl", [_doc(9, {"kiwi": 1.0})])
    index_vectors(tmp_path / "more.jsonl", tmp_path / "c2", vocab=str(tmp_path / "c"), show_progress=False)
    assert Collection.open(tmp_path / "c2", load_encoders=False).retrievers["sparse"].index.vocab_size == 4


def test_a_segmented_collection_with_its_vocabulary_can_be_replaced(tmp_path):
    _write(tmp_path / "in.jsonl", [_doc(i, {"apple": 1.0}) for i in range(4)])
    for overwrite in (False, True):
        index_vectors(tmp_path / "in.jsonl", tmp_path / "c", vocab="files", segment_docs=2, merge=False,
                      overwrite=overwrite, show_progress=False)


def test_integer_id_files_and_segments(tmp_path):
    """The peerbench harness's files: {"id", "vector": {term_id: weight}}, no contents."""
    rng = np.random.default_rng(5)
    vecs = random_docs(rng, 25, 30522, 8)
    _write(tmp_path / "docs.jsonl", [{"id": f"h{i}", "vector": {str(t): w for t, w in row.items()}}
                                     for i, row in enumerate(_rows(vecs))])
    s = index_vectors(tmp_path / "docs.jsonl", tmp_path / "c", vocab="ids", config=SPARSE, segment_docs=10,
                      show_progress=False)
    c = Collection.open(tmp_path / "c", load_encoders=False)
    assert s.documents == 25 and len(c.segments or [None]) == 1  # merged
    assert c.manifest.retrievers["sparse"].encoder["name"] == "splade-tiny"
    want = {f"h{i}": row for i, row in enumerate(_rows(vecs))}
    q = SparseBatch.from_dicts([{int(t): 1.0 for t in rng.choice(200, 8, replace=False)}],
                               vocab_size=30522)
    rows, scores = c.retrievers["sparse"].search(q, 5, params=SearchParams.check(k=5, speed="exact"))[0]
    terms = set(q.indices.tolist())
    brute = sorted((sum(w for t, w in d.items() if t in terms) for d in want.values()), reverse=True)
    brute = [b for b in brute if b > 0][:5]
    assert np.allclose(scores, brute, rtol=0.02)  # uint8 impacts


def test_skip_bad_in_the_summary_and_nothing_left_behind(tmp_path, bert):
    f = _write(tmp_path / "v.jsonl", [_doc(1, {"fever": 1.0}), "{oops\n", _doc(1, {"cold": 1.0})])
    with pytest.raises(VectorFileError, match=":2: not valid JSON"):
        index_vectors(f, tmp_path / "c", vocab=bert, config=SPARSE, show_progress=False)
    assert not (tmp_path / "c").exists()
    s = index_vectors(f, tmp_path / "c", vocab=bert, config=SPARSE, skip_bad=True, show_progress=False)
    assert (s.documents, s.skipped) == (1, 2) and "2 bad lines skipped" in s.line()
    g = _write(tmp_path / "allbad.jsonl", ["{oops\n"])
    with pytest.raises(VectorFileError, match="no documents \\(1 bad line skipped\\)"):
        index_vectors(g, tmp_path / "d", vocab=bert, config=SPARSE, skip_bad=True, show_progress=False)
    assert not (tmp_path / "d").exists()


def test_cli_exit_code_2_names_file_and_line(tmp_path, capsys):
    f = _write(tmp_path / "v.jsonl", [_doc(1, {"fever": 1.0}), _doc(2, {"fever": -1})])
    assert main(["index", "--vectors", str(f), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2: document 'd2': the weight of token 'fever' must be a finite number >= 0" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "c").exists()
    assert main(["index", "--vectors", str(f), "--out", str(tmp_path / "c"), "--vocab", "files",
                 "--skip-bad", "--segment-docs", "5", "--no-merge", "--no-progress"]) == 0
    assert "indexed 1 document" in capsys.readouterr().out
