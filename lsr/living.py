"""Opening and writing the segments of a living collection (the folder layer: :mod:`lsr.segments`; the
retrievers over them: :mod:`lsr.composite`; writes and merges: :mod:`lsr.writer`).

A segment is written like a first build (same layout, same retrievers' ``build``) from documents whose vectors
are already computed: encoded by :meth:`lsr.collection.Collection.add`, given by the caller, or read back from
the segments a merge combines (never encoded again). Its rows are ordered for block-max pruning as a build
orders them.

Example:
    >>> from lsr.living import open_folder
    >>> ids, store, retrievers = open_folder(path, load_manifest(path))     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lsr import segments as S
from lsr.composite import SEGMENT_KINDS, OpenSegment, compose
from lsr.corpus import Record
from lsr.errors import IndexFormatError
from lsr.index import DocStore
from lsr.index.sparse import reorder_documents
from lsr.index.storage import atomic_folder, check_unique_ids, read_id_list
from lsr.manifest import DOCSTORE_FILE, IDS_FILE, Manifest, load_manifest, write_manifest
from lsr.params import BuildConfig
from lsr.retrievers import retriever_class
from lsr.retrievers.base import BuildContext, OpenContext, Retriever
from lsr.types import SparseBatch

#: options of a snapshot that are not a segment's (a shard's subset of segments, global statistics)
SNAPSHOT_OPTIONS = ("segments", "stats")


class Vanished(Exception):
    """The commit point being opened was replaced and removed meanwhile (the caller opens the newest)."""


def read_ids(path: Path, count: int) -> np.ndarray:
    """The collection's ids (one per line, utf-8), checked: ``count`` of them, none empty or repeated."""
    lines = read_id_list(path, count)
    check_unique_ids(lines, path)
    ids = np.array(lines, dtype=str)
    ids.flags.writeable = False
    return ids


def open_folder(path: Path, manifest: Manifest, *, model: str | None = None, device: str = "auto",
                load_encoders: bool = True, verify: bool = False, validate: bool = True,
                names: Iterable[str] | None = None
                ) -> tuple[np.ndarray, DocStore | None, dict[str, Retriever]]:
    """(ids, document store, retrievers) of a built folder (a collection that never took a write, or one
    segment of a living one); ``names``: only these retrievers."""
    ids = read_ids(path / manifest.ids_file, manifest.documents)
    store = path / manifest.docstore if manifest.docstore else None
    docstore = DocStore(store) if store is not None else None  # one the manifest names must be there
    ctx = OpenContext(path=path, ids=ids, device=device, load_encoders=load_encoders, validate=validate,
                      verify=verify, model=model)
    wanted = None if names is None else set(names)
    for name, entry in manifest.retrievers.items():
        if wanted is None or name in wanted:
            ctx.opened[name] = retriever_class(entry.kind).open(ctx, name, entry)
    return ids, docstore, dict(ctx.opened)


def _columns(seg_path: Path, manifest: Manifest, n: int) -> Any:
    if not manifest.schema:
        return None
    from lsr.filters import Columns, Schema

    schema = Schema.from_json(manifest.schema, str(seg_path))
    return Columns.load(seg_path, schema, n)


def write_rows(tmp: Path, ctx: BuildContext, records: list[Record], order: list[int], kinds: Iterable[str], *,
               schema: Any = None, infer: bool = False, **manifest_fields: Any) -> dict:
    """Fill the temporary folder of a build or a segment: ``records`` in row ``order`` (their vectors in
    ``ctx``): each retriever of ``kinds``, the document store, the ids, the metadata columns (``schema``;
    ``infer``: types inferred from the documents), the manifest last. Returns the retrievers' sections."""
    entries = {k: retriever_class(k).build(ctx, k) for k in kinds}
    DocStore.write(tmp / DOCSTORE_FILE, ((records[i].id, records[i].title, records[i].text) for i in order))
    with open(tmp / IDS_FILE, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(records[i].id for i in order) + "\n")
    metadatas = [records[i].metadata for i in order]
    if infer and any(metadatas):
        from lsr.filters import Schema

        schema = Schema.infer(metadatas)
    schema_json = None
    if schema is not None and schema.fields:
        from lsr.filters import write_columns

        write_columns(tmp, schema, metadatas)
        schema_json = schema.to_json()
    write_manifest(tmp, Manifest(documents=len(order), retrievers=entries, schema=schema_json,
                                 **manifest_fields))
    return entries


def open_segment(path: Path, ref: S.SegmentRef, options: dict, *, load_encoders: bool) -> OpenSegment:
    """Open one segment of a living collection (its folder's manifest, rows, store, retrievers, columns)."""
    seg_path = path / ref.dir
    own = load_manifest(seg_path, verify=options.get("verify", False), own=True)
    if own.documents != ref.documents:
        raise IndexFormatError(f"{seg_path}: {own.documents} documents, the commit point says "
                               f"{ref.documents}")
    opts = {k: v for k, v in options.items() if k not in SNAPSHOT_OPTIONS}
    opts["load_encoders"] = load_encoders
    ids, store, retrievers = open_folder(seg_path, own, names=SEGMENT_KINDS, **opts)
    return OpenSegment(ref=ref, path=seg_path, manifest=own, ids=ids, docstore=store, retrievers=retrievers,
                       columns=_columns(seg_path, own, own.documents), deleted=S.read_deletes(path, ref))


