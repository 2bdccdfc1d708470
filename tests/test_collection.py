"""The collection's folder: the typed manifest (round trips, refusals), format-2 folders opened read-only
and searching as their format-3 rebuild does, and what a build writes (every file once, the manifest last)."""

import builtins
import copy
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lsr.cli import main
from lsr.collection import Collection
from lsr.corpus import read_corpus
from lsr.errors import IndexFormatError
from lsr.indexing import index_corpus
from lsr.manifest import FORMAT_VERSION, Manifest, RetrieverEntry, load_manifest, write_manifest
from lsr.params import BuildConfig
from lsr.searcher import Searcher
from lsr.tuning import write_fusion
from tests.v2_folder import reuse_encoders, write_v2_folder

MINI_CORPUS = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"
#: what the storage writer adds to a manifest (Manifest.to_json leaves them to it)
WRITTEN_BY_STORAGE = {"created_by": "", "created_at": "", "files": {}}


def one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert text and "\n" not in text, text
    return text


# -- the typed manifest ----------------------------------------------------------------------------------
def test_manifest_round_trip_of_a_built_index(mini_index):
    m = load_manifest(mini_index)
    assert m.format_version == FORMAT_VERSION and not m.migrated
    assert list(m.retrievers) == ["sparse", "dense", "bm25", "sparse-idf"]
    assert m.documents == 30 and m.ids_file == "ids.txt" and m.docstore == "docs.sqlite"
    assert isinstance(m.build, BuildConfig) and m.build.model == "splade-tiny"
    assert m.created_by.startswith("lsr-engine") and m.created_at and "ids.txt" in m.files
    raw = json.loads(json.dumps(m.to_json()))  # through JSON text: tuples become lists
    again = Manifest.from_json(raw, "x")
    assert again == m.replace(**WRITTEN_BY_STORAGE)
    for name, entry in m.retrievers.items():  # field by field
        assert again.retrievers[name].to_json() == entry.to_json()
        assert again.retrievers[name] == entry
    assert again.build.settings() == m.build.settings()


def test_manifest_round_trip_of_a_hand_made_one():
    m = Manifest(documents=2,
                 retrievers={"bm25": RetrieverEntry(kind="bm25", dir="bm25", settings={"k1": 0.9, "b": 0.4},
                                                    files=("bm25/a.npy", "bm25/b.json")),
                             "dense": RetrieverEntry(kind="dense", dir="vectors/dense",
                                                     encoder={"name": "minilm", "dim": 384})},
                 ids_file="rows.txt", docstore=None,
                 fusion={"method": "rrf", "weights": {"bm25": 1.0, "dense": 0.5}, "k": 10.0, "depth": 50},
                 corpus={"name": "toy", "documents": 2},
                 build=BuildConfig(model="m", dense="minilm", block_size=16, quantization="float32"))
    again = Manifest.from_json(json.loads(json.dumps(m.to_json())), "x")
    assert again == m
    assert again.retrievers["bm25"].files == ("bm25/a.npy", "bm25/b.json")
    assert again.docstore is None and again.ids_file == "rows.txt"
    assert again.default_fusion().method == "rrf" and again.default_fusion().k == 10.0


def test_load_and_write_manifest_round_trip(tmp_path):
    (tmp_path / "ids.txt").write_text("a\nb\n")
    (tmp_path / "bm25").mkdir()
    (tmp_path / "bm25" / "x.npy").write_bytes(b"12345")
    entry = RetrieverEntry(kind="bm25", dir="bm25", files=("bm25/x.npy",))
    m = Manifest(documents=2, retrievers={"bm25": entry}, docstore=None, corpus={"name": "t"},
                 build=BuildConfig(dense=None))
    written = write_manifest(tmp_path, m)
    loaded = load_manifest(tmp_path, verify=True)
    assert loaded == written
    assert loaded.replace(**WRITTEN_BY_STORAGE) == m
    assert set(loaded.files) == {"ids.txt", "bm25/x.npy"}
    assert loaded.files["bm25/x.npy"]["bytes"] == 5
    assert loaded.created_by.startswith("lsr-engine")
    with pytest.raises(IndexFormatError) as e:  # a migrated (older) manifest is never written
        write_manifest(tmp_path, m.replace(format_version=2))
    assert "read-only" in one_line(e) and "lsr index" in str(e.value)


def _valid() -> dict:
    return {"format_version": 3, "documents": {"count": 2, "ids": "ids.txt", "store": None},
            "retrievers": {"bm25": {"kind": "bm25", "dir": "bm25", "settings": {}, "encoder": None,
                                    "files": []}},
            "fusion": None, "provenance": {"corpus": {}, "build": None}}


def _set(path: str, value):
    def change(obj):
        *parents, last = path.split(".")
        for p in parents:
            obj = obj[p]
        if value is KeyError:
            del obj[last]
        else:
            obj[last] = value
    return change


