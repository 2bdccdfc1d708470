"""Opening a damaged index: every array the kernels trust is validated (lsr.index._validate), and a bad
file is refused with one line naming it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lsr.errors import IndexFormatError
from lsr.index import SparseIndex
from lsr.testing import make_ids, random_docs

# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def built_index(tmp_path_factory):
    """A reordered uint8 index with dense block-max rows, built once; tests corrupt copies of it."""
    rng = np.random.default_rng(11)
    path = tmp_path_factory.mktemp("valid") / "idx"
    index = SparseIndex.build(random_docs(rng, 300, 60, 12), make_ids(300), path)
    assert index.manifest["n_dense_terms"] > 0 and index.manifest["n_blocks"] == 38
    return path


def npy_edit(path, rel, change):
    """Apply ``change(array)`` to the .npy file ``rel`` of an index folder, keeping the file's size."""
    p = Path(path) / rel
    a = np.load(p)
    size = p.stat().st_size
    change(a)
    np.save(p, a)
    assert p.stat().st_size == size


def first_run(indptr, at_least=2):
    """A term whose postings / list number at least ``at_least`` entries: its offset range."""
    lengths = np.diff(indptr)
    t = int(np.flatnonzero(lengths >= at_least)[0])
    return int(indptr[t]), int(indptr[t + 1])


def _issue_repro(a):
    a[:] = np.random.default_rng(0).integers(30000, 65535, a.size, dtype=a.dtype)


def _unsort_docs(a, p):
    j, _ = first_run(p)
    a[j], a[j + 1] = a[j + 1], a[j]


def _bump_forward_impact(a):
    j = int(np.flatnonzero(a < 255)[0])
    a[j] += 1


def _lower_block_max(a):
    j = int(np.flatnonzero(a >= 2)[0])
    a[j] -= 1


def _raise_seed(a, p, impacts):
    t = next(t for t in range(p.size - 1) if p[t + 1] > p[t] and impacts[p[t]:p[t + 1]].max() < 255)
    a[t, 0] = impacts[p[t]:p[t + 1]].max() + 1  # the top impact of t, plus one


def _break_dense_row(a):
    a[int(np.flatnonzero(a < 0)[0])] = a.max() + 1