def open_snapshot(cls: Any, path: Path, manifest: Manifest, options: dict, *, previous: Any = None) -> Any:
    """A :class:`lsr.collection.Collection` at the commit point ``manifest`` came from: its segments
    opened (those of ``previous``, an older snapshot, reused), one retriever per name over all of them."""
    lease = S.ReaderLease(path, manifest.generation)
    if not lease.held:
        raise Vanished(manifest.generation)
    reuse = {s.ref.dir: s for s in (getattr(previous, "segments", None) or [])}
    encoders: dict[str, Any] = {}
    if previous is not None:
        encoders = {n: r.encoder for n, r in previous.retrievers.items() if n in ("sparse", "dense")}
    segs: list[OpenSegment] = []
    only = options.get("segments")
    refs = manifest.segments
    if only is not None:
        names = {r.name for r in refs}
        missing = sorted(set(only) - names)
        if missing:
            raise IndexFormatError(f"{path}: no segment {missing[0]!r} at commit point {manifest.generation}")
        refs = tuple(r for r in refs if r.name in set(only))
    for ref in refs:
        old = reuse.get(ref.dir)
        if old is not None and old.ref.documents == ref.documents and old.ref.name == ref.name:
            seg = old if old.ref == ref else dataclasses.replace(old, ref=ref,
                                                                 deleted=S.read_deletes(path, ref))
        else:
            want = options.get("load_encoders", True) and not encoders
            seg = open_segment(path, ref, options, load_encoders=want)
            if want:
                encoders = {n: r.encoder for n, r in seg.retrievers.items() if n in ("sparse", "dense")}
        segs.append(seg)
    for seg in segs:
        for n, enc in encoders.items():
            if n in seg.retrievers:
                seg.retrievers[n].encoder = enc
    tokenizer = getattr(encoders.get("sparse"), "tokenizer", None)
    retrievers, store, ids, live = compose(segs, manifest, path=path, tokenizer=tokenizer,
                                           bm25_query=_bm25_query(manifest, tokenizer),
                                           stats=options.get("stats"))
    return cls(path, manifest, ids, store, retrievers, live=live, segments=segs, lease=lease, options=options)


def _bm25_query(manifest: Manifest, tokenizer: Any) -> Any:
    """BM25's query encoder with the collection's live statistics (None without a tokenizer)."""
    entry = manifest.retrievers.get("bm25")
    if entry is None or tokenizer is None:
        return None
    from lsr.bm25 import BM25Encoder

    st = entry.settings
    avgdl = float(manifest.stats.get("bm25_avgdl", st.get("avgdl", 1.0)))

    def make(df: np.ndarray, n: int) -> BM25Encoder:
        return BM25Encoder(analyzer="wordpiece", df=df, n_docs=max(n, 1), avgdl=avgdl, k1=float(st["k1"]),
                           b=float(st["b"]), tokenizer=tokenizer)
    return make


def write_segment(folder: Path, name: str, manifest: Manifest, *, records: list[Record], sparse: SparseBatch,
                  dense: np.ndarray | None, schema: Any, tokenizer: Any, wordpiece: dict | None = None
                  ) -> S.SegmentRef:
    """Write segment ``name`` under ``folder/segments`` (a temporary folder, renamed) holding ``records``
    with their vectors; rows ordered for block-max pruning. Returns its commit-point entry. BM25 takes the
    collection's average length (``manifest.stats["bm25_avgdl"]``; its own where there is none yet: a first
    segment); ``wordpiece``: a dict that receives the texts' WordPiece statistics (``"stats"``, a
    :class:`lsr.bm25.BM25Encoder`) for a collection-level IDF table."""
    from lsr.collection import permute_rows

    config = manifest.build or BuildConfig()
    n = len(records)
    order = reorder_documents(sparse) if config.reorder and n > 1 else np.arange(n, dtype=np.int32)
    idx = order.tolist()
    kinds = [k for k in manifest.retrievers if k in SEGMENT_KINDS]
    rel = f"{S.SEGMENTS_DIR}/{name}"
    entries_in = manifest.retrievers
    with atomic_folder(folder / rel) as tmp:
        tmp = Path(tmp)
        ctx = BuildContext(folder=tmp, texts=[records[i].content for i in idx],
                           ids=[records[i].id for i in idx],
                           config=config, splade_vectors=permute_rows(sparse, order),
                           dense_vectors=None if dense is None else np.ascontiguousarray(dense[order]),
                           splade_info=entries_in["sparse"].encoder,
                           dense_info=entries_in["dense"].encoder if "dense" in entries_in else None,
                           bm25_avgdl=(float(manifest.stats["bm25_avgdl"])
                                       if "bm25" in kinds and "bm25_avgdl" in manifest.stats else None),
                           tokenizer=tokenizer, show_progress=False)
        write_rows(tmp, ctx, records, idx, kinds, schema=schema, build=config)
        if wordpiece is not None and tokenizer is not None:
            wordpiece["stats"] = ctx.wordpiece_stats()
    return S.SegmentRef(name=name, dir=rel, documents=n)

