"""The collection side of ``scripts/fuzz_index.py``: named damages of an index folder (format 3) and the
checks of an opened copy. Not run on its own.

Named damages (:func:`named_damage`), each then opened through ``Searcher.load``:

* ``ids.txt``: a duplicate id, an empty line, a line fewer or more, bytes that are not UTF-8;
* ``sparse-idf/idf.npy``: NaN, inf, a negative or huge value, the wrong shape or dtype, the file removed;
* the collection manifest: a retriever of an unknown kind or of another kind, its ``dir`` with ``..``,
  absolute, missing or another retriever's, its folder removed (listed or not), the entry removed, the
  retrievers reordered, counts that disagree, the ids or store path moved outside, a bad fusion, settings
  of the wrong type, the format version, a file's listed size;
* a random file removed (and unlisted), or one JSON value replaced (:func:`mutate_json`).

Example (what fuzz_index.py does per copy):
    >>> edit = Edit(folder, pristine, whole=True)          # doctest: +SKIP
    >>> named_damage(edit, rng, ctx); check_collection(...); edit.undo()   # doctest: +SKIP
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lsr.errors import IndexFormatError
from lsr.index import SparseIndex
from lsr.index.storage import sha256_file
from lsr.searcher import Searcher
from lsr.types import SparseBatch

MANIFEST = "manifest.json"


class Wrong(Exception):
    """A search result that differs from the oracle."""


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file at ``path`` (open memory maps keep the old one)."""
    tmp = path.with_name(path.name + ".fuzz-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Edit:
    """The changes made to a base folder for one copy, undone from its pristine copy by :meth:`undo`."""

    def __init__(self, root: Path, pristine: Path, *, whole: bool) -> None:
        self.root, self.pristine, self.whole = Path(root), Path(pristine), whole
        self.touched: list[str] = []

    def write(self, rel: str, data: bytes) -> None:
        self.touched.append(rel)
        replace_file(self.root / rel, data)

    def remove(self, rel: str) -> None:
        self.touched.append(rel)
        p = self.root / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)

    def manifest(self, rel: str = MANIFEST) -> dict:
        return json.loads((self.root / rel).read_text(encoding="utf-8"))

    def write_json(self, rel: str, obj: Any) -> None:
        self.write(rel, (json.dumps(obj, indent=2) + "\n").encode())

    def listing_manifests(self, rel: str) -> list[tuple[str, str]]:
        """(manifest, rel as that manifest names it) for each manifest above ``rel`` listing it."""
        parts, out = rel.split("/"), []
        for depth in range(len(parts) - 1, -1, -1):
            mrel = "/".join([*parts[:depth], MANIFEST])
            inner = "/".join(parts[depth:])
            if mrel != rel and (self.root / mrel).is_file():
                try:
                    files = self.manifest(mrel).get("files")
                except (ValueError, AttributeError):
                    continue
                if isinstance(files, dict) and inner in files:
                    out.append((mrel, inner))
        return out

    def reseal(self, rel: str, *, unlist: bool = False) -> None:
        """Give ``rel`` its new size and sha256 (or, ``unlist``, drop it) in every manifest listing it, and
        reseal those manifests in turn: a damage a writer would have listed, that only readers can find."""
        for mrel, inner in self.listing_manifests(rel):
            m = self.manifest(mrel)
            if unlist or not (self.root / rel).is_file():
                del m["files"][inner]
            else:
                p = self.root / rel
                m["files"][inner] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            self.write_json(mrel, m)
            self.reseal(mrel)

    def undo(self) -> None:
        for rel in dict.fromkeys(self.touched):
            p, orig = self.root / rel, self.pristine / rel
            if p.is_dir():
                shutil.rmtree(p)
            if orig.is_dir():
                shutil.copytree(orig, p)
            elif orig.is_file():
                replace_file(p, orig.read_bytes())
            else:
                p.unlink(missing_ok=True)
        self.touched.clear()


# ------------------------------------------------------------------------------------------ damages

JSON_VALUES: list[Any] = [None, True, False, -1, 0, 1, 2**31, 2**63, 1e300, float("nan"), float("inf"),
                          -0.5, "", "x", "..", "../..", "/", "sparse", "bm25", "dense", "porter", [], [1], {},
                          {"a": 1}]


def json_paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON value (lists: the first three items), the root excluded."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj[:3]) if isinstance(obj, list) else ()
    for k, v in items:
        out.append((*prefix, k))
        out.extend(json_paths(v, (*prefix, k)))
    return out


