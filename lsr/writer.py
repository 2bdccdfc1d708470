"""Writes to a living collection: add (upsert), delete, commit, merge (Lucene's ``IndexWriter``).

One writer at a time per folder (``write.lock``, :class:`lsr.segments.WriteLock`): held from the first
``add``/``delete``/``merge`` until the commit that makes them durable (``hold=True``: until ``close``).
``add`` encodes at once (or takes the caller's vectors); ``commit`` writes one new segment with the added
documents, new deletion bitmaps, then the commit point (the rename is the commit: a crash before it leaves the
previous state, whose files are all still there), removes what no commit point names, and moves the collection
to the new state. A merge reads the stored vectors of the segments it combines (never encodes), builds one
segment outside the commit lock, then commits it with the deletions that arrived meanwhile carried over.

Example:
    >>> c = Collection.open("my-index")                                        # doctest: +SKIP
    >>> c.add([{"id": "d9", "title": "", "text": "new document"}]); c.delete(["d3"])   # doctest: +SKIP
    >>> c.commit().generation                                                  # doctest: +SKIP
    2
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lsr import corpus as C
from lsr import living
from lsr import segments as S
from lsr.composite import SEGMENT_KINDS, OpenSegment
from lsr.errors import IndexFormatError, LsrError
from lsr.manifest import Manifest, base_segment, commit_manifest, load_manifest
from lsr.types import SparseBatch

#: segments per tier before the tiered policy merges them; the most merged at once
MERGE_FACTOR = 10
#: a segment whose deleted share is at least this is rewritten by the next policy merge
DELETES_SHARE = 0.3
#: the policy's smallest tier: segments below this many live documents count as this size
FLOOR_DOCS = 1000


@dataclass(frozen=True)
class CommitInfo:
    """What a commit (or merge) did and the collection after it."""

    generation: int
    added: int
    deleted: int
    segments: int
    documents: int
    deleted_rows: int
    seconds: float
    merged: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"generation": self.generation, "added": self.added, "deleted": self.deleted,
                "segments": self.segments, "documents": self.documents, "deleted_rows": self.deleted_rows,
                "seconds": round(self.seconds, 4), **({"merged": list(self.merged)} if self.merged else {})}

    def line(self) -> str:
        what = f"merged {len(self.merged)} segments" if self.merged else \
            f"added {self.added}, deleted {self.deleted}"
        return (f"commit {self.generation}: {what}; {self.documents} documents in {self.segments} "
                f"segment{'s' * (self.segments != 1)} ({self.deleted_rows} deleted rows), "
                f"{self.seconds:.2f} s")


@dataclass
class _Pending:
    records: list = field(default_factory=list)
    sparse: list = field(default_factory=list)
    dense: list = field(default_factory=list)
    deletes: set = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.records or self.deletes)


def tiered_merges(sizes: Sequence[tuple[int, int]], *, max_segments: int | None = None,
                  factor: int = MERGE_FACTOR) -> list[int]:
    """Which segments to merge next (positions in ``sizes``, ``(documents, deleted)`` each), or [].

    ``max_segments``: merge the smallest until at most that many remain. Otherwise Lucene's tiered policy in
    small: segments fall in tiers by size (powers of ``factor`` above :data:`FLOOR_DOCS`); a tier holding
    ``factor`` segments merges its smallest ``factor``; a segment with at least :data:`DELETES_SHARE` deleted
    rows is rewritten (with its tier's smallest neighbours).

    Example:
        >>> tiered_merges([(100, 0)] * 12)
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
        >>> tiered_merges([(5000, 0), (100, 0), (100, 0)], max_segments=2)
        [1, 2]
    """
    live = [max(d - x, 0) for d, x in sizes]
    by_size = sorted(range(len(sizes)), key=lambda j: (live[j], j))
    if max_segments is not None:
        if len(sizes) > max_segments:
            return sorted(by_size[:len(sizes) - max_segments + 1])
        if max_segments == 1 and len(sizes) == 1 and sizes[0][1] > 0:
            return [0]  # one segment with deletions: rewritten without them
        return []
    tiers: dict[int, list[int]] = {}
    for j in by_size:
        tier = int(np.floor(np.log(max(live[j], FLOOR_DOCS) / FLOOR_DOCS) / np.log(factor)))
        tiers.setdefault(tier, []).append(j)
    for tier in sorted(tiers):
        if len(tiers[tier]) >= factor:
            return sorted(tiers[tier][:factor])
    heavy = [j for j, (d, x) in enumerate(sizes) if d and x / d >= DELETES_SHARE]
    if heavy:
        return [heavy[0]]
    return []


class Writer:
    """The write side of one :class:`lsr.collection.Collection` (made by its first write; see the module
    docstring). Thread-safe: one commit at a time; searches never wait for it."""

    def __init__(self, collection: Any, *, hold: bool = False) -> None:
        self.c = collection
        self.hold = hold
        self._lock: S.WriteLock | None = None
        self._mutex = threading.RLock()
        self._pending = _Pending()
        self._encoders: dict[str, Any] = {}
        self._building: set[str] = set()  # segments a merge is writing: garbage collection leaves them

    # -- lock ---------------------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        if self._lock is None:
            self._lock = S.WriteLock.acquire(self.c.path)
            if S.commit_generations(self.c.path):  # what a killed writer left (an uncommitted segment, ...)
                S.collect_garbage(self.c.path, base_files=_base_files(self.c.path), keep=self._building)

    def _drop_lock(self) -> None:
        if self._lock is not None and not self.hold and not self._pending:
            self._lock.release()
            self._lock = None

    def acquire(self) -> "Writer":
        """Take the write lock now (a second writer fails here, before anything is read or encoded)."""
        with self._mutex:
            self._take_lock()
        return self

    def rollback(self) -> None:
        """Drop what was staged and not committed (the lock is kept when held for a server)."""
        with self._mutex:
            self._pending = _Pending()
            self._drop_lock()

    def close(self) -> None:
        """Drop what was not committed and release the write lock."""
        with self._mutex:
            self._pending = _Pending()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    # -- checks -------------------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        m = self.c.manifest
        if m.migrated:
            raise IndexFormatError(f"{self.c.path} has index format version {m.format_version}, which this "
                                   "lsr-engine opens read-only: rebuild it to write to it")
        if "sparse" not in m.retrievers:
            raise LsrError(f"{self.c.path}: a collection without the sparse retriever cannot take writes")
        bm25 = m.retrievers.get("bm25")
        if bm25 is not None and bm25.settings.get("analyzer", "wordpiece") != "wordpiece":
            raise LsrError(f"{self.c.path}: its BM25 uses the {bm25.settings.get('analyzer')!r} analyzer; a "
                           "living collection needs 'wordpiece' (rebuild with --bm25-analyzer wordpiece)")

    def _encoder(self, name: str) -> Any:
        r = self.c.retrievers.get(name)
        enc = getattr(r, "encoder", None)
        enc = getattr(enc, "inner", enc)  # the service's micro-batcher wraps the model
        if enc is not None and hasattr(enc, "encode_documents"):
            return enc
        if name not in self._encoders:
            info = self.c.manifest.retrievers[name].encoder or {}
            device = self.c._options.get("device", "auto")
            if name == "sparse":
                from lsr.encoders import SpladeEncoder

                self._encoders[name] = SpladeEncoder.from_pretrained(
                    info.get("name"), device=device, max_length=int(info.get("max_length", 256)))
            else:
                from lsr.encoders import DenseEncoder

                self._encoders[name] = DenseEncoder.from_pretrained(
                    info.get("name"), device=device, max_length=int(info.get("max_length", 256)))
        return self._encoders[name]

    # -- writes -------------------------------------------------------------------------------------------
    def add(self, docs: Iterable[Any], *, vectors: Mapping[str, Any] | None = None,
            batch_size: int = 32) -> int:
        """Encode and stage ``docs`` (dicts with ``id``/``_id``, ``text``, optional ``title`` and
        ``metadata``, or :class:`lsr.corpus.Record`); an id the collection has is replaced at commit.
        ``vectors``: {"sparse": SparseBatch, "dense": float32 matrix} computed elsewhere (then nothing is
        encoded). Returns how many were staged."""
        self._check_writable()
        records = _records(docs)
        if not records:
            return 0
        sparse, dense = self._vectors(records, vectors, batch_size)
        with self._mutex:
            self._take_lock()
            self._pending.records.extend(records)
            self._pending.sparse.append(sparse)
            if dense is not None:
                self._pending.dense.append(dense)
        return len(records)

    def _vectors(self, records: list, vectors: Mapping[str, Any] | None, batch_size: int) -> tuple:
        m = self.c.manifest
        want_dense = "dense" in m.retrievers
        vectors = dict(vectors or {})
        unknown = set(vectors) - {"sparse", "dense"}
        if unknown:
            raise ValueError(f"vectors may hold 'sparse' and 'dense', not {sorted(unknown)}")
        texts = [r.content for r in records]
        sparse = vectors.get("sparse")
        if sparse is None:
            from lsr.collection import encode_corpus

            sparse = encode_corpus(self._encoder("sparse"), texts, batch_size=batch_size, show_progress=False)
        if not isinstance(sparse, SparseBatch) or len(sparse) != len(records):
            raise ValueError(f"vectors['sparse'] must be a SparseBatch of {len(records)} rows")
        vocab = self.c.retrievers["sparse"].index.vocab_size
        if sparse.vocab_size > vocab or (sparse.nnz and int(sparse.indices.max()) >= vocab):
            raise ValueError(f"vectors['sparse'] has term ids beyond this collection's vocabulary ({vocab})")
        if sparse.nnz and (not np.all(np.isfinite(sparse.values)) or np.any(sparse.values < 0)):
            raise ValueError("vectors['sparse'] must hold finite, non-negative weights")
        sparse = SparseBatch(sparse.indptr, sparse.indices, sparse.values, vocab)
        dense = None
        if want_dense:
            dense = vectors.get("dense")
            if dense is None:
                dense = self._encoder("dense").encode_documents(texts, batch_size=64, show_progress=False)
            dense = np.ascontiguousarray(dense, np.float32)
            dim = self.c.retrievers["dense"].index.dim if hasattr(self.c.retrievers["dense"], "index") \
                else dense.shape[1]
            if dense.shape != (len(records), dim) or not np.all(np.isfinite(dense)):
                raise ValueError(f"vectors['dense'] must be a finite {len(records)} x {dim} matrix")
        elif "dense" in vectors:
            raise ValueError("this collection has no dense retriever: leave vectors['dense'] out")
        return sparse, dense

    def delete(self, ids: Iterable[str]) -> int:
        """Stage the deletion of ``ids`` (unknown ids are ignored; documents added before in this batch are
        dropped too). Returns how many of them the collection or the batch holds."""
        self._check_writable()
        ids = [str(i) for i in ids]
        with self._mutex:
            self._take_lock()
            known = set(self.c.rows(ids).tolist())
            staged = {r.id for r in self._pending.records}
            hits = sum(1 for i in set(ids) if i in staged) + len(known)
            self._pending.deletes.update(ids)
            if staged & set(ids):
                self._drop_staged(set(ids))
        return hits

    def _drop_staged(self, gone: set) -> None:
        p = self._pending
        keep = np.array([r.id not in gone for r in p.records], bool)
        sparse = SparseBatch.concat(p.sparse)
        p.sparse = [_take(sparse, np.flatnonzero(keep))]
        if p.dense:
            p.dense = [np.concatenate(p.dense)[keep]]
        p.records = [r for r, k in zip(p.records, keep, strict=True) if k]

    # -- commit -------------------------------------------------------------------------------------------
    def _current(self) -> Manifest:
        """The newest committed manifest (the collection moved to it when another writer committed)."""
        newest = load_manifest(self.c.path)
        if newest.generation != self.c.manifest.generation or (newest.segments is None) != (
                self.c.manifest.segments is None):
            self.c.refresh()
        m = self.c.manifest
        if m.segments is None:  # the first write: the built folder becomes segment "."
            bm25 = m.retrievers.get("bm25")
            stats = dict(m.stats)
            if bm25 is not None and "bm25_avgdl" not in stats:
                stats["bm25_avgdl"] = float(bm25.settings.get("avgdl", 1.0))
            m = base_segment(self.c.path, m).replace(stats=stats)
        return m

    def commit(self) -> CommitInfo | None:
        """Make the staged writes durable and visible (one new commit point); None when nothing is staged."""
        with self._mutex:
            if not self._pending:
                self._drop_lock()
                return None
            self._take_lock()
            t0 = time.perf_counter()
            m = self._current()
            p = self._pending
            gen = m.generation + 1
            # upserts: the last staged version of an id wins; the live version is deleted
            last = {r.id: i for i, r in enumerate(p.records)}
            keep = np.array(sorted(last.values()), np.int64)
            records = [p.records[i] for i in keep.tolist()]
            gone = set(p.deletes) | {r.id for r in records}
            refs, deleted = self._deletions(m, gone, gen)
            schema = _schema(m, records)
            if records:
                sparse = _take(SparseBatch.concat(p.sparse), keep)
                dense = np.concatenate(p.dense)[keep] if p.dense else None
                tok = getattr(self.c.retrievers.get("sparse-idf"), "encoder", None)
                refs.append(living.write_segment(self.c.path, _name(f"s{gen:06d}"), m, records=records,
                                                 sparse=sparse,
                                                 dense=dense,
                                                 schema=schema, tokenizer=_tokenizer(self, tok)))
            info = self._commit(m, refs, schema, t0, added=len(records), deleted=deleted)
            self._pending = _Pending()
            self._drop_lock()
            return info

    def _deletions(self, m: Manifest, gone: set, gen: int) -> tuple[list[S.SegmentRef], int]:
        """The segments' entries with ``gone`` ids deleted (new bitmap files where anything changed)."""
        refs, total = [], 0
        for seg in self.c.segments or [None]:
            ref = seg.ref if seg is not None else m.segments[0]
            ids = seg.ids if seg is not None else self.c.ids
            dead = np.zeros(len(ids), bool) if seg is None or seg.deleted is None else seg.deleted.copy()
            hit = np.isin(ids, np.array(sorted(gone), dtype=str)) & ~dead if gone else \
                np.zeros(len(ids), bool)
            if hit.any():
                dead |= hit
                total += int(hit.sum())
                rel = f"{S.DELETES_DIR}/{ref.name}-{gen}.npy"
                S.write_deletes(self.c.path, rel, dead)
                ref = S.SegmentRef(name=ref.name, dir=ref.dir, documents=ref.documents,
                                   deleted=int(dead.sum()), deletes=rel)
            refs.append(ref)
        return refs, total

    def _commit(self, m: Manifest, refs: list, schema: Any, t0: float, *, added: int, deleted: int,
                merged: tuple = ()) -> CommitInfo:
        live = sum(r.live for r in refs)
        new = m.replace(segments=tuple(refs), documents=live,
                        schema=schema.to_json() if schema is not None and schema.fields else m.schema)
        written = commit_manifest(self.c.path, new)
        base_files = _base_files(self.c.path)
        self.c._install(written)  # first: this collection's own hold on the previous commit point goes
        S.collect_garbage(self.c.path, base_files=base_files, keep=self._building)
        return CommitInfo(written.generation, added, deleted, len(refs), live,
                          sum(r.deleted for r in refs), time.perf_counter() - t0, merged)

    # -- merge --------------------------------------------------------------------------------------------
    def merge(self, *, max_segments: int | None = None, factor: int = MERGE_FACTOR,
              names: Sequence[str] | None = None) -> CommitInfo | None:
        """One merge the tiered policy (or ``max_segments``, or the segments ``names``) asks for: its
        segments' live documents rewritten as one segment from their stored vectors. None when there is
        nothing to merge."""
        if max_segments is not None and (isinstance(max_segments, bool) or not isinstance(max_segments, int)
                                         or max_segments < 1):
            raise ValueError(f"max_segments must be an integer >= 1, got {max_segments!r}")
        self._check_writable()
        with self._mutex:
            self._take_lock()
            try:
                m = self._current()
                snap = self.c.snapshot()
            except BaseException:
                self._drop_lock()
                raise
        try:
            segs = snap.segments or []
            del snap  # its hold on this commit point: the merge's commit may remove it
            sizes = [(s.ref.documents, s.ref.deleted) for s in segs] if segs else \
                [(m.segments[0].documents, 0)]
            if names is not None:
                where = {s.ref.name: j for j, s in enumerate(segs)}
                unknown = [n for n in names if n not in where]
                if unknown:
                    raise ValueError(f"{self.c.path}: no segment {unknown[0]!r}")
                pick = sorted(where[n] for n in set(names))
            else:
                pick = tiered_merges(sizes, max_segments=max_segments, factor=factor)
            if not pick or not segs:
                return None
            t0 = time.perf_counter()
            chosen = [segs[j] for j in pick]
            records, sparse, dense = _read_back(chosen)
            if not records:  # nothing live: the segments just go
                return self._finish_merge(chosen, None, t0)
            name = _name(f"m{m.generation + 1:06d}")
            schema = _schema(m, [])
            tok = getattr(self.c.retrievers.get("sparse-idf"), "encoder", None)
            self._building.add(name)  # a commit meanwhile must not collect it
            try:
                ref = living.write_segment(self.c.path, name, m, records=records, sparse=sparse, dense=dense,
                                           schema=schema, tokenizer=_tokenizer(self, tok))
                return self._finish_merge(chosen, ref, t0)
            finally:
                self._building.discard(name)
        finally:
            with self._mutex:
                self._drop_lock()

    def _finish_merge(self, chosen: list[OpenSegment], ref: S.SegmentRef | None, t0: float) -> CommitInfo:
        with self._mutex:
            m = self._current()
            now = {s.ref.dir: s for s in self.c.segments or []}
            if any(s.ref.dir not in now for s in chosen):
                raise S.ConflictError(f"{self.c.path}: the segments being merged changed meanwhile")
            if ref is not None:  # deletions committed during the merge, carried to the merged rows
                seg_path = self.c.path / ref.dir
                ids = living.read_ids(seg_path / "ids.txt", ref.documents)
                gone_now = set()
                for s in chosen:  # rows live when the merge read them and deleted since
                    cur = now[s.ref.dir]
                    if cur.deleted is not None:
                        gone_now |= set(cur.ids[cur.deleted & s.live].tolist())
                dead = np.isin(ids, np.array(sorted(gone_now), dtype=str)) if gone_now else None
                if dead is not None and dead.any():
                    rel = f"{S.DELETES_DIR}/{ref.name}-{m.generation + 1}.npy"
                    S.write_deletes(self.c.path, rel, dead)
                    ref = S.SegmentRef(name=ref.name, dir=ref.dir, documents=ref.documents,
                                       deleted=int(dead.sum()), deletes=rel)
            dirs = {s.ref.dir for s in chosen}
            refs, placed = [], False
            for s in self.c.segments:
                if s.ref.dir in dirs:
                    if not placed and ref is not None:
                        refs.append(ref)
                    placed = True
                else:
                    refs.append(s.ref)
            if not refs:  # everything was deleted: keep one empty-free state by keeping the merged segment
                refs = [ref] if ref is not None else [chosen[0].ref]
            return self._commit(m, refs, None, t0, added=0, deleted=0,
                                merged=tuple(s.ref.name for s in chosen))


# -- helpers ------------------------------------------------------------------------------------------------
def _records(docs: Iterable[Any]) -> list:
    if isinstance(docs, (str, bytes, Mapping)):
        raise ValueError("add() takes a list of documents")
    out, seen = [], {}
    for i, d in enumerate(docs):
        if isinstance(d, C.Record):
            d = {"id": d.id, "title": d.title, "text": d.text, "metadata": getattr(d, "metadata", None) or {}}
        if not isinstance(d, Mapping):
            raise ValueError(f"document #{i}: expected an object with 'id' and 'text', "
                             f"got {type(d).__name__}")
        try:
            line = json.dumps(dict(d), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"document #{i}: not JSON-serialisable ({e})") from None
        seen.pop(str(d.get("id", d.get("_id"))), None)  # a repeated id in one batch: the last one wins
        try:
            out.append(C.parse_record(line, f"document #{i}", seen, i))
        except C.CorpusError as e:
            raise ValueError(str(e)) from None
    last = {r.id: j for j, r in enumerate(out)}
    return [r for j, r in enumerate(out) if last[r.id] == j]


def _take(batch: SparseBatch, rows: np.ndarray) -> SparseBatch:
    from lsr.collection import permute_rows

    return permute_rows(batch, np.asarray(rows, np.int64))


def _tokenizer(w: Writer, tok: Any) -> Any:
    if tok is not None:
        return tok
    if "bm25" in w.c.manifest.retrievers:
        return w._encoder("sparse").tokenizer
    return None


def _schema(m: Manifest, records: list) -> Any:
    metas = [getattr(r, "metadata", None) or {} for r in records]
    if not m.schema and not any(metas):
        return None
    from lsr.filters import Schema

    schema = Schema.from_json(m.schema, "manifest") if m.schema else Schema.infer([])
    return schema.extend(metas) if any(metas) else schema


def _name(prefix: str) -> str:
    """A new segment's name: unique even where a killed writer left a folder of the same generation."""
    return f"{prefix}-{secrets.token_hex(3)}"


def _base_files(path: Any) -> list[str]:
    """The first build's segment files at the root (the sparse-idf table stays: it is the collection's).
    Read from its manifest without checking its files: some may be gone (a collection half-way through
    removing them when its writer was killed)."""
    try:
        raw = json.loads((Path(path) / "manifest.json").read_text(encoding="utf-8"))
        docs = raw.get("documents") or {}
        files = [docs.get("ids", "ids.txt"), docs.get("store") or "docs.sqlite", "metadata"]
        files += [e["dir"] for n, e in (raw.get("retrievers") or {}).items()
                  if n in SEGMENT_KINDS and isinstance(e, dict) and e.get("dir") not in (None, ".", "")]
    except (OSError, ValueError, AttributeError, TypeError):
        return []
    return [f for f in files if isinstance(f, str) and f and "/" not in f and f not in (".", "..")]


def _read_back(chosen: list[OpenSegment]) -> tuple[list, SparseBatch | None, np.ndarray | None]:
    """The live documents of ``chosen`` segments (texts and metadata in the records) with their stored
    vectors (SPLADE weights as stored, dequantised; dense vectors)."""
    records, parts, denses = [], [], []
    for s in chosen:
        rows = np.flatnonzero(s.live)
        if not rows.size:
            continue
        idx = s.retrievers["sparse"].index
        f_indptr, f_terms, f_imp = idx.forward()
        scale = float(idx.scale) if idx.quantization == "uint8" else 1.0
        batch = SparseBatch(np.asarray(f_indptr, np.int64), np.asarray(f_terms, np.int32),
                            (np.asarray(f_imp, np.float32) * np.float32(scale)).astype(np.float32),
                            idx.vocab_size)
        parts.append(_take(batch, rows))
        if "dense" in s.retrievers:
            denses.append(np.asarray(s.retrievers["dense"].index.vectors(rows), np.float32))
        ids = s.ids[rows].tolist()
        docs = s.docstore.get_many(ids) if s.docstore is not None else [None] * len(ids)
        meta = s.columns.metadata(rows) if s.columns is not None else [{} for _ in ids]
        for d, doc, md in zip(ids, docs, meta, strict=True):
            records.append(C.Record(d, doc.title if doc else "", doc.text if doc else "", metadata=md or {}))
    sparse = SparseBatch.concat(parts) if parts else None
    dense = np.concatenate(denses) if denses else None
    return records, sparse, dense

