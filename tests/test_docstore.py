"""DocStore: SQLite document lookup by external id."""

import dataclasses
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from lsr.errors import IndexFormatError
from lsr.index import DocStore, Document

RECORDS = [
    ("d1", "First", "Alpha text."),
    ("d2", "", "No title here."),
    ("ünï-3", "Ünïcode ☃", "Texte accentué, 中文, emoji 🎉"),
    ("d4", "Title only", ""),
]


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "docs.sqlite"
    assert DocStore.write(path, iter(RECORDS), batch_size=3) == len(RECORDS)
    return path


def test_round_trip(store_path):
    with DocStore(store_path) as store:
        assert len(store) == 4
        for doc_id, title, text in RECORDS:
            assert store.get(doc_id) == Document(doc_id, title, text)
        assert store.get("missing") is None
        got = store.get_many(["d4", "missing", "d1", "d4"])
        assert [d.id if d else None for d in got] == ["d4", None, "d1", "d4"]
        assert store.get_many([]) == []
    assert os.listdir(store_path.parent) == ["docs.sqlite"]  # read-only: no journal files


def test_rows_follow_input_order(store_path):
    with sqlite3.connect(store_path) as conn:
        assert conn.execute("SELECT row, id FROM docs ORDER BY row").fetchall() == [
            (i, r[0]) for i, r in enumerate(RECORDS)]


def test_get_many_large_and_ordered(tmp_path):
    path = tmp_path / "big.sqlite"
    n = DocStore.write(path, ((f"id{i}", f"t{i}", f"text {i}") for i in range(2500)))
    assert n == 2500
    wanted = [f"id{i}" for i in range(2499, -1, -3)] + ["nope"]
    with DocStore(path) as store:
        got = store.get_many(wanted)
    assert [d.text if d else None for d in got] == [f"text {i}" for i in range(2499, -1, -3)] + [None]


def test_none_title_and_text_become_empty(tmp_path):
    path = tmp_path / "d.sqlite"
    DocStore.write(path, [("a", None, None)])
    with DocStore(path) as store:
        assert store.get("a") == Document("a", "", "")


def test_duplicate_id_is_rejected_and_leaves_no_file(tmp_path):
    path = tmp_path / "d.sqlite"
    records = [("a", "", "x"), ("b", "", "y"), ("c", "", "z"), ("b", "", "again")]
    with pytest.raises(ValueError, match=r"duplicate document id 'b' \(record #3\)"):
        DocStore.write(path, records, batch_size=2)
    assert not path.exists()


@pytest.mark.parametrize("bad, message", [
    (("a", "b"), "must be an \\(id, title, text\\) tuple"),
    (("", "t", "x"), "id must be a non-empty string"),
    ((5, "t", "x"), "id must be a non-empty string"),
    (("a", "t", 3.0), "title and text must be strings"),
])
def test_bad_records(tmp_path, bad, message):
    with pytest.raises(ValueError, match=message):
        DocStore.write(tmp_path / "d.sqlite", [("ok", "", ""), bad])
    assert not (tmp_path / "d.sqlite").exists()


def test_bad_batch_size(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        DocStore.write(tmp_path / "d.sqlite", RECORDS, batch_size=0)


def test_write_replaces_existing_file(store_path):
    DocStore.write(store_path, [("z", "Z", "zz")])
    with DocStore(store_path) as store:
        assert len(store) == 1 and store.get("d1") is None


def test_missing_or_foreign_file(tmp_path):
    with pytest.raises(IndexFormatError, match="does not exist"):
        DocStore(tmp_path / "nope.sqlite")
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(IndexFormatError, match="not an lsr document store"):
        DocStore(junk)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE t(x)")
    conn.close()
    with pytest.raises(IndexFormatError, match="not an lsr document store"):
        DocStore(other)


def test_threads_share_one_store(tmp_path):
    path = tmp_path / "d.sqlite"
    DocStore.write(path, ((f"id{i}", "", f"text {i}") for i in range(300)))
    with DocStore(path) as store:
        def lookup(start):
            ids = [f"id{(start + j) % 300}" for j in range(50)]
            return [d.text for d in store.get_many(ids)] == [f"text {(start + j) % 300}" for j in range(50)]

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(lookup, range(0, 300, 3)))


def test_document_is_frozen():
    doc = Document("a", "t", "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        doc.id = "b"
