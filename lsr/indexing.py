"""From a corpus file to an index folder: read, encode (with a progress bar), write atomically."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsr.corpus import counted, read_corpus
from lsr.types import SparseBatch


@dataclass(frozen=True)
class IndexSummary:
    """What ``index_corpus`` did: counts, size on disk and wall time."""

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
    from tqdm.auto import tqdm

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


def index_corpus(corpus: str | Path, out: str | Path, *, model: str = "splade-tiny", encoder=None,
                 batch_size: int = 32, max_length: int = 256, device: str = "auto",
                 quantization: str = "uint8", block_size: int = 8, reorder: bool = True,
                 skip_bad: bool = False, overwrite: bool = False,
                 limit: int | None = None, show_progress: bool = True,
                 corpus_name: str | None = None, dense: str | None = "minilm", dense_encoder=None,
                 dense_kind: str = "flat", bm25: bool = True, bm25_analyzer: str = "wordpiece",
                 ) -> IndexSummary:
    """Index a BEIR folder or JSONL file into the folder ``out`` (written to a temp folder, then renamed).

    Besides the SPLADE side, ``dense`` (a dense model name, or None) adds a dense side and ``bm25`` a BM25
    side (see :mod:`lsr.hybrid`); ``dense_kind`` is ``"flat"``, ``"hnsw"`` or ``"ivf"``.

    Example:
        >>> from lsr.indexing import index_corpus
        >>> index_corpus("data.jsonl", "my-index").documents   # doctest: +SKIP
    """
    from lsr.hybrid import write_bm25_side, write_dense_side
    from lsr.index import DocStore, SparseIndex
    from lsr.index.sparse import MAX_BLOCK_SIZE, MIN_BLOCK_SIZE
    from lsr.index.storage import atomic_folder, check_target, remove_stale, sha256_file, write_manifest

    t0 = time.perf_counter()
    out = Path(out)
    remove_stale(out)  # what killed builds left; before the check: it may put a set-aside index back
    check_target(out, overwrite=overwrite, inputs=[corpus])  # fail now, not after encoding
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if not isinstance(block_size, int) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise ValueError(f"block_size must be an integer between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}, "
                         f"got {block_size!r}")
    from lsr.bm25 import ANALYZERS
    from lsr.index.dense import KINDS

    if dense_kind not in KINDS:
        raise ValueError(f"dense kind must be one of {KINDS}, got {dense_kind!r}")
    if bm25_analyzer not in ANALYZERS:
        raise ValueError(f"bm25 analyzer must be one of {ANALYZERS}, got {bm25_analyzer!r}")
    corpus_data = read_corpus(corpus, skip_bad=skip_bad, limit=limit)
    if encoder is None:
        from lsr.encoders import SpladeEncoder

        encoder = SpladeEncoder.from_pretrained(model, device=device, max_length=max_length)
    if dense_encoder is None and dense:
        from lsr.encoders import DenseEncoder

        dense_encoder = DenseEncoder.from_pretrained(dense, device=device, max_length=max_length)
    records = corpus_data.records
    vectors = encode_corpus(encoder, [r.content for r in records], batch_size=batch_size,
                            show_progress=show_progress)
    name = corpus_name or (Path(corpus).name if Path(corpus).is_dir() else corpus_data.path.stem)
    metadata = {"encoder": encoder.describe(),
                "corpus": {"name": name, "path": str(corpus_data.path),
                           "sha256": sha256_file(corpus_data.path), "documents": len(records),
                           "skipped": corpus_data.skipped}}
    with atomic_folder(out, overwrite=overwrite, inputs=[corpus]) as tmp:
        DocStore.write(Path(tmp) / "docs.sqlite", ((r.id, r.title, r.text) for r in records))
        manifest = SparseIndex.write_into(tmp, vectors, [r.id for r in records],
                                          quantization=quantization, block_size=block_size,
                                          reorder=reorder, metadata=metadata)
        sides = {}
        texts = [r.content for r in records]
        if dense_encoder is not None:
            order = np.load(Path(tmp) / manifest["order"])
            sides["dense"] = write_dense_side(Path(tmp), dense_encoder, texts, order, kind=dense_kind,
                                              show_progress=show_progress)
        if bm25:
            sides["bm25"] = write_bm25_side(Path(tmp), texts, [r.id for r in records], analyzer=bm25_analyzer,
                                            tokenizer=encoder.tokenizer)
        if sides:
            manifest = write_manifest(tmp, {**manifest, "sides": sides})
    return IndexSummary(out, len(records), int(manifest["nnz"]), _folder_size(out),
                        time.perf_counter() - t0, corpus_data.skipped)