CORRUPTIONS = {  # name: (file, change(array, folder), message)
    "issue reproduction": ("sparse/postings.docs.npy", lambda a, f: _issue_repro(a),
                           r"sparse/postings\.docs\.npy is corrupted: document number \d+ at position 0 "
                           r"is out of range 0\.\.299"),
    "offsets out of order": ("sparse/postings.indptr.npy", lambda a, f: a.__setitem__(5, a[6] + 1),
                             r"postings\.indptr\.npy is corrupted: offset \d+ at position 6 is below"),
    "documents not ascending": ("sparse/postings.docs.npy",
                                lambda a, f: _unsort_docs(a, np.load(f / "sparse/postings.indptr.npy")),
                                r"postings\.docs\.npy is corrupted: document number \d+ at position \d+ "
                                r"is not above the one before it"),
    "zero impact": ("sparse/postings.impacts.npy", lambda a, f: a.__setitem__(3, 0),
                    r"postings\.impacts\.npy is corrupted: impact 0 at position 3 is not > 0"),
    "term id beyond the vocabulary": ("sparse/forward.terms.npy", lambda a, f: a.__setitem__(0, 60),
                                      r"forward\.terms\.npy is corrupted: term id 60 at position 0 is out of "
                                      r"range 0\.\.59"),
    "forward index differs": ("sparse/forward.impacts.npy", lambda a, f: _bump_forward_impact(a),
                              r"forward\.impacts\.npy is corrupted: the postings and the forward index "
                              r"disagree at document \d+ .*, and it does not match its sha256"),
    "block maximum too small": ("sparse/blocks.max.npy", lambda a, f: _lower_block_max(a),
                                r"blocks\.max\.npy is corrupted: term \d+ has impact \d+ in block \d+, "
                                r"above its block maximum"),
    "block id out of range": ("sparse/blocks.ids.npy", lambda a, f: a.__setitem__(-1, 38),
                              r"blocks\.ids\.npy is corrupted: block id 38 at position \d+ is out of range"),
    "dense row out of range": ("sparse/blocks.dense_row.npy", lambda a, f: _break_dense_row(a),
                               r"blocks\.dense_row\.npy is corrupted: row \d+ of term \d+ is out of range"),
    "dense block maxima zeroed": ("sparse/blocks.dense.npy", lambda a, f: a.__setitem__(Ellipsis, 0),
                                  r"blocks\.dense\.npy is corrupted: term \d+ has impact \d+ in block \d+, "
                                  r"above its block maximum"),
    "superblock maxima zeroed": ("sparse/blocks.sb_dense.npy", lambda a, f: a.__setitem__(Ellipsis, 0),
                                 r"blocks\.sb_dense\.npy is corrupted: superblock 0 of dense row 0 is below"),
    "seed above the term's impacts": ("sparse/seeds.kth.npy",
                                      lambda a, f: _raise_seed(a, np.load(f / "sparse/postings.indptr.npy"),
                                                               np.load(f / "sparse/postings.impacts.npy")),
                                      r"seeds\.kth\.npy is corrupted: seed \d+ of term \d+ at depth 1 "
                                      r"exceeds"),
    "seed levels out of order": ("sparse/seeds.levels.npy", lambda a, f: a.__setitem__(1, 1),
                                 r"seeds\.levels\.npy is corrupted: seed levels \[1, 1, 100"),
    "order not a permutation": ("sparse/order.npy", lambda a, f: a.__setitem__(0, a[1]),
                                r"order\.npy is corrupted: \d+ at position 1 makes it no permutation"),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_corrupted_array_is_refused_with_one_line(built_index, tmp_path, name):
    rel, change, message = CORRUPTIONS[name]
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    npy_edit(folder, rel, lambda a: change(a, folder))
    with pytest.raises(IndexFormatError, match=message) as e:
        SparseIndex.load(folder)
    assert "\n" not in str(e.value) and str(folder) in str(e.value)


def test_validation_can_be_skipped_for_a_trusted_folder(built_index, tmp_path):
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    npy_edit(folder, "sparse/postings.docs.npy", _issue_repro)
    with pytest.raises(IndexFormatError, match="postings.docs.npy is corrupted"):
        SparseIndex.load(folder)
    assert SparseIndex.load(folder, validate=False).n_docs == 300  # opened, not searched: it would crash


def test_float32_nan_impact_and_32_bit_negative_document(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    docs = random_docs(rng, 120, 40, 6)
    SparseIndex.build(docs, make_ids(120), tmp_path / "f32", quantization="float32")
    npy_edit(tmp_path / "f32", "sparse/postings.impacts.npy", lambda a: a.__setitem__(7, np.nan))
    with pytest.raises(IndexFormatError, match=r"impacts\.npy is corrupted: impact nan at position 7"):
        SparseIndex.load(tmp_path / "f32")
    monkeypatch.setattr("lsr.index.sparse.U16_DOCS", 100)  # int32 document numbers
    SparseIndex.build(docs, make_ids(120), tmp_path / "i32")
    npy_edit(tmp_path / "i32", "sparse/postings.docs.npy", lambda a: a.__setitem__(0, -1))
    with pytest.raises(IndexFormatError, match="document number -1 at position 0 is out of range 0..119"):
        SparseIndex.load(tmp_path / "i32")


@pytest.mark.parametrize("scale", ["NaN", "Infinity", "0.0", "-1.0"])
def test_bad_scale_in_manifest_is_refused(built_index, tmp_path, scale):
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    mpath = folder / "manifest.json"
    text = mpath.read_text()
    old = f'"scale": {json.loads(text)["scale"]!r}'
    assert old in text
    mpath.write_text(text.replace(old, f'"scale": {scale}'))
    with pytest.raises(IndexFormatError, match="scale .* is not a positive finite number"):
        SparseIndex.load(folder)


def test_duplicate_or_empty_document_ids_are_refused(built_index, tmp_path):
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    ids = (folder / "docids.txt").read_text().split("\n")
    j = next(j for j in range(1, 300) if len(ids[j]) == len(ids[0]))
    swapped = ids.copy()
    swapped[0], swapped[j] = ids[j], ids[0]
    (folder / "docids.txt").write_text("\n".join(swapped))
    assert SparseIndex.load(folder).ids[0] == ids[j]  # same size, other ids: still a valid index
    (folder / "docids.txt").write_text("\n".join(ids[:j] + [ids[0]] + ids[j + 1:]))
    with pytest.raises(IndexFormatError, match=rf"docids\.txt is corrupted: line {j + 1} holds a duplicate"):
        SparseIndex.load(folder)
    (folder / "docids.txt").write_text("\n".join(ids[:j] + [" " * len(ids[j])] + ids[j + 1:]))
    SparseIndex.load(folder)  # an id of spaces is odd but unique


def test_every_single_byte_change_of_an_npy_header_is_refused_or_harmless(built_index, tmp_path):
    """numpy lets TokenError, SyntaxError, TypeError and OverflowError out of np.load for damaged headers."""
    folder = tmp_path / "idx"
    shutil.copytree(built_index, folder)
    target = folder / "sparse" / "postings.impacts.npy"
    raw = target.read_bytes()
    header_end = raw.index(b"}") + 1
    refused = 0
    for pos in range(raw.index(b"{"), header_end):
        for value in b" ,B-(\xff":
            target.write_bytes(raw[:pos] + bytes([value]) + raw[pos + 1:])
            try:
                SparseIndex.load(folder)
            except IndexFormatError as e:
                assert "postings.impacts.npy" in str(e) and "\n" not in str(e)
                refused += 1
    assert refused > 200


@pytest.mark.parametrize("field", ["n_docs", "nnz", "block_size"])
def test_infinite_count_in_the_manifest_is_refused(built_index, tmp_path, field):
    """Found by the collection fuzz: a count of Infinity (valid JSON for Python) raised OverflowError."""
    folder = tmp_path / "copy"
    shutil.copytree(built_index, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest[field] = float("inf")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="lacks a valid sparse index description"):
        SparseIndex.load(folder)