@pytest.mark.parametrize("change, message", [
    (_set("retrievers.bm25.kind", "colbert"), "retriever 'bm25': unknown retriever kind 'colbert'"),
    (_set("retrievers.bm25.dir", "../x"), "retriever 'bm25': bad folder '../x'"),
    (_set("retrievers.bm25.dir", "a/../../x"), "bad folder 'a/../../x'"),
    (_set("retrievers.bm25.dir", "/etc"), "retriever 'bm25': bad folder '/etc'"),
    (_set("retrievers.bm25.dir", 5), "bad folder 5"),
    (_set("retrievers.bm25.files", "bm25/x"), "files a list of names"),
    (_set("retrievers.bm25", []), "retriever 'bm25' must be an object"),
    (_set("documents.count", -1), "document count -1"),
    (_set("documents.count", "2"), "document count '2'"),
    (_set("documents.count", True), "document count True"),
    (_set("documents.count", 2.5), "document count 2.5"),
    (_set("documents.count", KeyError), "'count'"),
    (_set("retrievers", KeyError), "'retrievers'"),
    (_set("retrievers", {}), "no retrievers"),
    (_set("documents.ids", "../ids.txt"), "bad ids file '../ids.txt'"),
    (_set("fusion", "rrf"), "fusion must be an object"),
    (_set("provenance.build", {"block_size": 3}), "block_size must be an integer between 8 and 256"),
])
def test_bad_manifests_are_refused_with_a_line_naming_the_problem(change, message):
    Manifest.from_json(_valid(), "m.json")  # the unchanged one is fine
    obj = _valid()
    change(obj)
    with pytest.raises(IndexFormatError) as e:
        Manifest.from_json(obj, "m.json")
    assert message in one_line(e) and str(e.value).startswith("m.json")


def test_a_bad_manifest_on_disk_names_the_file(tmp_path):
    obj = _valid()
    obj["retrievers"]["bm25"]["dir"] = "../outside"
    (tmp_path / "manifest.json").write_text(json.dumps(obj))
    with pytest.raises(IndexFormatError) as e:
        load_manifest(tmp_path)
    assert str(tmp_path / "manifest.json") in one_line(e) and "'../outside'" in str(e.value)


@pytest.mark.parametrize("version", [1, 4, 99, None])
def test_unknown_format_version_is_refused_with_one_line(tmp_path, capsys, version):
    obj = _valid()
    obj["format_version"] = version
    (tmp_path / "manifest.json").write_text(json.dumps(obj))
    with pytest.raises(IndexFormatError) as e:
        load_manifest(tmp_path)
    assert f"format version {version!r}" in one_line(e) and "rebuild" in str(e.value)
    assert main(["search", "--index", str(tmp_path), "volcano"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"format version {version!r}" in err


def test_unreadable_format_2_manifest_says_how_to_rebuild(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 2, "n_docs": 3}))  # no quantization
    with pytest.raises(IndexFormatError) as e:
        load_manifest(tmp_path)
    assert "format version 2" in one_line(e)
    assert f"lsr index --corpus <corpus> --out {tmp_path}" in str(e.value)


# -- format 2: opened read-only, searching as its format-3 rebuild does ----------------------------------
@pytest.fixture(scope="module")
def v2_index(tmp_path_factory, splade, mini_searcher) -> Path:
    out = tmp_path_factory.mktemp("v2") / "index"
    write_v2_folder(MINI_CORPUS, out, encoder=splade, dense_encoder=mini_searcher.retriever("dense").encoder)
    return out


@pytest.fixture(scope="module")
def v2_searcher(v2_index, splade, mini_searcher):
    with pytest.MonkeyPatch.context() as mp:
        asked = reuse_encoders(mp, splade=splade, dense=mini_searcher.retriever("dense").encoder)
        searcher = Searcher.load(v2_index, device="cpu")
    assert asked == ["splade-tiny", "minilm"]  # the encoders the format-2 manifest names
    return searcher


QUERIES = {"volcano": "why does a volcano erupt lava", "glacier": "glaciers carve valleys",
           "bread": "bake bread with yeast", "oxygen": "how does blood carry oxygen",
           "chess": "checkmate the king", "common": "the"}


def assert_same_run(got: dict, expected: dict, *, ordered: bool = False):
    """The same documents with the same scores, ranked the same up to the order of equal scores."""
    for q in expected:
        assert set(got[q]) == set(expected[q]), q
        np.testing.assert_allclose(list(got[q].values()), list(expected[q].values()), rtol=1e-6)
        for d, s in got[q].items():
            np.testing.assert_allclose(s, expected[q][d], rtol=1e-6)
        if ordered:
            assert list(got[q]) == list(expected[q]), q