def mutate_json(raw: bytes, rng, ctx: dict) -> tuple[bytes, str]:
    """One value of a JSON file replaced (a boundary value, a count +-1, another value of the file), or a
    key removed."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return raw, "no-op (not JSON)"
    paths = [p for p in json_paths(obj) if p[:1] != ("df",)]  # bm25.json's df: thousands of numbers
    if not paths:
        return raw, "no-op (empty JSON)"
    path = paths[int(rng.integers(len(paths)))]
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    old, key = parent[path[-1]], path[-1]
    choice = rng.random()
    if choice < 0.15 and isinstance(parent, dict):
        del parent[key]
        what = "removed"
    else:
        if choice < 0.45 and isinstance(old, (int, float)) and not isinstance(old, bool):
            new = (old + int(rng.choice([-1, 1])) if isinstance(old, int)
                   else old * float(rng.choice([2, 0.5, -1])))
        elif choice < 0.6:
            other = paths[int(rng.integers(len(paths)))]
            new = obj
            for k in other:
                new = new[k]
            new = json.loads(json.dumps(new))
        else:
            new = JSON_VALUES[int(rng.integers(len(JSON_VALUES)))]
        parent[key] = new
        what = f"= {json.dumps(new)[:60]}"
    return (json.dumps(obj, indent=2) + "\n").encode(), f"json {'.'.join(map(str, path))} {what}"


def damage_ids(edit: Edit, rng) -> str:
    lines = (edit.root / "ids.txt").read_bytes().split(b"\n")[:-1]
    i, j = (int(x) for x in rng.integers(0, len(lines), 2))
    kind = str(rng.choice(["duplicate", "empty", "fewer", "more", "utf-8", "no final newline"]))
    if kind == "duplicate":
        lines[i if i != j else (i + 1) % len(lines)] = lines[j]
    elif kind == "empty":
        lines[i] = b""
    elif kind == "fewer":
        del lines[i]
    elif kind == "more":
        lines.insert(i, b"extra-%d" % i)
    elif kind == "utf-8":
        lines[i] = lines[i][:1] + bytes([int(rng.choice([0xFF, 0xC3, 0x80, 0xED]))]) + lines[i][1:]
    data = b"\n".join(lines) + (b"" if kind == "no final newline" else b"\n")
    edit.write("ids.txt", data)
    return f"{kind} at line {i + 1}"


def damage_idf(edit: Edit, rng) -> str:
    rel = "sparse-idf/idf.npy"
    if not (edit.root / rel).is_file():
        return "no-op (no sparse-idf)"
    idf = np.load(edit.root / rel)
    i = int(rng.integers(idf.size))
    occurring = edit.root / "sparse/sparse/forward.terms.npy"
    if rng.random() < 0.5 and occurring.is_file():  # a term some document has: it changes scores
        terms = np.load(occurring)
        i = int(terms[int(rng.integers(terms.size))]) % idf.size
    kind = str(rng.choice(["nan", "inf", "negative", "huge", "zero", "shorter", "longer", "2-d", "float64",
                           "float16", "int32", "scalar", "removed"]))
    if kind == "removed":
        edit.remove(rel)
        return kind
    values = {"nan": np.nan, "inf": np.inf, "negative": -0.5, "huge": float(np.finfo(np.float32).max),
              "zero": 0.0}
    if kind in values:
        idf[i] = values[kind]
    shapes = {"shorter": lambda: idf[:-1], "longer": lambda: np.append(idf, np.float32(1)),
              "2-d": lambda: idf[:, None], "float64": lambda: idf.astype(np.float64),
              "float16": lambda: idf.astype(np.float16), "int32": lambda: idf.astype(np.int32),
              "scalar": lambda: np.float32(1.0)}
    out = shapes.get(kind, lambda: idf)()
    f = io.BytesIO()
    np.save(f, np.asarray(out), allow_pickle=False)
    edit.write(rel, f.getvalue())
    return f"{kind}" + (f" at [{i}]" if kind in values else "")


def damage_manifest(edit: Edit, rng, ctx: dict) -> str:
    """A named change of the collection manifest (or of the folder it describes)."""
    m = edit.manifest()
    rs = m["retrievers"]
    name = list(rs)[int(rng.integers(len(rs)))]
    e = rs[name]
    others = [n for n in rs if n != name] or [name]
    other = others[int(rng.integers(len(others)))]
    n = m["documents"]["count"]
    outside = str(edit.pristine)
    changes: dict[str, Callable[[], None]] = {
        "unknown kind": lambda: e.update(kind="colbert"),
        "other kind": lambda: e.update(kind=rs[other]["kind"]),
        "dir ..": lambda: e.update(dir=f"../{edit.pristine.name}/{e['dir']}"),
        "dir absolute": lambda: e.update(dir=f"{outside}/{e['dir']}"),
        "dir missing": lambda: e.update(dir="nowhere"),
        "dir of another": lambda: e.update(dir=rs[other]["dir"]),
        "dir .": lambda: e.update(dir="."),
        "entry removed": lambda: rs.pop(name),
        "reordered": lambda: m.update(retrievers=dict(reversed(list(rs.items())))),
        "renamed": lambda: m.update(retrievers={("renamed" if k == name else k): v for k, v in rs.items()}),
        "count -1": lambda: m["documents"].update(count=n - 1),
        "count +1": lambda: m["documents"].update(count=n + 1),
        "count 0": lambda: m["documents"].update(count=0),
        "count str": lambda: m["documents"].update(count=str(n)),
        "ids outside": lambda: m["documents"].update(ids=f"../{edit.pristine.name}/ids.txt"),
        "ids absolute": lambda: m["documents"].update(ids=f"{outside}/ids.txt"),
        "ids missing": lambda: m["documents"].update(ids="nope.txt"),
        "ids is the store": lambda: m["documents"].update(ids="docs.sqlite"),
        "store outside": lambda: m["documents"].update(store=f"../{edit.pristine.name}/docs.sqlite"),
        "store absolute": lambda: m["documents"].update(store=f"{outside}/docs.sqlite"),
        "store is the ids": lambda: m["documents"].update(store="ids.txt"),
        "store none": lambda: m["documents"].update(store=None),
        "store number": lambda: m["documents"].update(store=5),
        "fusion bad method": lambda: m.update(fusion={"method": "best"}),
        "fusion unknown retriever": lambda: m.update(fusion={"weights": {"colbert": 1.0}}),
        "fusion negative weight": lambda: m.update(fusion={"weights": {name: -1.0}}),
        "fusion nan weight": lambda: m.update(fusion={"weights": {name: float("nan")}}),
        "fusion list": lambda: m.update(fusion=[1]),
        "settings documents": lambda: e["settings"].update(documents=str(rng.choice(
            ["dense", "bm25", "sparse-idf", "nope"]))),
        "settings documents list": lambda: e["settings"].update(documents=["sparse"]),
        "settings max_length": lambda: e["settings"].update(max_length=rng.choice(["x", -1, 0, 1, 1e300])),
        "settings analyzer": lambda: e["settings"].update(analyzer=str(rng.choice(["porter", "bogus"]))),
        "settings stats outside": lambda: e["settings"].update(stats="../../ids.txt"),
        "settings ids": lambda: e["settings"].update(ids="docids.txt"),
        "settings list": lambda: e.update(settings=[1]),
        "files list": lambda: e.update(files="sparse"),
        "format 2": lambda: m.update(format_version=2),
        "format 4": lambda: m.update(format_version=4),
        "size listed wrong": lambda: next(iter(m["files"].values())).update(bytes=1),
        "build unknown key": lambda: m["provenance"]["build"].update(colour="red"),
    }
    what = list(changes)[int(rng.integers(len(changes)))]
    changes[what]()
    edit.write_json(MANIFEST, m)
    return f"{what} ({name})"


def remove_folder(edit: Edit, rng) -> str:
    m = edit.manifest()
    name = list(m["retrievers"])[int(rng.integers(len(m["retrievers"])))]
    folder = m["retrievers"][name]["dir"]
    edit.remove(folder)
    unlist = rng.random() < 0.5
    if unlist:  # and its files from the listing: only opening the retriever can tell
        m["files"] = {k: v for k, v in m["files"].items() if not k.startswith(folder + "/")}
        edit.write_json(MANIFEST, m)
    return f"folder {folder} removed{' and unlisted' if unlist else ''}"


def named_damage(edit: Edit, rng, ctx: dict) -> str:
    """One named damage of a collection folder; returns what it did."""
    kind = str(rng.choice(["ids", "idf", "manifest", "manifest", "folder", "file removed", "json"]))
    if kind == "ids":
        what = "ids.txt: " + damage_ids(edit, rng)
    elif kind == "idf":
        what = "sparse-idf/idf.npy: " + damage_idf(edit, rng)
    elif kind == "manifest":
        return "manifest.json: " + damage_manifest(edit, rng, ctx)
    elif kind == "folder":
        return remove_folder(edit, rng)
    else:
        files = sorted(p.relative_to(edit.root).as_posix() for p in edit.root.rglob("*") if p.is_file())
        rel = files[int(rng.integers(len(files)))]
        if kind == "file removed":
            edit.remove(rel)
            edit.reseal(rel, unlist=True)
            return f"{rel} removed and unlisted"
        json_files = [f for f in files if f.endswith(".json")]
        rel = json_files[int(rng.integers(len(json_files)))]
        data, what = mutate_json((edit.root / rel).read_bytes(), rng, ctx)
        edit.write(rel, data)
        what = f"{rel}: {what}"
        if rng.random() < 0.8:
            edit.reseal(rel)
            what += " (resealed)"
        return what
    if rng.random() < 0.85:
        edit.reseal("ids.txt" if kind == "ids" else "sparse-idf/idf.npy")
        what += " (resealed)"
    return what


# ------------------------------------------------------------------------------------------ checks


def text_rng(text: str, salt: int) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(text.encode()), salt])


def text_terms(text: str, salt: int, high: int) -> np.ndarray:
    r = text_rng(text, salt)
    return np.sort(r.choice(high, size=min(int(r.integers(1, 12)), high), replace=False))


class StubSparse:
    """Stands in for the SPLADE and BM25 query encoders and the WordPiece tokenizer: terms (and weights)
    drawn from the text's crc32, so the same text always gets the same query."""

    max_length = 10**9
    analyzer = "stub"

    def __init__(self, vocab: int, salt: int, *, binary: bool = False, fixed: dict | None = None) -> None:
        self.vocab, self.salt, self.binary = vocab, salt, binary
        self.tokenizer = self
        self.fixed = fixed or {}  # text -> its token ids

    def vector(self, text: str) -> dict:
        terms = text_terms(text, self.salt, self.vocab + 10)
        w = text_rng(text, self.salt + 1).uniform(0.05, 2.0, terms.size)
        w = np.ones(terms.size) if self.binary else w
        return dict(zip(terms.tolist(), w.tolist()))

    def encode_queries(self, texts, *, batch_size: int = 64, index: Any = None) -> SparseBatch:
        return SparseBatch.from_dicts([self.vector(t) for t in texts], vocab_size=self.vocab + 10)

    def __call__(self, texts, **kwargs) -> dict:  # the tokenizer: token ids, some beyond the vocabulary
        one = isinstance(texts, str)
        ids = [self.fixed.get(t) or text_terms(t, self.salt, self.vocab + 10).tolist()
               for t in ([texts] if one else texts)]
        return {"input_ids": ids[0] if one else ids}

    def query_terms(self, texts, *, index: Any = None) -> list:  # the BM25 encoder's analysis step
        return [(text, text) for text in texts]

    def encode_terms(self, terms) -> SparseBatch:
        return self.encode_queries([text for text, _ in terms])

    def match_shares(self, index: Any, text: str, rows: np.ndarray, *, terms: Any = None) -> np.ndarray:
        return np.ones(len(rows))

    def convert_ids_to_tokens(self, ids) -> list[str]:
        return [f"t{i}" for i in ids]

    decode_terms = convert_ids_to_tokens


