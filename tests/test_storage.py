"""What a build may write over (check_target / atomic_folder), and temp folders never loading as indexes."""

import json
import os
import shutil
from pathlib import Path

import pytest

from lsr.errors import IndexFormatError, LsrError
from lsr.index.storage import atomic_folder, read_manifest, remove_stale, write_manifest


def _ours(path: Path) -> Path:
    """A small folder that is recognisably an lsr-engine one: files plus a manifest listing them."""
    path.mkdir(parents=True)
    (path / "data.txt").write_text("ours")
    (path / "sub").mkdir()
    (path / "sub" / "more.txt").write_text("also ours")
    write_manifest(path, {"n_docs": 1})
    return path


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _write(path, text="new"):
    with atomic_folder(path, overwrite=True) as tmp:
        (tmp / "data.txt").write_text(text)
        write_manifest(tmp, {"n_docs": 1})


def test_overwrite_replaces_our_folder_and_an_empty_one(tmp_path):
    target = _ours(tmp_path / "idx")
    _write(target, "replaced")
    assert (target / "data.txt").read_text() == "replaced" and not (target / "sub").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_folder(empty) as tmp:  # an empty folder needs no overwrite
        (tmp / "x").write_text("x")
    assert (empty / "x").read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["empty", "idx"]


def test_overwrite_refuses_a_users_folder(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years of work")
    for overwrite in (True, False):
        with pytest.raises(LsrError, match="refusing to replace .*precious.*no manifest.json"):
            with atomic_folder(precious, overwrite=overwrite) as tmp:
                (tmp / "data.txt").write_text("x")
    assert _snapshot(precious) == {"thesis.txt": b"four years of work"}
    assert sorted(os.listdir(tmp_path)) == ["precious"]


def test_overwrite_refuses_our_folder_holding_a_users_file(tmp_path):
    target = _ours(tmp_path / "idx")
    (target / "sub" / "notes.txt").write_text("mine")
    before = _snapshot(target)
    with pytest.raises(LsrError, match="holds sub/notes.txt, which its manifest.json does not list"):
        _write(target)
    assert _snapshot(target) == before


def test_overwrite_refuses_a_foreign_manifest_a_file_and_a_link(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "manifest.json").write_text(json.dumps({"name": "someone else's", "files": {}}))
    with pytest.raises(LsrError, match="not an lsr-engine manifest"):
        _write(foreign)
    assert (foreign / "manifest.json").is_file()
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep")
    with pytest.raises(LsrError, match="is a file"):
        _write(a_file)
    link = tmp_path / "link"
    link.symlink_to(_ours(tmp_path / "idx"))
    with pytest.raises(LsrError, match="symbolic link"):
        _write(link)
    assert a_file.read_text() == "keep" and link.is_symlink()


def test_refuses_the_current_folder_and_its_ancestors(tmp_path, monkeypatch):
    work = _ours(tmp_path / "work")
    monkeypatch.chdir(work)  # even an index of ours: renaming the folder we stand in is never right
    for target, what in ((".", "the current folder"), (str(work), "the current folder"),
                         ("..", "a folder holding the current folder")):
        with pytest.raises(LsrError, match=f"refusing to write at .*: it is {what}"):
            _write(target)
    assert (work / "data.txt").read_text() == "ours"


def test_refuses_the_input_being_read(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text('{"_id": "a", "text": "x"}\n')
    for target, relation in ((beir, "the same as"), (tmp_path, "a folder holding")):
        with pytest.raises(LsrError, match=f"it is {relation} the input"):
            with atomic_folder(target, overwrite=True, inputs=[beir]):
                pass
    with atomic_folder(beir / "index", inputs=[beir]) as tmp:  # inside the input: nothing read is lost
        (tmp / "x.txt").write_text("x")
    shutil.rmtree(beir / "index")
    with pytest.raises(LsrError, match="it is a folder holding the input"):
        with atomic_folder(beir, overwrite=True, inputs=[beir / "corpus.jsonl"]):
            pass
    assert (beir / "corpus.jsonl").is_file() and sorted(os.listdir(beir)) == ["corpus.jsonl"]


def test_a_temp_folder_is_never_an_index(tmp_path):
    target = tmp_path / "idx"
    with atomic_folder(target) as tmp:
        (tmp / "data.txt").write_text("x")
        write_manifest(tmp, {"n_docs": 1})  # complete as far as its manifest goes
        with pytest.raises(IndexFormatError, match="temporary folder of an index build"):
            read_manifest(tmp)
        renamed = tmp_path / "renamed"
        os.rename(tmp, renamed)  # a user renames it: the marker still says unfinished
        with pytest.raises(IndexFormatError, match="temporary folder of an index build"):
            read_manifest(renamed)
        os.rename(renamed, tmp)
    assert sorted(read_manifest(target)["files"]) == ["data.txt"]  # the marker is neither listed nor kept
    assert not (target / ".lsr-unfinished").exists()
    old = tmp_path / "idx.old-0123456789ab"
    _ours(old)
    with pytest.raises(IndexFormatError, match="temporary folder"):
        read_manifest(old)


def test_remove_stale_restores_a_set_aside_index(tmp_path):
    # a build killed between its two renames leaves NAME.old-<hex> and no NAME: the old index comes back
    old = _ours(tmp_path / "idx.old-00000000000a")
    half = tmp_path / "idx.tmp-00000000000b"
    half.mkdir()
    (half / "partial.npy").write_bytes(b"x")
    other = tmp_path / "other.tmp-00000000000c"  # another target's scratch folder is not ours to touch
    other.mkdir()
    assert remove_stale(tmp_path / "idx") == [half]
    assert (tmp_path / "idx" / "data.txt").read_text() == "ours" and not old.exists()
    assert sorted(os.listdir(tmp_path)) == ["idx", "other.tmp-00000000000c"]


def test_rewriting_a_manifest_adopts_no_users_file(tmp_path):
    # lsr tune-fusion rewrites the manifest of a finished index: a file dropped there stays unlisted
    target = _ours(tmp_path / "idx")
    (target / "notes.txt").write_text("mine")
    manifest = read_manifest(target)
    write_manifest(target, {**manifest, "fusion": {"method": "rrf"}})
    assert "notes.txt" not in read_manifest(target)["files"]
    with pytest.raises(LsrError, match="holds notes.txt"):
        _write(target)
    assert (target / "notes.txt").read_text() == "mine"


def test_an_export_is_replaceable_by_an_export_and_never_an_index(tmp_path):
    from lsr.export import export_pyserini
    from lsr.index import SparseIndex
    from lsr.types import SparseBatch

    index = SparseIndex.build(SparseBatch.from_dicts([{1: 1.0}, {2: 2.0}], vocab_size=4), ["a", "b"],
                              tmp_path / "idx")
    out = tmp_path / "export"
    export_pyserini(index, out, tokens=["w", "x", "y", "z"], queries={"q1": {"x": 2}})
    assert (out / "queries.tsv").read_text() == "q1\tx x\n"
    with pytest.raises(IndexFormatError, match="is not an index: lsr-engine wrote it as kind 'export'"):
        SparseIndex.load(out)
    export_pyserini(index, out, tokens=["w", "x", "y", "z"], overwrite=True)  # ours: replaced
    assert not (out / "queries.tsv").exists()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(LsrError, match="holds notes.txt"):
        export_pyserini(index, out, tokens=["w", "x", "y", "z"], overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