def test_format_2_folder_opens_migrated(v2_searcher, v2_index):
    m = v2_searcher.collection.manifest
    assert m.migrated and m.format_version == 2
    assert v2_searcher.retrievers == ["sparse", "dense", "bm25"]
    assert v2_searcher.info["format_version"] == 2 and v2_searcher.info["documents"] == 30
    assert m.ids_file == "docids.txt" and m.docstore == "docs.sqlite"
    assert m.retrievers["sparse"].dir == "." and m.retrievers["bm25"].dir == "bm25"
    assert m.build is not None and m.build.dense == "minilm" and m.build.bm25
    assert json.loads((v2_index / "manifest.json").read_text())["format_version"] == 2  # not rewritten


@pytest.mark.parametrize("mode", ["hybrid", "sparse", "dense", "bm25"])
def test_format_2_searches_as_its_format_3_rebuild(v2_searcher, mini_searcher, mode):
    # mini_index: format 3, built from the same corpus with the same encoders
    assert v2_searcher.collection.ids.tolist() == mini_searcher.collection.ids.tolist()
    for k in (3, 30):
        got = v2_searcher.batch_search(QUERIES, k=k, mode=mode)
        expected = mini_searcher.batch_search(QUERIES, k=k, mode=mode)
        if mode == "bm25":  # its own row order: equal scores may come in another order
            if k == 30:
                assert_same_run(got, expected)
        else:
            assert_same_run(got, expected, ordered=True)
    assert any(len(v) >= 5 for v in expected.values())


def test_format_2_bm25_rows_map_onto_the_collection(v2_searcher, mini_searcher):
    bm25 = v2_searcher.retriever("bm25")
    ids = v2_searcher.collection.ids
    assert bm25.to_rows is not None and not np.array_equal(bm25.to_rows, np.arange(len(ids)))
    assert ids[bm25.to_rows].tolist() == bm25.index.ids.tolist()  # own row i is document index.ids[i]
    assert bm25.index.ids.tolist() == [r.id for r in read_corpus(MINI_CORPUS).records]  # input order
    allowed = ["geo-1", "geo-2", "cook-1", "bio-2", "sport-5", "no-such-doc"]
    for text in QUERIES.values():
        got = v2_searcher.search(text, k=4, mode="bm25", filter_ids=allowed, with_text=False, explain=True)
        expected = mini_searcher.search(text, k=4, mode="bm25", filter_ids=allowed, with_text=False,
                                        explain=True)
        assert {h.id: h.score for h in got} == pytest.approx({h.id: h.score for h in expected}, rel=1e-6)
        assert all(h.id in allowed for h in got)
        want = {h.id: h.explanation["terms"] for h in expected}
        for h in got:
            assert h.explanation["terms"] == want[h.id]
            assert sum(t["contribution"] for t in h.explanation["terms"]) == pytest.approx(h.score, rel=1e-5)
    assert any(v2_searcher.search(t, k=1, mode="bm25", filter_ids=allowed) for t in QUERIES.values())


def test_writing_to_a_format_2_folder_is_refused(v2_searcher, v2_index):
    before = (v2_index / "manifest.json").read_bytes()
    with pytest.raises(IndexFormatError) as e:
        write_fusion(v2_index, {"method": "rrf"})
    assert "format version 2" in one_line(e) and "read-only" in str(e.value)
    assert f"lsr index --corpus <corpus> --out {v2_index} --overwrite" in str(e.value)
    with pytest.raises(IndexFormatError) as e:
        v2_searcher.collection.set_fusion({"method": "convex", "weights": {"sparse": 1, "bm25": 1}})
    assert "rebuild it with `lsr index" in one_line(e)
    assert (v2_index / "manifest.json").read_bytes() == before
    assert v2_searcher.collection.manifest.fusion is None


