"""Damaged index files (issue 11, defect 1): refused with IndexFormatError, or searched correctly; never a
crash, a hang or a traceback.

The fuzz tests run ``scripts/fuzz_index.py`` in a child process (a segmentation fault there is a failed
test here, with the last mutations printed, not a dead pytest). Each copy changes one file of an index
(array values, boundary values, swaps, offsets out of order, NaN/inf, raw bytes, the .npy header, 32/64-bit
words of faiss and sqlite files, JSON values), or, for a whole collection folder (format 3), makes a named
damage (``scripts/fuzz_collection.py``: ids.txt, sparse-idf/idf.npy, the collection manifest, a retriever
folder removed). Criterion, checked by the child for every copy:

* either opening (``Searcher.load``, i.e. ``Collection.open``) raises IndexFormatError,
* or the copy is searched and every answer is right: for each sparse index (the ``sparse`` and ``bm25``
  retrievers, and the one ``sparse-idf`` searches), exact and safe block-max search (single and batch, and
  through ``Searcher.query``) return exactly the brute-force top-k computed from the opened index's own
  document vectors (same rows, bit-identical scores, finite), which a mutation can only pass by leaving the
  index self-consistent (or by being harmless, e.g. raising a block maximum); sparse-idf queries hold
  finite positive weights; dense search returns valid rows and finite scores (flat: the brute-force
  scores); hybrid returns distinct valid rows; ids are distinct and not empty; docstore lookups return the
  asked documents or raise IndexFormatError (as does a bad fusion in the manifest: ``refused_at_use``).

Anything else (another exception, a wrong answer, a crash) fails the test. The child also prints how many
copies were refused and searched, and both outcomes must occur often (else the mutations test nothing).
More copies: ``scripts/fuzz_index.py --copies 20000 --seed S``; ``LSR_FUZZ_SEED`` changes the seed here.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from lsr.collection import Collection
from lsr.errors import IndexFormatError
from lsr.index import DocStore
from lsr.index.dense import INDEX_FILE, META_FILE, DenseIndex
from lsr.index.storage import sha256_file, write_manifest
from lsr.retrievers.base import OpenContext
from lsr.retrievers.bm25 import BM25Retriever
from lsr.retrievers.splade import SpladeRetriever

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fuzz_index.py"
SEED = int(os.environ.get("LSR_FUZZ_SEED", "11"))


def run_fuzz(tmp_path, *args):
    """Run the fuzz script in a child; its counts (the child's last line), after checking it did not crash."""
    cmd = [sys.executable, str(SCRIPT), "--workdir", str(tmp_path / "work"), "--verbose", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode >= 0, (f"the fuzz child crashed (signal {-proc.returncode}) after: {lines[-3:]}\n"
                                  f"{proc.stderr[-2000:]}")
    assert proc.returncode == 0, f"{lines[-1:]}\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1])


def test_fuzz_small_sparse_and_dense_indexes(tmp_path):
    """800 mutated copies of small sparse (uint8, float32) and dense (flat, HNSW, IVF) index folders."""
    counts = run_fuzz(tmp_path, "--copies", "800", "--seed", str(SEED))
    assert counts["copies"] == 800 and counts["errors"] == counts["wrong"] == 0
    assert counts["refused"] + counts["searched"] == 800
    assert counts["refused"] >= 200 and counts["searched"] >= 80


def test_fuzz_whole_index_folder(tmp_path, mini_index):
    """Mutated copies of a folder built by ``lsr index`` (format 3): ids, docstore, the sparse, dense, bm25
    and sparse-idf retrievers' files, the manifests; a third of them a named damage of the collection."""
    counts = run_fuzz(tmp_path, "--copies", "400", "--seed", str(SEED), "--index", str(mini_index))
    assert counts["copies"] == 400 and counts["errors"] == counts["wrong"] == 0
    assert counts["refused"] + counts["refused_at_use"] + counts["searched"] == 400
    assert counts["refused"] >= 100 and counts["searched"] >= 25 and counts["named"] >= 80


# ----------------------------------------------------------------------------- one damage at a time


def corrupted_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    docs = dst / "sparse" / "sparse" / "postings.docs.npy"
    a = np.load(docs)
    a[:] = np.random.default_rng(0).integers(30000, 65535, a.size, dtype=a.dtype)  # issue 11's reproduction
    np.save(docs, a)
    return dst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["search", "serve"])
def test_cli_refuses_a_corrupted_index_with_one_line(tmp_path, mini_index, command):
    """Issue 11's reproduction through the CLI: exit 2 and one line naming the file (it was a segfault)."""
    index = corrupted_copy(mini_index, tmp_path / "idx")
    args = (["search", "--index", str(index), "--mode", "sparse", "--speed", "exact", "-k", "1000", "fever"]
            if command == "search" else ["serve", "--index", str(index), "--port", str(free_port())])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "lsr", *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert f"{index}/sparse/sparse/postings.docs.npy is corrupted: document number" in errors[0]


def dense_folder(tmp_path, kind, *, manifest=False):
    x = np.random.default_rng(3).normal(size=(200, 8)).astype(np.float32)
    params = {"hnsw": {"M": 4}, "ivf": {"nlist": 4}}.get(kind, {})
    folder = tmp_path / kind
    DenseIndex.build(x, kind=kind, **params).save(folder)
    if manifest:
        write_manifest(folder, {})
    return folder


def overwrite_int(path: Path, array: np.ndarray, position: int, new: int) -> None:
    """Find the bytes of ``array`` (stored whole in a file) and set its value at ``position`` to ``new``."""
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(array.tobytes())
    assert at >= 0
    at += position * array.itemsize
    raw[at:at + array.itemsize] = np.array([new], array.dtype).tobytes()
    path.write_bytes(bytes(raw))


def test_hnsw_link_to_a_node_absent_from_the_layer_is_refused(tmp_path):
    """faiss checks neighbour ids at read, not that a neighbour lives on the layer of the link."""
    folder = dense_folder(tmp_path, "hnsw")
    index = faiss.read_index(str(folder / INDEX_FILE))  # keep it: h is a view into it
    h = index.hnsw
    levels, offsets = faiss.vector_to_array(h.levels), faiss.vector_to_array(h.offsets)
    cum, neighbors = faiss.vector_to_array(h.cum_nneighbor_per_level), faiss.vector_to_array(h.neighbors)
    high, low = int(np.flatnonzero(levels >= 2)[0]), int(np.flatnonzero(levels == 1)[-1])
    overwrite_int(folder / INDEX_FILE, neighbors, int(offsets[high] + cum[1]), low)  # its first layer-1 link
    with pytest.raises(IndexFormatError, match=rf"faiss\.index is corrupted: node {high} links to node {low} "
                       "on a layer that node is not on"):
        DenseIndex.load(folder)


def test_ivf_list_id_out_of_range_is_refused(tmp_path):
    folder = dense_folder(tmp_path, "ivf")
    ivf = faiss.read_index(str(folder / INDEX_FILE))
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    ids = faiss.rev_swig_ptr(lists.get_ids(0), lists.list_size(0)).copy()
    overwrite_int(folder / INDEX_FILE, ids, 0, 5000)
    with pytest.raises(IndexFormatError, match=r"faiss\.index is corrupted: list 0 holds a vector id out of"):
        DenseIndex.load(folder)


def test_dense_files_are_checked_against_the_manifest(tmp_path):
    folder = dense_folder(tmp_path, "flat", manifest=True)
    DenseIndex.load(folder)
    raw = bytearray((folder / INDEX_FILE).read_bytes())
    raw[-3] ^= 0x40  # a finite vector component changes: only the sha256 can tell
    (folder / INDEX_FILE).write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match=r"faiss\.index is corrupted: it does not match its sha256"):
        DenseIndex.load(folder)
    assert len(DenseIndex.load(folder, verify=False)) == 200  # the structure is intact


