"""``Collection``: one index folder: its typed manifest, its row space (ids), its documents and its
retrievers.

The collection owns the folder: :func:`lsr.manifest.load_manifest` / :func:`lsr.manifest.write_manifest` are
its only reader and writer, the ids (``ids.txt``: row i is document ``ids[i]``) and the document store
(``docs.sqlite``) belong to it, and every retriever (:mod:`lsr.retrievers`) answers in its rows.

Building (:meth:`Collection.build`): read the corpus, encode it with SPLADE, choose the row order (similar
documents next to each other, which tightens block maxima), then build each retriever in that order into a
temporary folder, write the ids and the document store, and the manifest last; the folder is renamed into
place (:func:`lsr.index.storage.atomic_folder`).

Example:
    >>> from lsr.collection import Collection
    >>> c = Collection.open("my-index")                  # doctest: +SKIP
    >>> list(c.retrievers), len(c)                       # doctest: +SKIP
    (['sparse', 'dense', 'bm25', 'sparse-idf'], 5183)
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm.auto import tqdm

from lsr import living
from lsr.corpus import counted, iter_corpus, scan_corpus
from lsr.index.storage import (
    check_target,
    remove_stale,
    sha256_file,
)
from lsr.living import open_folder
from lsr.manifest import Manifest, load_manifest, write_manifest
from lsr.params import BuildConfig, FusionSpec
from lsr.retrievers.base import Retriever
from lsr.types import SparseBatch


@dataclass(frozen=True)
class IndexSummary:
    """What a build did: counts, size on disk and wall time."""

    path: Path
    documents: int
    postings: int
    size_bytes: int
    seconds: float
    skipped: int = 0

    def line(self) -> str:
        skipped = f", {counted(self.skipped, 'bad line')} skipped" if self.skipped else ""
        return (f"indexed {counted(self.documents, 'document')}, {counted(self.postings, 'posting')}, "
                f"{self.size_bytes / 2**20:.1f} MiB on disk, {self.seconds:.1f} s{skipped} -> {self.path}")


_STATE = threading.Lock()  # a commit's state swap against a search's snapshot


def permute_rows(batch: SparseBatch, order: np.ndarray) -> SparseBatch:
    """Rows of ``batch`` taken in ``order`` (``out.row(i) == batch.row(order[i])``), vectorised."""
    lengths = np.diff(batch.indptr)[order]
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    starts = batch.indptr[:-1][order]
    gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    return SparseBatch(indptr, batch.indices[gather], batch.values[gather], batch.vocab_size)


def encode_corpus(encoder, texts: list[str], *, batch_size: int = 32, show_progress: bool = True,
                  chunk_batches: int = 16, update_seconds: float = 2.0) -> SparseBatch:
    """Encode documents in length-sorted chunks (less padding), returned in input order.

    A chunk holds up to ``chunk_batches`` batches, fewer on a slow machine: as many as take about
    ``update_seconds``, so the progress bar moves at least that often (after the first batch at once).

    Example:
        >>> encode_corpus(encoder, ["a text", "another"], show_progress=False).shape   # doctest: +SKIP
        (2, 30522)
    """
    order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
    parts = []
    batches = 1  # the first chunk is one batch: it measures the speed
    with tqdm(total=len(texts), unit="doc", desc="encoding", disable=not show_progress,
              dynamic_ncols=True) as bar:
        start = 0
        while start < len(texts):
            sel = order[start:start + batch_size * batches]
            t0 = time.perf_counter()
            parts.append(encoder.encode_documents([texts[i] for i in sel], batch_size=batch_size))
            per_batch = (time.perf_counter() - t0) / -(-len(sel) // batch_size)
            bar.update(len(sel))
            start += len(sel)
            fit = int(update_seconds / per_batch) if per_batch > 0 else chunk_batches
            batches = max(1, min(chunk_batches, fit))
    encoded_sorted = SparseBatch.concat(parts)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return permute_rows(encoded_sorted, inverse)


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


class Collection:
    """An opened index folder: ``manifest`` (typed), ``ids`` (row -> id), ``docstore`` and ``retrievers``
    (``{name: Retriever}``, in the manifest's order).

    Example:
        >>> c = Collection.open("my-index", load_encoders=False)      # doctest: +SKIP
        >>> c.rows(["d3", "nope"]).tolist()                             # doctest: +SKIP
        [17]
    """

    def __init__(self, path: Path, manifest: Manifest, ids: np.ndarray, docstore: Any,
                 retrievers: dict[str, Retriever], *, live: np.ndarray | None = None,
                 segments: list | None = None, lease: Any = None, options: dict | None = None) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.ids = ids
        self.docstore = docstore
        self.retrievers = retrievers
        #: bool per row, False for deleted rows (None: none deleted)
        self.live = live
        #: a living collection's opened segments (:class:`lsr.composite.OpenSegment`); None for a folder
        #: that never took a write
        self.segments = segments
        self._lease = lease  # the commit point this snapshot reads (kept while it is open)
        self._options = options or {}
        self._writer: Any = None
        self._lookup: dict[str, int] | None = None
        self._id_rank: np.ndarray | None = None
        self._default_fusion = manifest.default_fusion()  # checked once, at open

    @classmethod
    def open(cls, path: str | Path, *, model: str | None = None, device: str = "auto",
             load_encoders: bool = True, verify: bool = False, validate: bool = True,
             segments: Iterable[str] | None = None, stats: dict | None = None) -> "Collection":
        """Open ``path`` (a living collection at its newest commit point); ``model`` overrides the SPLADE
        query encoder, ``load_encoders=False`` opens the indexes only, ``verify=True`` checks every file's
        sha256 first. A shard (:mod:`lsr.shards`): ``segments`` opens only these segments (rows: theirs, in
        commit-point order); ``stats`` (``{"bm25_df": array, "n_live": int}``) are the whole collection's
        statistics, for BM25's and sparse-idf's idf (see :meth:`bm25_df_live`)."""
        path = Path(path)
        options = {"model": model, "device": device, "load_encoders": load_encoders, "verify": verify,
                   "validate": validate}
        if segments is not None or stats is not None:
            options.update(segments=None if segments is None else tuple(segments), stats=stats)
        for attempt in range(5):
            manifest = load_manifest(path, verify=verify)
            if manifest.segments is None:
                if segments is not None or stats is not None:
                    raise ValueError(f"{path} has no segments (it never took a write): open it whole")
                ids, docstore, retrievers = open_folder(path, manifest, **options)
                return cls(path, manifest, ids, docstore, retrievers, options=options)
            try:
                return living.open_snapshot(cls, path, manifest, options)
            except living.Vanished:  # a writer committed and removed this commit point meanwhile: retry
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def __len__(self) -> int:
        """The live documents."""
        return int(self.ids.size) if self.live is None else int(self.manifest.documents)

    @property
    def n_rows(self) -> int:
        """Rows in the row space (deleted rows included: they are never hits)."""
        return int(self.ids.size)

    @property
    def names(self) -> list[str]:
        """The retrievers' names, in order."""
        return list(self.retrievers)

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of the ``ids`` that exist (unknown and deleted ids skipped), without repeats, ascending."""
        if self._lookup is None:
            rows = range(self.n_rows) if self.live is None else np.flatnonzero(self.live).tolist()
            every = self.ids.tolist()
            self._lookup = {every[r]: r for r in rows}
        lookup = self._lookup
        return np.unique(np.fromiter((lookup[i] for i in ids if i in lookup), dtype=np.int64))

    @property
    def id_rank(self) -> np.ndarray:
        """Each row's rank in id order (fused ties are broken by id, as the run-dict functions do)."""
        if self._id_rank is None:
            rank = np.empty(self.n_rows, np.int64)
            rank[np.argsort(self.ids, kind="stable")] = np.arange(self.n_rows, dtype=np.int64)
            self._id_rank = rank
        return self._id_rank

    # -- the living collection -----------------------------------------------------------------------------
    def snapshot(self) -> "Collection":
        """This collection as it is now, unchanged by later commits (what one search reads throughout)."""
        with _STATE:
            snap = copy.copy(self)
        return snap

    def _install(self, manifest: Manifest) -> None:
        """Move to the committed state ``manifest`` (the writer's commit, or :meth:`refresh`)."""
        new = living.open_snapshot(type(self), self.path, manifest, self._options, previous=self)
        state = {k: v for k, v in new.__dict__.items() if k not in ("_writer", "_options")}
        with _STATE:
            self.__dict__.update(state)

    def refresh(self) -> bool:
        """Move to the newest commit point if another writer made one; True when the state changed."""
        newest = load_manifest(self.path)
        if newest.generation == self.manifest.generation and (newest.segments is None) == (
                self.manifest.segments is None):
            return False
        if newest.segments is None:
            ids, docstore, retrievers = open_folder(self.path, newest, **self._options)
            with _STATE:
                self.__dict__.update(manifest=newest, ids=ids, docstore=docstore, retrievers=retrievers,
                                     live=None, segments=None, _lookup=None, _id_rank=None,
                                     _default_fusion=newest.default_fusion())
            return True
        self._install(newest)
        return True

    def writer(self, *, hold: bool = False) -> Any:
        """The write side (:class:`lsr.writer.Writer`), made on first use; ``hold``: keep the write lock
        until :meth:`close` (a server), not only until each commit."""
        if self._writer is None:
            from lsr.writer import Writer

            self._writer = Writer(self, hold=hold)
        return self._writer

    def add(self, docs: Iterable[Any], *, vectors: Any = None, batch_size: int = 32) -> int:
        """Encode and stage documents (an existing id is replaced: upsert); visible after :meth:`commit`.

        Example:
            >>> c.add([{"id": "n1", "text": "new", "metadata": {"year": 2024}}]); c.commit()  # doctest: +SKIP
        """
        return self.writer().add(docs, vectors=vectors, batch_size=batch_size)

    def delete(self, ids: Iterable[str]) -> int:
        """Stage the deletion of ``ids``; returns how many exist. Visible after :meth:`commit`."""
        return self.writer().delete(ids)

    def commit(self) -> Any:
        """Make staged writes durable and visible: a :class:`lsr.writer.CommitInfo`, or None if none."""
        return self.writer().commit()

    def merge(self, *, max_segments: int | None = None) -> Any:
        """Merge segments (the tiered policy, or down to ``max_segments``) from their stored vectors."""
        return self.writer().merge(max_segments=max_segments)

    def close(self) -> None:
        """Release the write lock (staged, uncommitted writes are dropped) and the commit point held."""
        if self._writer is not None:
            self._writer.close()
        if self._lease is not None:
            self._lease.release()

    def search_mask(self, flt: Any = None) -> np.ndarray | None:
        """Bool per row: live and matching ``flt`` (a checked :class:`lsr.filters.Filter`); None when every
        row may be a hit."""
        if flt is None:
            return self.live
        parts = []
        for _, n, columns in self._column_parts():
            parts.append(flt.mask(columns) if columns is not None else np.zeros(n, bool))
        mask = np.concatenate(parts) if parts else np.zeros(0, bool)
        return mask if self.live is None else mask & self.live

    def _column_parts(self) -> list:
        if self.segments is not None:
            out, offset = [], 0
            for s in self.segments:
                out.append((offset, len(s.ids), s.columns))
                offset += len(s.ids)
            return out
        if "_columns" not in self.__dict__:
            self._columns = living._columns(self.path, self.manifest, self.n_rows)
        return [(0, self.n_rows, self._columns)]

    def bm25_df_live(self) -> tuple[np.ndarray | None, int]:
        """This snapshot's own statistics: BM25 document frequencies over its live documents (None without
        BM25) and its live document count (a sharded router sums its shards')."""
        if self.segments is None:
            raise ValueError(f"{self.path} has no segments (it never took a write)")
        df = None
        if "bm25" in self.manifest.retrievers:
            df = np.sum([s.bm25_df() for s in self.segments], axis=0).astype(np.int64)
        return df, int(sum(s.ref.live for s in self.segments))

    def stats(self) -> dict:
        """Segments, live and deleted documents, the commit generation (``/stats``, ``lsr stats``)."""
        segs = self.manifest.segments
        out = {"documents": len(self), "rows": self.n_rows, "deleted": self.n_rows - len(self),
               "generation": self.manifest.generation, "segments": len(segs) if segs else 1}
        if segs:
            out["segment_sizes"] = [{"name": r.name, "documents": r.documents, "deleted": r.deleted}
                                    for r in segs]
        if self.manifest.schema:
            out["fields"] = {f["name"]: f["type"] for f in self.manifest.schema.get("fields", [])}
        return out

    @property
    def schema(self) -> Any:
        """The metadata fields (:class:`lsr.filters.Schema`), or None when the documents have none."""
        if not self.manifest.schema:
            return None
        if self.__dict__.get("_schema_of") is not self.manifest:
            from lsr.filters import Schema

            self._schema = Schema.from_json(self.manifest.schema, str(self.path))
            self._schema_of = self.manifest
        return self._schema

    def default_fusion(self) -> FusionSpec:
        """Hybrid's fusion when a search gives none (the manifest's, checked at open)."""
        return self._default_fusion

    def set_fusion(self, fusion: dict | FusionSpec | None) -> Manifest:
        """Record the default fusion in the manifest (``lsr tune-fusion``); None forgets it."""
        spec = None if fusion is None else FusionSpec.check(fusion, self.names).to_dict()
        written = write_manifest(self.path, self.manifest.replace(fusion=spec), next_generation=True)
        if written.segments is not None:
            self._install(written)
        else:
            self.manifest = written
            self._default_fusion = written.default_fusion()
        return self.manifest

    # -- building ----------------------------------------------------------------------------------------
    @staticmethod
    def build(corpus: str | Path, out: str | Path, *, config: BuildConfig | None = None, device: str = "auto",
              encoder: Any = None, dense_encoder: Any = None, skip_bad: bool = False, overwrite: bool = False,
              limit: int | None = None, show_progress: bool = True, corpus_name: str | None = None,
              vectors: Any = None, segment_docs: int | None = None, merge: bool = True) -> IndexSummary:
        """Index a BEIR folder or JSONL file into the folder ``out`` (written to a temporary folder, then
        renamed); the retrievers of ``config`` (default :class:`lsr.params.BuildConfig`). ``vectors``:
        ``{"sparse": SparseBatch, "dense": matrix}`` in corpus order, computed elsewhere (not encoded again;
        the models still describe themselves and tokenize for BM25). Documents with ``metadata`` get
        columns for filters (:mod:`lsr.filters`). Memory stays bounded (:class:`lsr.bulk.BulkBuilder`):
        every ``segment_docs`` documents (default :data:`lsr.bulk.DEFAULT_SEGMENT_DOCS`) become a segment,
        merged at the end up to a bounded size unless ``merge=False``; a corpus that fits in one segment
        makes a plain one-folder collection."""
        from lsr.bulk import DEFAULT_SEGMENT_DOCS, BulkBuilder, take_rows

        config = config or BuildConfig()
        out = Path(out)
        remove_stale(out)  # what killed builds left; before the check: it may put a set-aside index back
        check_target(out, overwrite=overwrite, inputs=[corpus])  # fail now, not after encoding
        scan = scan_corpus(corpus, skip_bad=skip_bad, limit=limit)  # every line checked before any model
        n = len(scan)
        given = dict(vectors or {})
        sparse, dense = given.get("sparse"), given.get("dense")
        if sparse is not None and (not isinstance(sparse, SparseBatch) or len(sparse) != n):
            raise ValueError(f"vectors['sparse'] must be a SparseBatch of {n} rows (the corpus')")
        if dense is not None:
            dense = np.ascontiguousarray(dense, np.float32)
            if dense.ndim != 2 or len(dense) != n:
                raise ValueError(f"vectors['dense'] must be a matrix of {n} rows (the corpus')")
        if encoder is None:  # it encodes, tokenizes for BM25 and sparse-idf, describes the query side
            from lsr.encoders import SpladeEncoder

            encoder = SpladeEncoder.from_pretrained(config.model, device=device, max_length=config.max_length)
        if dense_encoder is None and config.dense:
            from lsr.encoders import DenseEncoder

            dense_encoder = DenseEncoder.from_pretrained(config.dense, device=device,
                                                         max_length=config.max_length)
        name = corpus_name or (Path(corpus).name if Path(corpus).is_dir() else scan.path.stem)
        info = {"name": name, "path": str(scan.path), "sha256": sha256_file(scan.path), "documents": n,
                "skipped": scan.skipped}
        step = segment_docs or DEFAULT_SEGMENT_DOCS
        with BulkBuilder(out, config=config, segment_docs=step, overwrite=overwrite, inputs=[corpus],
                         corpus=info, encoder=encoder, dense_encoder=dense_encoder, device=device,
                         show_progress=show_progress) as b:
            batch: list = []
            done = 0
            for record in iter_corpus(scan, limit=limit):
                batch.append(record)
                if len(batch) == step:
                    b.add(batch, sparse=None if sparse is None else take_rows(sparse, done, done + step),
                          dense=None if dense is None else dense[done:done + step])
                    done += step
                    batch = []
            if batch:
                b.add(batch, sparse=None if sparse is None else take_rows(sparse, done, done + len(batch)),
                      dense=None if dense is None else dense[done:done + len(batch)])
            return b.finish(merge=merge)