def test_cli_searches_a_format_2_folder(v2_index, splade, mini_searcher, monkeypatch, capsys):
    reuse_encoders(monkeypatch, splade=splade, dense=mini_searcher.retriever("dense").encoder)
    for mode in ("hybrid", "bm25"):
        assert main(["search", "--index", str(v2_index), QUERIES["volcano"], "-k", "3", "--json",
                     "--mode", mode]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["mode"] == mode and out["hits"][0]["id"] == "geo-1" and len(out["hits"]) == 3


# -- what a build writes ---------------------------------------------------------------------------------
def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_manifest_lists_exactly_the_files_of_the_folder(mini_index):
    m = load_manifest(mini_index, verify=True)
    assert set(m.files) == _files(mini_index) - {"manifest.json"}
    owned = {f for e in m.retrievers.values() for f in e.files} | {m.ids_file, m.docstore}
    assert owned == set(m.files)  # every file belongs to a retriever or to the collection
    for name, e in m.retrievers.items():
        assert all(f.startswith(e.dir + "/") for f in e.files), name


def test_build_writes_every_file_once_and_the_manifest_last(tmp_path, splade, monkeypatch):
    out = tmp_path / "small"
    writes: list[str] = []
    real_open, real_replace = builtins.open, os.replace

    def scratch_relative(path) -> str | None:
        p = Path(os.fspath(path))
        parts = p.relative_to(tmp_path).parts if p.is_relative_to(tmp_path) else ()
        if not parts or not parts[0].startswith("small.tmp-"):
            return None
        return Path(*parts[1:]).as_posix()

    def spy_open(file, mode="r", *args, **kwargs):
        rel = scratch_relative(file) if isinstance(file, (str, os.PathLike)) else None
        if rel is not None and any(c in mode for c in "wax+") and ".tmp-" not in rel:
            writes.append(rel)
        return real_open(file, mode, *args, **kwargs)

    def spy_replace(src, dst, *args, **kwargs):
        rel = scratch_relative(dst)
        if rel is not None:
            writes.append(rel)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(io, "open", spy_open)
    monkeypatch.setattr(os, "replace", spy_replace)
    index_corpus(MINI_CORPUS, out, encoder=splade, dense=None, limit=8, show_progress=False)
    monkeypatch.undo()
    writes = [w for w in writes if w != ".lsr-unfinished"]
    assert writes[-1] == "manifest.json" and writes.count("manifest.json") == 1
    assert len(writes) == len(set(writes)), [w for w in writes if writes.count(w) > 1]
    files = _files(out)
    assert set(writes) | {"docs.sqlite"} == files  # sqlite writes the store itself
    m = load_manifest(out, verify=True)
    assert set(m.files) == files - {"manifest.json"}
    assert list(m.retrievers) == ["sparse", "bm25", "sparse-idf"] and m.documents == 8


def test_ids_are_the_rows_and_line_up_with_the_docstore(mini_searcher, mini_index, splade):
    c = mini_searcher.collection
    lines = (mini_index / "ids.txt").read_text(encoding="utf-8").splitlines()
    assert lines == c.ids.tolist()
    records = {r.id: r for r in read_corpus(MINI_CORPUS).records}
    assert sorted(lines) == sorted(records)
    assert lines != list(records)  # reordered: rows are not the corpus order
    assert len(c.docstore) == 30
    contents = []
    for doc_id in lines:
        doc = c.docstore.get(doc_id)
        assert (doc.title, doc.text) == (records[doc_id].title, records[doc_id].text)
        contents.append(records[doc_id].content)
    # row r of every retriever is document ids[r]: BM25's terms are its WordPiece tokens ...
    f_indptr, f_terms, _ = mini_searcher.retriever("bm25").index.forward()
    for row, text in enumerate(contents):
        tokens = np.unique(splade.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert f_terms[f_indptr[row]:f_indptr[row + 1]].tolist() == tokens.tolist(), row
    # ... SPLADE's its encoded terms (uint8 quantization drops only tiny weights) ...
    sparse = mini_searcher.retriever("sparse").index
    f_indptr, f_terms, f_impacts = sparse.forward()
    rows = [0, 7, 29]
    encoded = splade.encode_documents([contents[r] for r in rows])
    for i, row in enumerate(rows):
        want = encoded.row(i).to_dicts()[0]
        terms = f_terms[f_indptr[row]:f_indptr[row + 1]].tolist()
        assert set(terms) <= set(want) and len(terms) >= 0.8 * len(want)
        weights = f_impacts[f_indptr[row]:f_indptr[row + 1]] * sparse.scale
        np.testing.assert_allclose(weights, [want[t] for t in terms], atol=sparse.scale)
    # ... and dense's its vector
    dense = mini_searcher.retriever("dense")
    np.testing.assert_allclose(dense.index.vectors(np.array(rows)),
                               dense.encoder.encode([contents[r] for r in rows]), atol=1e-5)


def test_open_refuses_ids_that_disagree_with_the_manifest(mini_index, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(mini_index, folder)
    m = json.loads((folder / "manifest.json").read_text())
    lines = (folder / "ids.txt").read_text().splitlines()
    (folder / "ids.txt").write_text("\n".join(lines[:-1] + [lines[0]]) + "\n")  # same size, a duplicate
    m["files"]["ids.txt"]["bytes"] = (folder / "ids.txt").stat().st_size
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(IndexFormatError) as e:
        Collection.open(folder, load_encoders=False)
    assert f"line 30 holds a duplicate id {lines[0]!r}" in one_line(e)
    bad = copy.deepcopy(m)
    bad["documents"]["count"] = 31
    (folder / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(IndexFormatError) as e:
        Collection.open(folder, load_encoders=False)
    assert "has 30 ids, the manifest says 31" in one_line(e)