@pytest.mark.parametrize("params", ['{"ef_search": "many"}', '{"ef_search": 1e300}', '{"ef_search": -5}'])
def test_bad_dense_description_is_refused(tmp_path, params):
    folder = dense_folder(tmp_path, "hnsw")
    meta = json.loads((folder / META_FILE).read_text())
    (folder / META_FILE).write_text(json.dumps({**meta, "params": json.loads(params)}))
    with pytest.raises(IndexFormatError, match="dense.json: parameter ef_search must be an integer"):
        DenseIndex.load(folder)


def test_damaged_docstore_page_is_an_index_format_error(tmp_path):
    path = tmp_path / "docs.sqlite"
    DocStore.write(path, ((f"id{i}", f"title {i}", f"text number {i} " * 20) for i in range(200)))
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(b"text number 117 ")
    raw[at + 5] = 0xFF  # invalid UTF-8 inside one stored text: only reading that row finds it
    path.write_bytes(bytes(raw))
    with DocStore(path) as store:
        assert store.get("id3").title == "title 3"
        with pytest.raises(IndexFormatError, match="docs.sqlite is corrupted: Could not decode to UTF-8"):
            store.get_many(["id3", "id117"])


def test_damaged_bm25_statistics_are_an_index_format_error(tmp_path, mini_index, splade):
    """bm25.json is read when BM25 queries can be encoded (the SPLADE tokenizer at hand)."""
    folder = tmp_path / "idx"
    shutil.copytree(mini_index, folder)
    c = Collection.open(folder, load_encoders=False)
    ctx = OpenContext(path=folder, ids=c.ids, load_encoders=True,
                      opened={"sparse": SpladeRetriever(c.retrievers["sparse"].index, splade)})
    entry = c.manifest.retrievers["bm25"]
    assert BM25Retriever.open(ctx, "bm25", entry).can_encode
    stats = folder / "bm25" / "bm25.json"
    text = stats.read_bytes()
    stats.write_bytes(text[:100] + b"\xff" + text[101:])
    with pytest.raises(IndexFormatError, match="bm25"):
        BM25Retriever.open(ctx, "bm25", entry)
    stats.write_text(json.dumps({"analyzer": "wordpiece"}))
    with pytest.raises(IndexFormatError, match=r"bm25\.json is corrupted"):
        BM25Retriever.open(ctx, "bm25", entry)


