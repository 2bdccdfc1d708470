"""Vectors encoded elsewhere: Anserini/Pyserini ``JsonVectorCollection`` files into a collection
(``lsr index --vectors PATH``).

A file holds one JSON object per line: ``{"id": "d1", "contents": "text", "vector": {"token": weight, ...}}``
(``"_id"`` is read too; ``contents`` and a ``metadata`` object are optional). ``PATH`` is one file or a folder
whose ``*.jsonl``, ``*.json``, ``*.jsonl.gz`` and ``*.json.gz`` files (hidden ones aside, sub-folders
included) are read in sorted order; a folder that :func:`lsr.export.export_pyserini` wrote is read from its
``docs/``. This is what Pyserini's prebuilt SPLADE encodings of MS MARCO and our own ``lsr export`` hold.

The tokens become term ids through a :class:`Vocabulary`: a model's tokenizer (the encoder that then
encodes text queries), the files' own tokens (sorted, saved as ``vocabulary.json`` in the collection; no
query encoder: search with query vectors), or term ids written as decimal strings (``{"2054": 1.5}``, the
peerbench harness files).

Reading streams: :func:`read_vector_files` yields batches of records with their :class:`SparseBatch`, so
memory is bounded by the batch, plus 24 bytes a document to find repeated ids (128-bit hashes, first-seen
lines). Every bad line (not JSON, no id, a vector that is not an object of finite non-negative numbers, a
token twice, a token the vocabulary lacks, a repeated id) raises :class:`VectorFileError` naming
``file:line``; with ``skip_bad=True`` it is skipped and counted. Weights of 0 are dropped.

Example:
    >>> from lsr.vectorfiles import index_vectors
    >>> index_vectors("msmarco-splade-pp/", "msmarco-index", vocab="naver/splade-cocondenser-ensembledistil")
    ... # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from lsr.bulk import DEFAULT_SEGMENT_DOCS, BulkBuilder
from lsr.collection import IndexSummary
from lsr.corpus import Record, counted
from lsr.index.storage import check_target, remove_stale
from lsr.metadata import check_metadata, describe_value, json_kind
from lsr.params import BuildConfig
from lsr.types import SparseBatch
from lsr.vocabulary import (
    _DECODER,
    VOCABULARY_FILE,
    VectorFileError,
    Vocabulary,
    _Dups,
    _lines,
    resolve_vocabulary,
    vector_files,
)

__all__ = ["Vocabulary", "VectorFileError", "VectorReader", "vector_files", "read_vector_files",
           "index_vectors", "export_scale", "VOCABULARY_FILE"]

_F32_MAX = float(np.finfo(np.float32).max)
_NUMBER = {int, float}


# -- repeated ids --------------------------------------------------------------------------------------------
def _hashes(ids: Sequence[str]) -> np.ndarray:
    """128-bit BLAKE2b of each id, as (n, 2) uint64."""
    raw = b"".join(hashlib.blake2b(i.encode("utf-8"), digest_size=16).digest() for i in ids)
    return np.frombuffer(raw, dtype="<u8").reshape(-1, 2)


class _SeenIds:
    """The ids of earlier batches as sorted runs of 128-bit hashes with where each was first seen (24 bytes a
    document; runs merge when they are of similar size, so a lookup touches O(log n) runs)."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def find(self, h: np.ndarray) -> np.ndarray:
        """For each hash, where it was seen (the ``loc`` given to :meth:`add`), else -1."""
        out = np.full(len(h), -1, np.int64)
        for hi, lo, loc in self.runs:
            pos = np.searchsorted(hi, h[:, 0])
            cand = np.flatnonzero(hi[np.minimum(pos, hi.size - 1)] == h[:, 0])
            for i in cand.tolist():
                j = int(pos[i])
                while j < hi.size and hi[j] == h[i, 0]:
                    if lo[j] == h[i, 1]:
                        out[i] = loc[j]
                        break
                    j += 1
        return out

    def add(self, h: np.ndarray, loc: np.ndarray) -> None:
        if not len(h):
            return
        self.runs.append(self._sorted(h[:, 0], h[:, 1], loc))
        while len(self.runs) > 1 and self.runs[-2][0].size <= 2 * self.runs[-1][0].size:
            b, a = self.runs.pop(), self.runs.pop()
            self.runs.append(self._sorted(*(np.concatenate([x, y]) for x, y in zip(a, b))))

    @staticmethod
    def _sorted(hi: np.ndarray, lo: np.ndarray, loc: np.ndarray) -> tuple:
        order = np.lexsort((lo, hi))
        return hi[order], lo[order], np.asarray(loc, np.int64)[order]


