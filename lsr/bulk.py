"""Building a collection in bounded memory (``lsr index``, ``lsr index --vectors``, ``lsr index --ray``).

Documents arrive in batches (:meth:`BulkBuilder.add`); every ``segment_docs`` of them become one segment of
a living collection (:mod:`lsr.living`: encoded, rows ordered for block-max pruning, written to a temporary
folder and renamed), so the memory a build needs depends on the segment size, not on the collection.
:meth:`BulkBuilder.finish` writes the commit point naming every segment, renames the whole folder into place
(:func:`lsr.index.storage.atomic_folder`: nothing at ``out`` changes before that, a crash leaves nothing
loadable), then merges segments up to ``merge_max_docs`` live documents each (a merge holds its documents'
vectors in memory, so merged segments stay bounded too). A corpus that fits in one segment is written as a
plain one-folder collection, exactly as before segments existed.

Segments may also be written elsewhere (:func:`write_part`, by Ray workers into the builder's folder on a
shared path) and handed to the builder (:meth:`BulkBuilder.add_segment`).

BM25's average document length is the first segment's (or the one given): a living collection fixes it at
its first write (docs/living.md); sparse-idf's IDF table is computed from every segment's documents.

Example:
    >>> from lsr.bulk import BulkBuilder
    >>> with BulkBuilder("big-index", segment_docs=100_000) as b:        # doctest: +SKIP
    ...     for records in batches:
    ...         b.add(records)                  # encoded here; or add(records, sparse=vectors)
    ...     summary = b.finish()
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lsr import living
from lsr import segments as S
from lsr.bm25 import BM25Encoder
from lsr.collection import Collection, IndexSummary, encode_corpus, permute_rows
from lsr.composite import SEGMENT_KINDS
from lsr.corpus import Record
from lsr.errors import CorpusError
from lsr.filters import Schema
from lsr.index import SparseIndex
from lsr.index.sparse import reorder_documents
from lsr.index.storage import atomic_folder, check_target, remove_stale, save_array
from lsr.manifest import Manifest, RetrieverEntry, commit_manifest, load_manifest, write_manifest
from lsr.params import BuildConfig
from lsr.retrievers.base import BuildContext
from lsr.retrievers.sparse_idf import IDF_FILE, idf_table
from lsr.types import SparseBatch

#: documents per segment while building (peak memory grows with it: measured in docs/scale.md)
DEFAULT_SEGMENT_DOCS = 250_000
#: merged segments hold at most this many live documents (a merge holds their vectors in memory)
MERGE_MAX_DOCS = 1_000_000
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value!r}")
    return value


def take_rows(batch: SparseBatch, start: int, stop: int) -> SparseBatch:
    """Rows ``start:stop`` of ``batch`` (a copy of that slice of its arrays)."""
    a, b = int(batch.indptr[start]), int(batch.indptr[stop])
    return SparseBatch(np.asarray(batch.indptr[start:stop + 1], np.int64) - a,
                       np.array(batch.indices[a:b], np.int32), np.array(batch.values[a:b], np.float32),
                       batch.vocab_size)


def merge_groups(sizes: Sequence[int], max_docs: int) -> list[list[int]]:
    """Groups of segments (positions in ``sizes``, live documents each) to merge so that each merged
    segment holds at most ``max_docs`` documents: smallest first, each group filled greedily; groups of one
    are left out (nothing to merge).

    Example:
        >>> merge_groups([100, 100, 100, 250], 300)
        [[0, 1, 2]]
    """
    order = sorted(range(len(sizes)), key=lambda j: (sizes[j], j))
    groups, cur, total = [], [], 0
    for j in order:
        if cur and total + sizes[j] > max_docs:
            groups.append(cur)
            cur, total = [], 0
        cur.append(j)
        total += sizes[j]
    groups.append(cur)
    return [sorted(g) for g in groups if len(g) > 1]


def write_part(folder: str | Path, name: str, template: dict, records: Sequence[Record], *,
               sparse: SparseBatch, dense: np.ndarray | None = None, tokenizer: Any = None,
               wordpiece: dict | None = None) -> S.SegmentRef:
    """Write one segment ``folder/segments/<name>`` holding ``records`` with their vectors (a temporary
    folder, renamed: calling it again with the same name replaces the segment). ``template``:
    :meth:`BulkBuilder.template`. The worker side of a distributed build.

    Example:
        >>> ref = write_part(b.folder, "p0001", b.template(), records, sparse=vectors)  # doctest: +SKIP
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a segment name is 1-64 letters, digits, '_' or '-', got {name!r}")
    records = list(records)
    if not records:
        raise ValueError("a segment needs at least one document")
    if len(sparse) != len(records) or (dense is not None and len(dense) != len(records)):
        raise ValueError(f"{len(records)} documents but {len(sparse)} sparse / "
                         f"{'no' if dense is None else len(dense)} dense vectors")
    m = Manifest.from_json(template, "the build template")
    schema = None
    metas = [r.metadata for r in records]
    if m.schema or any(metas):
        schema = Schema.from_json(m.schema, "the build template") if m.schema else Schema.infer([])
        try:
            schema = schema.extend(metas, ids=[r.id for r in records])
        except ValueError as e:
            raise CorpusError(str(e)) from None
    folder = Path(folder)
    target = folder / S.SEGMENTS_DIR / name
    if target.exists():  # a retried part: its earlier, complete copy goes first
        shutil.rmtree(target)
    return living.write_segment(folder, name, m, records=records, sparse=sparse, dense=dense, schema=schema,
                                tokenizer=tokenizer, wordpiece=wordpiece)