def test_damaged_docstore_schema_is_an_index_format_error(tmp_path):
    """sqlite's message quotes the damaged schema text: not UTF-8, it used to escape as UnicodeDecodeError."""
    path = tmp_path / "docs.sqlite"
    DocStore.write(path, ((f"id{i}", "", f"text {i}") for i in range(50)))
    raw = bytearray(path.read_bytes())
    raw[bytes(raw).find(b"CREATE TABLE docs") + 3] = 0x92
    path.write_bytes(bytes(raw))
    with pytest.raises(IndexFormatError, match="docs.sqlite is not an lsr document store"):
        DocStore(path)


# ----------------------------------------------------------------------------- the collection's own files


def collection_copy(src: Path, dst: Path, damage=None) -> Path:
    """A copy of ``src`` with ``damage(manifest, folder)`` applied to its collection manifest."""
    shutil.copytree(src, dst)
    if damage is not None:
        path = dst / "manifest.json"
        m = json.loads(path.read_text())
        damage(m, dst)
        path.write_text(json.dumps(m))
    return dst


def reseal(folder: Path, rel: str) -> None:
    """List ``rel``'s new size and sha256 in the collection manifest (a damage only the readers can find)."""
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    m["files"][rel] = {"bytes": (folder / rel).stat().st_size, "sha256": sha256_file(folder / rel)}
    path.write_text(json.dumps(m))


def retriever(name, **changes):
    return lambda m, d: m["retrievers"][name].update(changes)


def settings(name, **changes):
    return lambda m, d: m["retrievers"][name]["settings"].update(changes)