_LINE_BITS = 40  # loc = file index << 40 | line number


# -- the reader ----------------------------------------------------------------------------------------------
class VectorReader:
    """An iterator of ``(records, SparseBatch)`` batches over vector files (:func:`read_vector_files`);
    ``documents``, ``skipped`` and ``skipped_examples`` (up to 3 messages) count what it read so far.

    Example:
        >>> reader = read_vector_files("run.jsonl", vocab=Vocabulary.ids(30522))   # doctest: +SKIP
        >>> for records, vectors in reader: ...                                      # doctest: +SKIP
        >>> reader.skipped                                                           # doctest: +SKIP
        0
    """

    def __init__(self, path: str | Path, *, vocab: Vocabulary, skip_bad: bool = False,
                 batch_docs: int = 10_000, scale: float = 1.0) -> None:
        if not isinstance(vocab, Vocabulary):
            raise TypeError(f"vocab must be a Vocabulary, got {type(vocab).__name__}")
        if isinstance(batch_docs, bool) or not isinstance(batch_docs, int) or batch_docs < 1:
            raise ValueError(f"batch_docs must be an integer >= 1, got {batch_docs!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        self.path, self.vocab, self.skip_bad, self.batch_docs = Path(path), vocab, skip_bad, batch_docs
        self.scale, self._max = float(scale), _F32_MAX / max(float(scale), 1.0)
        self.files = vector_files(path)
        self.documents = 0
        self.skipped = 0
        self.skipped_examples: list[str] = []
        self._gen = self._batches()

    def __iter__(self) -> "VectorReader":
        return self

    def __next__(self) -> tuple[list[Record], SparseBatch]:
        return next(self._gen)

    def _bad(self, message: str) -> None:
        if not self.skip_bad:
            raise VectorFileError(message)
        self.skipped += 1
        if len(self.skipped_examples) < 3:
            self.skipped_examples.append(message)

    def _where(self, loc: int) -> str:
        return f"{self.files[loc >> _LINE_BITS]}:{loc & ((1 << _LINE_BITS) - 1)}"

    def _batches(self) -> Iterator[tuple[list[Record], SparseBatch]]:
        seen = _SeenIds()
        batch: list[tuple[Record, int, np.ndarray, np.ndarray]] = []  # record, loc, term ids, weights
        local: dict[str, int] = {}  # this batch's ids -> loc
        for fi, f in enumerate(self.files):
            for lineno, line in _lines(f):
                loc = (fi << _LINE_BITS) | lineno
                try:
                    record, terms, weights = self._parse(line, f"{f}:{lineno}")
                    if record.id in local:
                        raise VectorFileError(f"{f}:{lineno}: repeats id {record.id!r} (first seen at "
                                              f"{self._where(local[record.id])})")
                except VectorFileError as e:
                    if not self.skip_bad:
                        self._repeats(seen, batch)  # an earlier line's repeat is the first error
                    self._bad(str(e))
                    continue
                local[record.id] = loc
                batch.append((record, loc, terms, weights))
                if len(batch) >= self.batch_docs:
                    out = self._emit(seen, batch)
                    batch, local = [], {}
                    if out is not None:
                        yield out
        out = self._emit(seen, batch)
        if out is not None:
            yield out

    def _repeats(self, seen: _SeenIds, batch: list) -> np.ndarray:
        """Positions in ``batch`` of ids an earlier batch had (raised unless skip_bad)."""
        if not batch or not seen.runs:
            return np.zeros(0, np.int64)
        found = seen.find(_hashes([b[0].id for b in batch]))
        bad = np.flatnonzero(found >= 0)
        for i in bad.tolist():
            self._bad(f"{self._where(batch[i][1])}: repeats id {batch[i][0].id!r} (first seen at "
                      f"{self._where(int(found[i]))})")
        return bad

    def _emit(self, seen: _SeenIds, batch: list) -> tuple[list[Record], SparseBatch] | None:
        bad = self._repeats(seen, batch)
        if bad.size:
            drop = set(bad.tolist())
            batch = [b for i, b in enumerate(batch) if i not in drop]
        if not batch:
            return None
        seen.add(_hashes([b[0].id for b in batch]), np.array([b[1] for b in batch], np.int64))
        lengths = np.fromiter((b[2].size for b in batch), np.int64, len(batch))
        indptr = np.zeros(len(batch) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        terms = np.concatenate([b[2] for b in batch])
        weights = np.concatenate([b[3] for b in batch])
        if self.scale != 1.0:
            weights *= self.scale
        self.documents += len(batch)
        return [b[0] for b in batch], SparseBatch(indptr, terms, weights, self.vocab.vocab_size)

    def _parse(self, line: str, where: str) -> tuple[Record, np.ndarray, np.ndarray]:
        try:
            obj = _DECODER.decode(line)
        except json.JSONDecodeError as e:
            raise VectorFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
        except (ValueError, RecursionError) as e:
            raise VectorFileError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(obj, dict):
            raise VectorFileError(f"{where}: expected a JSON object (one document per line), got "
                                  f"{json_kind(obj)}")
        doc_id = obj.get("id", obj.get("_id"))
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if doc_id is None:
            raise VectorFileError(f"{where}: no 'id' field" if "id" not in obj and "_id" not in obj
                                  else f"{where}: the document id is null")
        if not isinstance(doc_id, str) or not doc_id.strip() or "\n" in doc_id or "\r" in doc_id:
            raise VectorFileError(f"{where}: the id must be a non-empty single-line string, got "
                                  f"{describe_value(doc_id)}")
        doc = f"{where}: document {doc_id!r}"
        vec = obj.get("vector")
        if not isinstance(vec, dict):
            raise VectorFileError(f"{doc} has no 'vector' field" if vec is None else
                                  f"{doc}: 'vector' must be an object of token: weight, got {json_kind(vec)}")
        if isinstance(vec, _Dups):
            raise VectorFileError(f"{doc}: token {vec.dup!r} appears twice in 'vector'")
        keys, vals = list(vec), list(vec.values())
        if not set(map(type, vals)) <= _NUMBER:
            k = next(k for k, v in vec.items() if type(v) not in _NUMBER)
            raise VectorFileError(f"{doc}: the weight of token {k!r} must be a number, got "
                                  f"{describe_value(vec[k])}")
        w = np.fromiter(vals, np.float64, len(vals))
        if w.size and not (w.min() >= 0 and w.max() <= self._max):  # False for NaN too
            i = int(np.argmin((w >= 0) & (w <= self._max)))
            raise VectorFileError(f"{doc}: the weight of token {keys[i]!r} must be a finite number >= 0, "
                                  f"got {vals[i]!r}")
        if not w.all():  # zero weights: absent terms
            nz = np.flatnonzero(w)
            keys, w = [keys[i] for i in nz.tolist()], w[nz]
        terms = list(map(self.vocab.get, keys))
        if None in terms:
            for i, t in enumerate(terms):
                if t is None:
                    t = self.vocab.term(keys[i])
                    if t is None:
                        raise VectorFileError(f"{doc}: token {keys[i]!r} is not in the vocabulary "
                                              f"({self.vocab.describe_short()})")
                    terms[i] = t
        if len(set(terms)) != len(terms):
            first: dict[int, str] = {}
            for k, t in zip(keys, terms):
                if t in first:
                    raise VectorFileError(f"{doc}: tokens {first[t]!r} and {k!r} are the same term (id {t})")
                first[t] = k
        contents = obj.get("contents")
        if contents is not None and not isinstance(contents, str):
            raise VectorFileError(f"{doc}: 'contents' must be a string, got {json_kind(contents)}")
        try:
            metadata = check_metadata(obj.get("metadata"))
        except ValueError as e:
            raise VectorFileError(f"{doc}: {e}") from None
        t = np.fromiter(terms, np.int32, len(terms))
        order = np.argsort(t)  # ascending term ids, as an encoder writes them
        return Record(doc_id, "", contents or "", metadata), t[order], w[order]


def read_vector_files(path: str | Path, *, vocab: Vocabulary, skip_bad: bool = False,
                      batch_docs: int = 10_000, scale: float = 1.0) -> VectorReader:
    """Stream the documents of vector files as ``(records, SparseBatch)`` batches of up to ``batch_docs``
    (record text: ``contents``, title empty; metadata: the ``metadata`` object; weights times ``scale``).
    See the module docstring for what a bad line is; ``skip_bad`` skips and counts them
    (``reader.skipped``).

    Example:
        >>> for records, vectors in read_vector_files("vectors/", vocab=Vocabulary.from_model("splade-tiny")):
        ...     print(len(records), vectors.nnz)                                      # doctest: +SKIP
    """
    return VectorReader(path, vocab=vocab, skip_bad=skip_bad, batch_docs=batch_docs, scale=scale)


def export_scale(path: str | Path) -> float:
    """What a folder :func:`lsr.export.export_pyserini` wrote multiplies its integer weights by to give the
    index's weights (``scale`` in its ``export.json``); 1.0 for any other file or folder."""
    f = Path(path) / "export.json"
    if not f.is_file():
        return 1.0
    try:
        scale = json.loads(f.read_text(encoding="utf-8")).get("scale", 1.0)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        raise VectorFileError(f"{f}: not a readable export description") from None
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise VectorFileError(f"{f}: 'scale' must be a positive number, got {describe_value(scale)}")
    return float(scale)


# -- building ----------------------------------------------------------------------------------------------
def index_vectors(path: str | Path, out: str | Path, *, vocab: str | Vocabulary | None = None,
                  config: BuildConfig | None = None, segment_docs: int = DEFAULT_SEGMENT_DOCS,
                  merge: bool = True, overwrite: bool = False, skip_bad: bool = False,
                  show_progress: bool = True, batch_docs: int = 10_000, scale: float | None = None
                  ) -> IndexSummary:
    """Build a collection at ``out`` from vector files (bounded memory: :class:`lsr.bulk.BulkBuilder`).

    ``vocab``: None (the tokenizer of ``config.model``, default splade-tiny), ``"files"`` (the files'
    tokens, saved as ``out/vocabulary.json``; the collection then has no query encoder: search it with query
    vectors, :meth:`Vocabulary.batch` + :meth:`lsr.searcher.Searcher.search_vector`), ``"ids"`` (keys are
    ``config.model``'s term ids in decimal), a collection or ``vocabulary.json`` built with ``"files"``, or
    a model name or folder. Retrievers: ``sparse`` always; ``bm25`` and ``sparse-idf`` when ``config`` asks
    for them, the vocabulary comes with a model's tokenizer and the first batch's documents have
    ``contents``; never ``dense`` (no dense vectors in these files). ``scale``: what the weights are
    multiplied by (default: an ``lsr export`` folder's own, so the collection scores as its source did; 1.0
    for other files; 0.01 turns Anserini's ``round(100 * w)`` integers back into SPLADE's weights).

    Example:
        >>> index_vectors("export/", "copy", vocab="splade-tiny").documents  # doctest: +SKIP
        5183
    """
    t0 = time.perf_counter()
    config = config or BuildConfig()
    remove_stale(out)
    check_target(out, overwrite=overwrite, inputs=[path])  # now, not after a pass over the files
    v = resolve_vocabulary(vocab, path, model=config.model, show_progress=show_progress)
    scale = export_scale(path) if scale is None else scale
    reader = read_vector_files(path, vocab=v, skip_bad=skip_bad, batch_docs=batch_docs, scale=scale)
    batches = iter(reader)
    first = next(batches, None)
    texts = first is not None and any(r.text.strip() for r in first[0])
    with_text = texts and v.tokenizer is not None
    config = dataclasses.replace(config, model=v.model or config.model, dense=None,
                                 bm25=config.bm25 and with_text,
                                 sparse_idf=config.sparse_idf and with_text)
    corpus = {"name": Path(path).name, "path": str(path), "format": "JsonVectorCollection",
              "files": len(reader.files), "scale": scale, "skipped": 0}
    with BulkBuilder(out, config=config, segment_docs=segment_docs, overwrite=overwrite, inputs=[path],
                     corpus=corpus, show_progress=show_progress,
                     splade_info=v.describe(max_length=config.max_length),
                     tokenizer=v.tokenizer if with_text else None) as b:
        for records, sparse in ([first] if first is not None else []):
            b.add(records, sparse=sparse)
        for records, sparse in batches:
            b.add(records, sparse=sparse)
        if reader.documents == 0:
            why = f" ({counted(reader.skipped, 'bad line')} skipped)" if reader.skipped else ""
            raise VectorFileError(f"{path}: no documents{why}")
        b.corpus["skipped"] = reader.skipped
        if v.kind == "files":
            v.save(b.folder)
        summary = b.finish(merge=merge)
    return dataclasses.replace(summary, seconds=time.perf_counter() - t0)