class StubDense:
    def __init__(self, dim: int, salt: int) -> None:
        self.dim, self.salt = dim, salt

    def encode(self, texts, *, batch_size: int = 64) -> np.ndarray:
        x = np.stack([text_rng(t, self.salt).normal(size=self.dim) for t in texts]).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    encode_queries = encode


def check_collection(base: dict, edit: Edit, rng, *, check_sparse, check_dense, oracle) -> str:
    """Open the copy through ``Searcher.load`` and check every retriever, hybrid search and the docstore."""
    try:
        s = Searcher.load(edit.root, load_encoder=False, device="cpu")
    except IndexFormatError:
        return "refused"
    try:
        return check_opened(s, base, edit, rng, check_sparse, check_dense, oracle)
    except IndexFormatError:
        return "refused_at_use"
    finally:
        if s.docstore is not None:
            s.docstore.close()


def sparse_queries(Q: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    b = getattr(Q, "batch", Q)
    ends = b.indptr.tolist()
    return [(b.indices[a:z], b.values[a:z]) for a, z in zip(ends[:-1], ends[1:])]


def check_opened(s: Searcher, base: dict, edit: Edit, rng, check_sparse, check_dense, oracle) -> str:
    c = s.collection
    n = len(c)
    ids = c.ids.tolist()
    if n != c.manifest.documents or len(set(ids)) != n or "" in ids:
        raise Wrong(f"{n} ids for {c.manifest.documents} documents, {len(set(ids))} distinct")
    salt = int(rng.integers(2**31))
    texts = [f"query {salt} {i}" for i in range(3)]
    for name, r in c.retrievers.items():
        kind = c.manifest.retrievers[name].kind
        if kind in ("sparse", "bm25", "sparse-idf"):
            if not isinstance(r.index, SparseIndex) or r.index.n_docs != n:
                raise Wrong(f"{name}: not a sparse index of {n} documents")
            if kind == "sparse-idf":
                idf = np.asarray(r.idf)
                if idf.shape != (r.index.vocab_size,) or not (np.isfinite(idf).all() and (idf >= 0).all()):
                    raise Wrong(f"{name}: idf table {idf.dtype}{list(idf.shape)} with bad values")
                f_terms = np.unique(np.asarray(r.index.forward()[1]))  # terms some document has
                heavy = f_terms[np.argsort(-idf[f_terms], kind="stable")[:5]].tolist() + [int(idf.argmax())]
                r.encoder = StubSparse(r.index.vocab_size, salt, fixed={texts[0]: heavy})
            else:
                check_sparse(r.index, rng)
                r.encoder = StubSparse(r.index.vocab_size, salt, binary=kind == "bm25")
        elif kind == "dense":
            check_dense(r.index, rng)
            r.encoder = StubDense(r.index.dim, salt)
    for name, r in c.retrievers.items():  # each retriever through Searcher.query, against the oracle
        kind = c.manifest.retrievers[name].kind
        if name not in s.modes or name not in ("sparse", "dense", "bm25", "sparse-idf"):
            continue  # a renamed retriever is no mode (fused only)
        for speed, k in (("exact", 1000), ("safe", 10)):
            results = s.query(texts, s.params(k=k, mode=name, speed=speed), explain=True)
            if kind == "dense":
                check_hits(results, n, k)
                continue
            Q = r.encode_queries(texts)
            for (terms, weights), res in zip(sparse_queries(Q), results):
                if not np.isfinite(weights).all() or (weights <= 0).any():
                    raise Wrong(f"{name}: query weights {weights[:5]}")
                want_rows, want_scores = oracle(r.index, terms, weights, k)
                by_id = np.lexsort((c.id_rank[want_rows], -want_scores))  # the Searcher ranks ties by id
                want_rows, want_scores = want_rows[by_id], want_scores[by_id]
                if not np.isfinite(res.scores).all():
                    raise Wrong(f"{name} {speed} k={k}: scores not finite {res.scores[:5]}")
                if not (np.array_equal(res.rows, want_rows) and np.array_equal(res.scores, want_scores)):
                    raise Wrong(f"{name} {speed} k={k}: {res.rows[:5]} {res.scores[:5]} != oracle "
                                f"{want_rows[:5]} {want_scores[:5]}")
    if len(s.modes) > 1:
        p = s.params(k=10, mode="hybrid")
        check_hits(s.query(texts, p, explain=True), n, 10)
        some = [ids[int(i)] for i in rng.choice(n, size=min(5, n), replace=False)] if n else []
        for res in s.query(texts[:1], p, filter_ids=some):
            if not set(res.ids.tolist()) <= set(some):
                raise Wrong(f"hybrid with filter_ids: {res.ids.tolist()} not within {some}")
    check_docstore(s, ids, edit, rng)
    return "searched" if ids == base["ids"] else "searched+ids_changed"


def check_hits(results, n: int, k: int) -> None:
    for res in results:
        rows = res.rows
        if rows.size > k or len(set(rows.tolist())) != rows.size or (rows.size and (rows.min() < 0 or
                                                                                     rows.max() >= n)):
            raise Wrong(f"{res.mode}: bad rows {rows[:10]}")
        if not np.isfinite(res.scores).all() or (np.diff(res.scores) > 0).any():
            raise Wrong(f"{res.mode}: scores not finite or not descending {res.scores[:10]}")


def check_docstore(s: Searcher, ids: list[str], edit: Edit, rng) -> None:
    """Documents come back for the asked ids; a miss only where the ids, the store or their paths changed."""
    store = s.docstore
    if store is None:
        return
    asked = [ids[int(i)] for i in rng.choice(len(ids), size=min(20, len(ids)), replace=False)] if ids else []
    docs = store.get_many(asked + ["no-such-id"])
    if len(docs) != len(asked) + 1 or docs[-1] is not None:
        raise Wrong("docstore answered the wrong number of documents or an unknown id")
    may_miss = {"ids.txt", "docs.sqlite", MANIFEST} & set(edit.touched)
    for i, d in zip(asked, docs):
        if (d is None and not may_miss) or (d is not None and d.id != i):
            raise Wrong(f"docstore: asked {i!r}, got {d and d.id!r}")
