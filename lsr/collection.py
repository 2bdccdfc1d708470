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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tqdm.auto import tqdm

from lsr.corpus import counted, read_corpus
from lsr.index import DocStore
from lsr.index.sparse import reorder_documents
from lsr.index.storage import (
    atomic_folder,
    check_target,
    check_unique_ids,
    read_id_list,
    remove_stale,
    sha256_file,
)
from lsr.manifest import DOCSTORE_FILE, IDS_FILE, Manifest, load_manifest, write_manifest
from lsr.params import BuildConfig, FusionSpec
from lsr.retrievers import retriever_class
from lsr.retrievers.base import BuildContext, OpenContext, Retriever
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


def read_ids(path: Path, count: int) -> np.ndarray:
    """The collection's ids (one per line, utf-8), checked: ``count`` of them, none empty or repeated."""
    lines = read_id_list(path, count)
    check_unique_ids(lines, path)
    ids = np.array(lines, dtype=str)
    ids.flags.writeable = False
    return ids


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

    def __init__(self, path: Path, manifest: Manifest, ids: np.ndarray, docstore: DocStore | None,
                 retrievers: dict[str, Retriever]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.ids = ids
        self.docstore = docstore
        self.retrievers = retrievers
        self._lookup: dict[str, int] | None = None
        self._id_rank: np.ndarray | None = None
        self._default_fusion = manifest.default_fusion()  # checked once, at open

    @classmethod
    def open(cls, path: str | Path, *, model: str | None = None, device: str = "auto",
             load_encoders: bool = True, verify: bool = False, validate: bool = True) -> "Collection":
        """Open ``path``; ``model`` overrides the SPLADE query encoder, ``load_encoders=False`` opens the
        indexes only, ``verify=True`` checks every file's sha256 first."""
        path = Path(path)
        manifest = load_manifest(path, verify=verify)
        ids = read_ids(path / manifest.ids_file, manifest.documents)
        store = path / manifest.docstore if manifest.docstore else None
        docstore = DocStore(store) if store is not None else None  # one the manifest names must be there
        ctx = OpenContext(path=path, ids=ids, device=device, load_encoders=load_encoders, validate=validate,
                          verify=verify, model=model)
        for name, entry in manifest.retrievers.items():
            ctx.opened[name] = retriever_class(entry.kind).open(ctx, name, entry)
        return cls(path, manifest, ids, docstore, dict(ctx.opened))

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def names(self) -> list[str]:
        """The retrievers' names, in order."""
        return list(self.retrievers)

    def rows(self, ids: Iterable[str]) -> np.ndarray:
        """Rows of the ``ids`` that exist (unknown ids skipped), without repeats, ascending."""
        if self._lookup is None:
            self._lookup = {d: r for r, d in enumerate(self.ids.tolist())}
        lookup = self._lookup
        return np.unique(np.fromiter((lookup[i] for i in ids if i in lookup), dtype=np.int64))

    @property
    def id_rank(self) -> np.ndarray:
        """Each row's rank in id order (fused ties are broken by id, as the run-dict functions do)."""
        if self._id_rank is None:
            rank = np.empty(len(self), np.int64)
            rank[np.argsort(self.ids, kind="stable")] = np.arange(len(self), dtype=np.int64)
            self._id_rank = rank
        return self._id_rank

    def default_fusion(self) -> FusionSpec:
        """Hybrid's fusion when a search gives none (the manifest's, checked at open)."""
        return self._default_fusion

    def set_fusion(self, fusion: dict | FusionSpec | None) -> Manifest:
        """Record the default fusion in the manifest (``lsr tune-fusion``); None forgets it."""
        spec = None if fusion is None else FusionSpec.check(fusion, self.names).to_dict()
        self.manifest = write_manifest(self.path, self.manifest.replace(fusion=spec), next_generation=True)
        self._default_fusion = self.manifest.default_fusion()
        return self.manifest

    # -- building ----------------------------------------------------------------------------------------
    @staticmethod
    def build(corpus: str | Path, out: str | Path, *, config: BuildConfig | None = None, device: str = "auto",
              encoder: Any = None, dense_encoder: Any = None, skip_bad: bool = False, overwrite: bool = False,
              limit: int | None = None, show_progress: bool = True, corpus_name: str | None = None
              ) -> IndexSummary:
        """Index a BEIR folder or JSONL file into the folder ``out`` (written to a temporary folder, then
        renamed); the retrievers of ``config`` (default :class:`lsr.params.BuildConfig`)."""
        config = config or BuildConfig()
        t0 = time.perf_counter()
        out = Path(out)
        remove_stale(out)  # what killed builds left; before the check: it may put a set-aside index back
        check_target(out, overwrite=overwrite, inputs=[corpus])  # fail now, not after encoding
        data = read_corpus(corpus, skip_bad=skip_bad, limit=limit)
        if encoder is None:
            from lsr.encoders import SpladeEncoder

            encoder = SpladeEncoder.from_pretrained(config.model, device=device, max_length=config.max_length)
        if dense_encoder is None and config.dense:
            from lsr.encoders import DenseEncoder

            dense_encoder = DenseEncoder.from_pretrained(config.dense, device=device,
                                                         max_length=config.max_length)
        records = data.records
        vectors = encode_corpus(encoder, [r.content for r in records], batch_size=config.batch_size,
                                show_progress=show_progress)
        order = reorder_documents(vectors) if config.reorder else np.arange(len(records), dtype=np.int32)
        ids = [records[i].id for i in order.tolist()]
        name = corpus_name or (Path(corpus).name if Path(corpus).is_dir() else data.path.stem)
        corpus_info = {"name": name, "path": str(data.path), "sha256": sha256_file(data.path),
                       "documents": len(records), "skipped": data.skipped}
        with atomic_folder(out, overwrite=overwrite, inputs=[corpus]) as tmp:
            tmp = Path(tmp)
            ctx = BuildContext(folder=tmp, texts=[records[i].content for i in order.tolist()], ids=ids,
                               config=config, splade_vectors=permute_rows(vectors, order),
                               splade_encoder=encoder, dense_encoder=dense_encoder,
                               show_progress=show_progress)
            del vectors
            entries = {n: retriever_class(n).build(ctx, n) for n in config.retrievers}
            DocStore.write(tmp / DOCSTORE_FILE, ((r.id, r.title, r.text) for r in records))
            with open(tmp / IDS_FILE, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(ids) + "\n")
            write_manifest(tmp, Manifest(documents=len(ids), retrievers=entries, corpus=corpus_info,
                                         build=config))
        postings = int(entries["sparse"].settings.get("postings", 0))
        return IndexSummary(out, len(records), postings, _folder_size(out), time.perf_counter() - t0,
                            data.skipped)
