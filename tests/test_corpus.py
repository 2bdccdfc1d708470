import json

import pytest

from lsr.corpus import Record, read_corpus
from lsr.errors import CorpusError


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_reads_jsonl_and_beir_folder(tmp_path):
    lines = [json.dumps({"_id": "a", "title": "T", "text": "alpha"}), json.dumps({"id": 7, "text": "beta"})]
    f = _write(tmp_path / "c.jsonl", lines)
    c = read_corpus(f)
    assert [r.id for r in c.records] == ["a", "7"]
    assert c.records[0].content == "T alpha" and c.records[1].content == "beta"
    beir = tmp_path / "beir"
    beir.mkdir()
    _write(beir / "corpus.jsonl", lines)
    assert [r.id for r in read_corpus(beir).records] == ["a", "7"]


@pytest.mark.parametrize("bad, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"_id": "x", "title": "no text"}), "has no 'text' field"),
    (json.dumps({"_id": "a", "text": "again"}), "repeats id 'a' (first seen on line 1)"),
    (json.dumps({"text": "no id"}), "no 'id' or '_id' field"),
    (json.dumps({"_id": None, "text": "null id"}), "the document id ('_id') is null"),
    (json.dumps({"id": None, "text": "null id"}), "the document id ('id') is null"),
    (json.dumps(["a", "list"]), "expected a JSON object"),
    (json.dumps({"_id": "y", "text": 5}), "must be strings"),
    (json.dumps({"_id": "m", "text": "t", "metadata": ["en"]}),
     "document 'm': metadata must be an object, not a list"),
    (json.dumps({"_id": "m", "text": "t", "metadata": {"a": {"b": 1}}}),
     "document 'm': metadata field 'a': an object is not a metadata value"),
    (json.dumps({"_id": "m", "text": "t", "metadata": {"a": [1]}}),
     "field 'a': a list may hold only strings"),
    ('{"_id": "m", "text": "t", "metadata": {"a": NaN}}', "field 'a': NaN is not a value"),
    (json.dumps({"_id": "m", "text": "t", "metadata": {"a": 2**64}}), "does not fit in 64 bits"),
    (json.dumps({"_id": "m", "text": "t", "metadata": {"": 1}}),
     "metadata field name must be a non-empty string"),
])
def test_bad_line_names_file_and_line(tmp_path, bad, message):
    f = _write(tmp_path / "c.jsonl", [json.dumps({"_id": "a", "text": "ok"}), bad])
    with pytest.raises(CorpusError) as e:
        read_corpus(f)
    assert str(e.value).startswith(f"{f}:2: ")
    assert message in str(e.value)


def test_skip_bad_counts(tmp_path):
    f = _write(tmp_path / "c.jsonl", [json.dumps({"_id": "a", "text": "ok"}), "{oops",
                                      json.dumps({"_id": "a", "text": "dup"}),
                                      json.dumps({"_id": "b", "text": "fine"})])
    c = read_corpus(f, skip_bad=True)
    assert [r.id for r in c.records] == ["a", "b"] and c.skipped == 2
    assert "c.jsonl:2" in c.skipped_examples[0]


def test_missing_and_empty(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_corpus(tmp_path / "nope.jsonl")
    with pytest.raises(CorpusError, match="must contain corpus.jsonl"):
        read_corpus(tmp_path)
    with pytest.raises(CorpusError, match="no documents"):
        read_corpus(_write(tmp_path / "e.jsonl", [""]))


def test_skipped_count_is_singular_for_one(tmp_path):
    with pytest.raises(CorpusError, match=r"no documents \(1 bad line skipped\)"):
        read_corpus(_write(tmp_path / "c.jsonl", ["{oops"]), skip_bad=True)


def test_metadata_is_read_and_checked(tmp_path):
    meta = {"lang": "en", "year": 2012, "score": 0.5, "open": True, "tags": ["a", "b"], "none": None}
    f = _write(tmp_path / "c.jsonl", [json.dumps({"_id": "a", "text": "x", "metadata": meta}),
                                      json.dumps({"_id": "b", "text": "y"}),
                                      json.dumps({"_id": "c", "text": "z", "metadata": None}),
                                      json.dumps({"_id": "d", "text": "w", "metadata": {"a": [1]}})])
    c = read_corpus(f, skip_bad=True)
    assert [r.metadata for r in c.records] == [meta, {}, {}] and c.skipped == 1
    assert "c.jsonl:4: document 'd': metadata field 'a'" in c.skipped_examples[0]
    assert Record("x", "", "t").metadata == {} and hash(Record("x", "", "t", {"a": 1}))