class BulkBuilder:
    """A collection built in bounded memory (see the module docstring): ``add`` batches, then ``finish``.

    ``config``: what to build (:class:`lsr.params.BuildConfig`); ``encoder`` / ``dense_encoder``: loaded
    models (loaded from ``config`` on first need otherwise); ``splade_info`` / ``dense_info``: the query
    encoders' descriptions when the vectors come from elsewhere and no model is loaded; ``tokenizer``: the
    WordPiece tokenizer BM25 and sparse-idf analyse texts with; ``bm25_avgdl``: BM25's average length, fixed
    (default: the first segment's).

    Example:
        >>> with BulkBuilder("idx", config=BuildConfig(dense=None), segment_docs=5000) as b:  # doctest: +SKIP
        ...     b.add(records, sparse=vectors)
        ...     b.finish(merge=False).documents
    """

    def __init__(self, out: str | Path, *, config: BuildConfig | None = None,
                 segment_docs: int = DEFAULT_SEGMENT_DOCS, merge_max_docs: int = MERGE_MAX_DOCS,
                 overwrite: bool = False, inputs: Sequence[str | Path] = (), corpus: dict | None = None,
                 encoder: Any = None, dense_encoder: Any = None, device: str = "auto",
                 show_progress: bool = True, splade_info: dict | None = None, dense_info: dict | None = None,
                 tokenizer: Any = None, bm25_avgdl: float | None = None, prefix: str = "b") -> None:
        self.out = Path(out)
        self.config = config or BuildConfig()
        self.segment_docs = _count(segment_docs, "segment_docs")
        self.merge_max_docs = _count(merge_max_docs, "merge_max_docs")
        self.overwrite, self.inputs = overwrite, list(inputs)
        self.corpus = dict(corpus or {})
        self.encoder, self.dense_encoder, self.device = encoder, dense_encoder, device
        self.splade_info, self.dense_info, self.tokenizer = splade_info, dense_info, tokenizer
        self.show_progress = show_progress
        self.prefix = prefix
        self.kinds = list(self.config.retrievers)
        self.folder: Path | None = None
        self._cm: Any = None
        self._stats = {"bm25_avgdl": float(bm25_avgdl)} if bm25_avgdl is not None else {}
        self._entries: dict[str, RetrieverEntry] | None = None
        self._schema: Any = None
        self._buf: list[tuple[list[Record], SparseBatch, np.ndarray | None]] = []
        self._buffered = 0
        self._refs: list[S.SegmentRef] = []
        self._ids: list[np.ndarray] = []
        self._df: np.ndarray | None = None
        self._n_idf = 0
        self._t0 = time.perf_counter()

    # -- context -----------------------------------------------------------------------------------------
    def __enter__(self) -> "BulkBuilder":
        remove_stale(self.out)
        check_target(self.out, overwrite=self.overwrite, inputs=self.inputs)
        self._cm = atomic_folder(self.out, overwrite=self.overwrite, inputs=self.inputs)
        self.folder = Path(self._cm.__enter__())
        (self.folder / S.SEGMENTS_DIR).mkdir()
        return self

    def __exit__(self, et: Any, ev: Any, tb: Any) -> bool:
        cm, self._cm = self._cm, None
        if cm is None:  # finished
            return False
        if et is None:  # left without finish(): nothing is kept
            et, ev = _Abandoned, _Abandoned("the build was not finished")
        return bool(cm.__exit__(et, ev, tb)) and et is not _Abandoned

    def _check_open(self) -> Path:
        if self._cm is None or self.folder is None:
            raise RuntimeError("use BulkBuilder inside `with`, before finish()")
        return self.folder

    # -- encoders ----------------------------------------------------------------------------------------
    def _splade(self) -> Any:
        if self.encoder is None:
            from lsr.encoders import SpladeEncoder

            self.encoder = SpladeEncoder.from_pretrained(self.config.model, device=self.device,
                                                         max_length=self.config.max_length)
        return self.encoder

    def _dense(self) -> Any:
        if self.dense_encoder is None:
            from lsr.encoders import DenseEncoder

            self.dense_encoder = DenseEncoder.from_pretrained(self.config.dense, device=self.device,
                                                              max_length=self.config.max_length)
        return self.dense_encoder

    def _word_tokenizer(self) -> Any:
        if self.tokenizer is None and any(k in self.kinds for k in ("bm25", "sparse-idf")):
            self.tokenizer = self._splade().tokenizer
        return self.tokenizer

    # -- adding ------------------------------------------------------------------------------------------
    def add(self, records: Sequence[Record], *, sparse: SparseBatch | None = None,
            dense: np.ndarray | None = None) -> None:
        """Add documents (encoded here unless their vectors are given); a segment is written each
        ``segment_docs`` documents."""
        self._check_open()
        records = list(records)
        if not records:
            return
        if sparse is None:
            sparse = encode_corpus(self._splade(), [r.content for r in records],
                                   batch_size=self.config.batch_size, show_progress=self.show_progress)
        elif not isinstance(sparse, SparseBatch) or len(sparse) != len(records):
            raise ValueError(f"sparse must be a SparseBatch of {len(records)} rows (one per document)")
        if self.config.dense:
            if dense is None:
                dense = self._dense().encode_documents([r.content for r in records], batch_size=64,
                                                       show_progress=self.show_progress)
            dense = np.ascontiguousarray(dense, np.float32)
            if dense.ndim != 2 or len(dense) != len(records):
                raise ValueError(f"dense must be a matrix of {len(records)} rows (one per document)")
        elif dense is not None:
            raise ValueError("dense vectors given, but the build has no dense retriever (config.dense)")
        self._buf.append((records, sparse, dense))
        self._buffered += len(records)
        while self._buffered > self.segment_docs:  # an exact fit stays one plain folder
            self._flush(self.segment_docs)

    def _take(self, n: int) -> tuple[list[Record], SparseBatch, np.ndarray | None]:
        recs, sps, dns, got = [], [], [], 0
        while got < n:
            r, s, d = self._buf[0]
            need = n - got
            if len(r) <= need:
                self._buf.pop(0)
            else:
                self._buf[0] = (r[need:], take_rows(s, need, len(r)), None if d is None else d[need:])
                r, s, d = r[:need], take_rows(s, 0, need), None if d is None else d[:need]
            recs += r
            sps.append(s)
            if d is not None:
                dns.append(d)
            got += len(r)
        self._buffered -= n
        sparse = sps[0] if len(sps) == 1 else SparseBatch.concat(sps)
        return recs, sparse, (np.concatenate(dns) if dns else None)

    def _flush(self, n: int) -> None:
        records, sparse, dense = self._take(n)
        self._write(records, sparse, dense)

    def _manifest(self) -> Manifest:
        """The collection's settings so far (what a segment is written with)."""
        entries = self._entries
        if entries is None:
            entries = {}
            for k in self.kinds:
                if k not in SEGMENT_KINDS:
                    continue
                info = None
                if k == "sparse":
                    info = (self.encoder.describe() if self.encoder is not None
                            else dict(self.splade_info or {}))
                elif k == "dense":
                    raw = self.dense_encoder.describe() if self.dense_encoder is not None else \
                        dict(self.dense_info or {})
                    info = {a: v for a, v in raw.items() if not a.startswith("query_runtime")}
                entries[k] = RetrieverEntry(kind=k, dir=k, encoder=info)
        return Manifest(documents=0, retrievers=entries, build=self.config, stats=dict(self._stats),
                        corpus=self.corpus,
                        schema=self._schema.to_json() if self._schema is not None and self._schema.fields
                        else None)

    def template(self) -> dict:
        """What :func:`write_part` needs (JSON): the collection's settings, retrievers, encoders' descriptions
        and BM25's average length (give ``bm25_avgdl`` to the constructor, or add documents first)."""
        if "bm25" in self.kinds and "bm25_avgdl" not in self._stats:
            raise ValueError("BM25's average document length is not known yet: pass bm25_avgdl= or add() "
                             "a first segment")
        return self._manifest().to_json()

    def _write(self, records: list[Record], sparse: SparseBatch, dense: np.ndarray | None) -> None:
        folder = self._check_open()
        metas = [r.metadata for r in records]
        if self._schema is not None or any(metas):
            try:
                self._schema = (self._schema or Schema.infer([])).extend(metas, ids=[r.id for r in records])
            except ValueError as e:
                raise CorpusError(str(e)) from None
        name = f"{self.prefix}{len(self._refs):06d}"
        wordpiece: dict = {}
        tok = self._word_tokenizer()
        ref = living.write_segment(folder, name, self._manifest(), records=records, sparse=sparse,
                                   dense=dense, schema=self._schema, tokenizer=tok, wordpiece=wordpiece)
        self._adopt(ref, wordpiece.get("stats"), ids=np.array([r.id for r in records], dtype=str))

    def add_segment(self, ref: S.SegmentRef, *, wordpiece: Any = None) -> None:
        """Take a segment :func:`write_part` wrote under :attr:`folder` (``wordpiece``: the statistics it
        returned, for sparse-idf's IDF table)."""
        folder = self._check_open()
        if not (folder / ref.dir).is_dir():
            raise ValueError(f"no segment {ref.dir} in {folder}")
        own = load_manifest(folder / ref.dir, own=True)
        if own.schema:
            self._schema = _union(self._schema, Schema.from_json(own.schema, str(folder / ref.dir)))
        self._adopt(ref, wordpiece, ids=living.read_ids(folder / ref.dir / own.ids_file, own.documents))

    def _adopt(self, ref: S.SegmentRef, stats: Any, *, ids: np.ndarray) -> None:
        if any(r.name == ref.name for r in self._refs):
            raise ValueError(f"segment {ref.name!r} was added twice")
        if self._entries is None:  # the first segment fixes the collection's settings
            own = load_manifest(self.folder / ref.dir, own=True)
            self._entries = dict(own.retrievers)
            if "bm25" in own.retrievers and "bm25_avgdl" not in self._stats:
                self._stats["bm25_avgdl"] = float(own.retrievers["bm25"].settings.get("avgdl", 1.0))
        if stats is not None and "sparse-idf" in self.kinds:
            df = np.asarray(stats.df, np.int64)
            if self._df is None:
                self._df = np.zeros(df.size, np.int64)
            if df.size > self._df.size:
                self._df = np.concatenate([self._df, np.zeros(df.size - self._df.size, np.int64)])
            self._df[:df.size] += df
            self._n_idf += int(stats.n_docs)
        self._refs.append(ref)
        self._ids.append(ids)

    # -- finishing ---------------------------------------------------------------------------------------
    def finish(self, *, merge: bool = True) -> IndexSummary:
        """Write what is buffered, the commit point and the collection's files, rename the folder to ``out``,
        then (``merge``) merge segments up to ``merge_max_docs`` documents each."""
        folder = self._check_open()
        if not self._refs:
            if not self._buffered:
                raise CorpusError(f"{self.out}: no documents to index")
            return self._finish_plain()
        if self._buffered:
            self._flush(self._buffered)
        ids = np.concatenate(self._ids)
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            raise CorpusError(f"the documents repeat id {str(uniq[np.argmax(counts > 1)])!r} "
                              f"({int((counts > 1).sum()):,} ids appear more than once)")
        del uniq, counts
        total = int(ids.size)
        m = self._manifest().replace(documents=total)
        only: list[str] = []
        retrievers = dict(m.retrievers)
        if "sparse-idf" in self.kinds:
            retrievers["sparse-idf"] = self._idf_entry(folder, total)
            only = list(retrievers["sparse-idf"].files)
        # plain files the caller put at the root (a vocabulary, ...) belong to the collection too
        only += sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.name != "manifest.json")
        shell = m.replace(retrievers=retrievers, documents=0, docstore=None,
                          corpus={**self.corpus, "documents": total})
        written = write_manifest(folder, shell, only=tuple(only))
        commit_manifest(folder, written.replace(documents=total, segments=tuple(self._refs)))
        cm, self._cm = self._cm, None
        cm.__exit__(None, None, None)  # the rename: the collection appears at `out`
        if merge and len(self._refs) > 1:
            self.merge_bounded(self.out, max_docs=self.merge_max_docs, show_progress=self.show_progress)
        return self._summary(total)

    def _idf_entry(self, folder: Path, total: int) -> RetrieverEntry:
        vocab = SparseIndex.load(folder / self._refs[0].dir / "sparse").vocab_size
        df = self._df if self._df is not None else np.zeros(vocab, np.int64)
        stats = BM25Encoder(analyzer="wordpiece", df=df, n_docs=max(self._n_idf, 1), avgdl=1.0, k1=0.9, b=0.4,
                            tokenizer=self.tokenizer)
        save_array(folder, f"sparse-idf/{IDF_FILE}", idf_table(stats, vocab))
        tok_name = (self.encoder.describe().get("name") if self.encoder is not None
                    else (self.splade_info or {}).get("name"))
        return RetrieverEntry(kind="sparse-idf", dir="sparse-idf", files=(f"sparse-idf/{IDF_FILE}",),
                              settings={"documents": "sparse", "idf": "bm25",
                                        "max_length": self.config.max_length, "tokenizer": tok_name})

    def _finish_plain(self) -> IndexSummary:
        """A corpus that fits in one segment: a plain one-folder collection (the layout of a build before
        segments existed)."""
        records, sparse, dense = self._take(self._buffered)
        order = reorder_documents(sparse) if self.config.reorder else np.arange(len(records), dtype=np.int32)
        idx = order.tolist()
        tok = self._word_tokenizer()
        ctx = BuildContext(folder=self.folder, texts=[records[i].content for i in idx],
                           ids=[records[i].id for i in idx], config=self.config,
                           splade_vectors=permute_rows(sparse, order), splade_encoder=self.encoder,
                           dense_encoder=self.dense_encoder, show_progress=False,
                           dense_vectors=None if dense is None else dense[order],
                           splade_info=self.splade_info, dense_info=self.dense_info, tokenizer=tok)
        (self.folder / S.SEGMENTS_DIR).rmdir()
        corpus = {**self.corpus, "documents": len(records)}
        living.write_rows(self.folder, ctx, records, idx, self.kinds, infer=True, corpus=corpus,
                          build=self.config)
        cm, self._cm = self._cm, None
        cm.__exit__(None, None, None)
        return self._summary(len(records))

    def _summary(self, documents: int) -> IndexSummary:
        postings, size = 0, 0
        for p in self.out.rglob("*"):
            if p.is_file():
                size += p.stat().st_size
        m = load_manifest(self.out)
        for ref in m.segments or ():
            own = load_manifest(self.out / ref.dir, own=True)
            postings += int(own.retrievers["sparse"].settings.get("postings", 0))
        if m.segments is None:
            postings = int(m.retrievers["sparse"].settings.get("postings", 0))
        return IndexSummary(self.out, documents, postings, size, time.perf_counter() - self._t0,
                            int(self.corpus.get("skipped", 0)))

    @staticmethod
    def merge_bounded(path: str | Path, *, max_docs: int = MERGE_MAX_DOCS,
                      show_progress: bool = False) -> int:
        """Merge the segments of the collection at ``path`` into as few as hold at most ``max_docs`` live
        documents each (:func:`merge_groups`); returns how many merges ran. Meant for the segments a build
        has just written: they are opened without validating them again."""
        refs = load_manifest(path).segments or ()
        if not merge_groups([r.live for r in refs], max_docs):
            return 0  # nothing to merge: the collection is not opened (opening maps and checks every file)
        # segments this build has just written and checked are not validated again: that would read every
        # page of every segment (merges read only the segments they merge)
        c = Collection.open(path, load_encoders=False, validate=False)
        merges = 0
        try:
            while True:
                sizes = [s.ref.live for s in c.segments or []]
                groups = merge_groups(sizes, max_docs)
                if not groups:
                    return merges
                names = [c.segments[j].ref.name for j in groups[0]]
                if show_progress:
                    print(f"merging {len(names)} segments ({sum(sizes[j] for j in groups[0]):,} documents)",
                          flush=True)
                c.writer().merge(names=names)
                merges += 1
        finally:
            c.close()


class _Abandoned(Exception):
    """A BulkBuilder left without finish(): its folder is removed."""


def _union(a: Any, b: Any) -> Any:
    """Two metadata schemas as one (an integer field and a float field make a float field)."""
    if a is None:
        return b
    fields = dict(a.fields)
    for name, t in b.fields.items():
        have = fields.get(name)
        if have is None or have == t:
            fields[name] = t
        elif {have, t} == {"integer", "float"}:
            fields[name] = "float"
        else:
            raise CorpusError(f"metadata field {name!r} is {have} in some documents and {t} in others")
    return Schema(fields)