@pytest.mark.parametrize("damage, message", [
    (retriever("bm25", kind="colbert"), "unknown retriever kind 'colbert'"),
    (retriever("bm25", dir="../bm25"), "bad folder '../bm25'"),
    (retriever("dense", dir="nowhere"), "nowhere has no readable dense index"),
    (lambda m, d: m.update(retrievers={"bm25-2": m["retrievers"]["bm25"]}), "unknown retriever 'bm25-2'"),
    (lambda m, d: m["documents"].update(count=31), "ids.txt has 30 ids, the manifest says 31"),
    (lambda m, d: m["documents"].update(ids="../index/ids.txt"), "bad ids file '../index/ids.txt'"),
    (lambda m, d: m["documents"].update(store="/tmp/docs.sqlite"), "bad store file '/tmp/docs.sqlite'"),
    (lambda m, d: m["documents"].update(store="nope.sqlite"), "nope.sqlite does not exist"),
    (lambda m, d: shutil.rmtree(d / "bm25"), "bm25/bm25.json is missing"),
    (settings("sparse-idf", documents="dense"), "sparse-idf retriever needs the sparse retriever's index"),
    (settings("sparse-idf", documents=["sparse"]), "sparse-idf retriever needs the sparse retriever's index"),
    (settings("sparse-idf", max_length="x"), "sparse-idf max_length must be an integer between 1 and"),
    (settings("bm25", stats="../../index/bm25/bm25.json"), "bad BM25 statistics file"),
    (lambda m, d: m["files"]["ids.txt"].update(bytes=float("inf")), "manifest.json: bad entry for ids.txt"),
], ids=["unknown kind", "dir ..", "dir missing", "name not a kind", "count", "ids outside", "store absolute",
        "store missing", "folder removed", "idf of dense", "idf of a list", "max_length", "stats outside",
        "size Infinity"])
def test_damaged_collection_manifest_is_refused(tmp_path, mini_index, damage, message):
    """Each was a traceback (TypeError, AttributeError, ValueError), a file read outside the folder, or a
    silent change (no document store) before the fuzz found it."""
    folder = collection_copy(mini_index, tmp_path / "idx", damage)
    with pytest.raises(IndexFormatError, match=re.escape(message)):
        Collection.open(folder, load_encoders=False)


@pytest.mark.parametrize("lines, message", [
    (lambda ids: ids[:3] + ids[2:-1], "line 4 holds a duplicate id"),
    (lambda ids: ids[:5] + [""] + ids[6:], "line 6 holds an empty id"),
    (lambda ids: ids[:-1], "has 29 ids, the manifest says 30"),
    (lambda ids: ids + ["extra"], "has 31 ids, the manifest says 30"),
])
def test_damaged_ids_are_refused(tmp_path, mini_index, lines, message):
    folder = collection_copy(mini_index, tmp_path / "idx")
    ids = (folder / "ids.txt").read_text().splitlines()
    (folder / "ids.txt").write_text("\n".join(lines(ids)) + "\n")
    reseal(folder, "ids.txt")
    with pytest.raises(IndexFormatError, match=message):
        Collection.open(folder, load_encoders=False)
    (folder / "ids.txt").write_bytes(b"\xff" + "\n".join(ids).encode() + b"\n")
    reseal(folder, "ids.txt")
    with pytest.raises(IndexFormatError, match="ids.txt is unreadable: 'utf-8' codec"):
        Collection.open(folder, load_encoders=False)


@pytest.mark.parametrize("change", ["nan", "negative", "huge", "shape", "dtype"])
def test_damaged_idf_table_is_refused(tmp_path, mini_index, change):
    """A huge but finite idf of a term some document has made that document's score inf (and hybrid's
    min-max fusion all zeros): idf values are bounded by that of a term in no document."""
    folder = collection_copy(mini_index, tmp_path / "idx")
    path = folder / "sparse-idf" / "idf.npy"
    idf = np.load(path)
    c = Collection.open(folder, load_encoders=False)
    term = int(c.retrievers["sparse"].index.forward()[1][0])
    assert idf[term] > 0
    values = {"nan": np.nan, "negative": -1.0, "huge": np.finfo(np.float32).max}
    if change in values:
        idf[term] = values[change]
    np.save(path, idf[:-1] if change == "shape" else idf.astype(np.float64) if change == "dtype" else idf)
    reseal(folder, "sparse-idf/idf.npy")
    with pytest.raises(IndexFormatError, match=r"idf\.npy is corrupted: expected 30522 idf values in \[0, "):
        Collection.open(folder, load_encoders=False)


@pytest.mark.parametrize("max_length", ["x", float("inf"), 0])
def test_bad_encoder_max_length_is_refused_before_the_model_loads(tmp_path, mini_index, max_length):
    folder = collection_copy(mini_index, tmp_path / "idx",
                             lambda m, d: m["retrievers"]["sparse"]["encoder"].update(max_length=max_length))
    with pytest.raises(IndexFormatError, match="max_length must be an integer between 1 and"):
        Collection.open(folder, device="cpu")
