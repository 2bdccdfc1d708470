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
import gzip
import hashlib
import json
import math
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from lsr.bulk import DEFAULT_SEGMENT_DOCS, BulkBuilder
from lsr.collection import IndexSummary
from lsr.corpus import Record, counted
from lsr.encoders._hf import load_error, quiet_hf
from lsr.encoders.resolve import resolve_model
from lsr.errors import CorpusError
from lsr.index.storage import check_target, remove_stale
from lsr.metadata import check_metadata, describe_value, json_kind
from lsr.params import BuildConfig
from lsr.types import SparseBatch

__all__ = ["Vocabulary", "VectorFileError", "VectorReader", "vector_files", "read_vector_files",
           "index_vectors", "export_scale", "VOCABULARY_FILE"]

#: a collection built with ``vocab="files"`` keeps its vocabulary here (a JSON list: term id -> token)
VOCABULARY_FILE = "vocabulary.json"
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_F32_MAX = float(np.finfo(np.float32).max)
_NUMBER = {int, float}
_IDS_DICT_MAX = 1 << 21  # integer-id vocabularies up to this size map keys through a dict


class VectorFileError(CorpusError):
    """A vector file or one of its lines is bad (the message begins with ``file:line``)."""


# -- the vocabulary ----------------------------------------------------------------------------------------
class _DigitKeys:
    """``get(key)``: the term id a decimal string names (below ``size``), else None (big id vocabularies)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def get(self, key: str) -> int | None:
        if key.isascii() and key.isdigit() and (key == "0" or key[0] != "0"):
            v = int(key)
            return v if v < self.size else None
        return None


class Vocabulary:
    """How the files' token keys become term ids, and what the collection's manifest says about it.

    * :meth:`from_model`: a model's tokenizer (its tokens, and export's ``[idN]`` for ids it lacks);
    * :meth:`from_files`: every token of the files, sorted (by code point: the same ids whatever the files'
      order), saved in the collection (:data:`VOCABULARY_FILE`, :meth:`load`);
    * :meth:`ids`: keys are term ids in decimal (``"2054"``), below ``vocab_size``; ``model``: the model
      whose ids they are (its tokenizer then encodes text queries and analyses texts for BM25).

    Example:
        >>> v = Vocabulary(["apple", "pear"])
        >>> v.vocab_size, v.term("pear"), v.batch([{"pear": 2.0}]).indices.tolist()
        (2, 1, [1])
        >>> Vocabulary.ids(10).term("7")
        7
    """

    def __init__(self, tokens: Sequence[str] | None, *, vocab_size: int | None = None, kind: str = "files",
                 model: str | None = None, tokenizer: Any = None, path: str | None = None) -> None:
        self.kind, self.model, self.tokenizer, self.path = kind, model, tokenizer, path
        if tokens is not None:
            self.tokens: list[str] | None = list(tokens)
            self._map: Any = {t: i for i, t in enumerate(self.tokens)}
            if len(self._map) != len(self.tokens):
                raise ValueError("a vocabulary's tokens must be distinct")
            self.vocab_size = max(int(vocab_size or 0), len(self.tokens))
        else:
            if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
                raise ValueError(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
            self.tokens, self.vocab_size = None, vocab_size
            self._map = ({str(i): i for i in range(vocab_size)} if vocab_size <= _IDS_DICT_MAX
                         else _DigitKeys(vocab_size))
        if self.vocab_size < 1:
            raise ValueError("a vocabulary needs at least one token")
        self.get = self._map.get  # key -> term id or None, the hot path

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Vocabulary(kind={self.kind!r}, model={self.model!r}, vocab_size={self.vocab_size})"

    @classmethod
    def from_model(cls, name_or_path: str) -> "Vocabulary":
        """The tokenizer of a model (a known alias, a folder or a Hub name); loads the tokenizer only."""
        path = resolve_model(name_or_path)
        tok = _tokenizer(name_or_path, path)
        size = max(len(tok), _config_vocab_size(path))
        tokens = [None] * size
        for t, i in tok.get_vocab().items():
            if 0 <= i < size and tokens[i] is None:
                tokens[i] = t
        return cls([t if t is not None else f"[id{i}]" for i, t in enumerate(tokens)], vocab_size=size,
                   kind="model", model=name_or_path, tokenizer=tok)

    @classmethod
    def ids(cls, vocab_size: int, *, model: str | None = None) -> "Vocabulary":
        """Keys are decimal term ids below ``vocab_size`` (``model``: whose ids; its tokenizer is loaded)."""
        tok = None
        if model is not None:
            path = resolve_model(model)
            tok = _tokenizer(model, path)
            vocab_size = max(vocab_size, len(tok), _config_vocab_size(path))
        return cls(None, vocab_size=vocab_size, kind="ids", model=model, tokenizer=tok)

    @classmethod
    def from_files(cls, path: str | Path, *, show_progress: bool = False) -> "Vocabulary":
        """Every token of the files' vectors, sorted by code point (one pass over the files; lines that do
        not parse are left to the reading pass to report)."""
        seen: set[str] = set()
        files = vector_files(path)
        for fi, f in enumerate(files):
            if show_progress:
                print(f"vocabulary: reading {f} ({fi + 1}/{len(files)})", file=sys.stderr, flush=True)
            for _, line in _lines(f):
                try:
                    obj = _DECODER.decode(line)
                except (json.JSONDecodeError, ValueError, RecursionError):
                    continue
                vec = obj.get("vector") if isinstance(obj, dict) else None
                if isinstance(vec, dict):
                    seen.update(vec)
        if not seen:
            raise VectorFileError(f"{path}: no tokens in the files' vectors")
        return cls(sorted(seen), kind="files", path=str(path))

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """A vocabulary :meth:`save` wrote: the file, or a collection folder holding it."""
        p = Path(path)
        f = p / VOCABULARY_FILE if p.is_dir() else p
        try:
            tokens = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VectorFileError(f"{f}: not a vocabulary file ({e})") from None
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise VectorFileError(f"{f}: a vocabulary file is a non-empty JSON list of token strings")
        try:
            return cls(tokens, kind="files", path=str(f))
        except ValueError as e:
            raise VectorFileError(f"{f}: {e}") from None

    def save(self, folder: str | Path) -> Path:
        """Write the tokens as ``folder/vocabulary.json`` (a JSON list, term id order); returns its path."""
        if self.tokens is None:
            raise ValueError("an integer-id vocabulary has no tokens to save")
        f = Path(folder) / VOCABULARY_FILE
        f.write_text(json.dumps(self.tokens, ensure_ascii=False), encoding="utf-8")
        return f

    def term(self, token: str) -> int | None:
        """The term id of ``token`` (None when the vocabulary lacks it)."""
        i = self.get(token)
        return i if i is not None or self.kind != "model" else _alias(token, self.vocab_size)

    def batch(self, vectors: Iterable[Mapping[str, float]]) -> SparseBatch:
        """``{token: weight}`` mappings (queries encoded elsewhere) as a SparseBatch over this vocabulary;
        ValueError names a token it lacks. For :meth:`lsr.searcher.Searcher.search_vector`."""
        rows = []
        for vec in vectors:
            row: dict[int, float] = {}
            for token, w in vec.items():
                t = self.term(str(token))
                if t is None:
                    raise ValueError(f"token {token!r} is not in the vocabulary ({self.describe_short()})")
                row[t] = row.get(t, 0.0) + float(w)
            rows.append(row)
        return SparseBatch.from_dicts(rows, vocab_size=self.vocab_size)

    def describe_short(self) -> str:
        return {"model": f"the tokenizer of {self.model}", "ids": f"term ids below {self.vocab_size:,}",
                "files": f"{self.vocab_size:,} tokens of {self.path}"}[self.kind]

    def describe(self, *, max_length: int) -> dict:
        """The manifest's description of the SPLADE query side: the model (text queries are encoded with it)
        or, without one, where the vocabulary is (queries must come as vectors)."""
        info: dict[str, Any] = {"vectors": "given", "vocabulary": self.kind, "vocab_size": self.vocab_size}
        if self.model is not None:
            info.update(name=self.model, max_length=max_length)
        elif self.kind == "files":
            info["vocabulary_file"] = VOCABULARY_FILE
        return info


def _alias(token: str, size: int) -> int | None:
    """Export's name ``[idN]`` of a term id the tokenizer has no token for."""
    if token.startswith("[id") and token.endswith("]") and token[3:-1].isascii() and token[3:-1].isdigit():
        i = int(token[3:-1])
        return i if i < size else None
    return None


def _tokenizer(name: str, path: str) -> Any:
    try:
        from transformers import AutoTokenizer

        with quiet_hf():
            return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise load_error(e, name, path, "a local model folder") from None


def _config_vocab_size(path: str) -> int:
    """``vocab_size`` of a model folder's config.json (0 when unknown): an encoder's output may be wider
    than its tokenizer."""
    try:
        v = json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("vocab_size", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return v if isinstance(v, int) and v > 0 else 0


def resolve_vocabulary(vocab: str | Vocabulary | None, path: str | Path, *, model: str,
                       show_progress: bool = False) -> Vocabulary:
    """What ``--vocab`` names: None (``model``'s tokenizer), ``"files"`` (the files' tokens), ``"ids"``
    (decimal term ids of ``model``), a folder or file holding :data:`VOCABULARY_FILE` (a collection built
    with ``"files"``), else a model name or folder."""
    if isinstance(vocab, Vocabulary):
        return vocab
    if vocab is None:
        return Vocabulary.from_model(model)
    if not isinstance(vocab, str) or not vocab:
        raise ValueError(f"vocab must be a model, 'files', 'ids' or a vocabulary file, got {vocab!r}")
    if vocab == "files":
        return Vocabulary.from_files(path, show_progress=show_progress)
    if vocab == "ids":
        return Vocabulary.ids(1, model=model)
    p = Path(vocab)
    if (p.is_dir() and (p / VOCABULARY_FILE).is_file()) or (p.is_file() and p.name.endswith(".json")):
        return Vocabulary.load(p)
    return Vocabulary.from_model(vocab)


# -- files and lines ---------------------------------------------------------------------------------------
def vector_files(path: str | Path) -> list[Path]:
    """The files behind ``path``: the file itself, or a folder's vector files (see the module docstring)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise VectorFileError(f"{p}: no such file or folder")
    if (p / "export.json").is_file() and (p / "docs").is_dir():  # lsr export's layout
        p = p / "docs"
    files = sorted((f for f in p.rglob("*") if f.name.endswith(SUFFIXES) and f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(p).parts)),
                   key=lambda f: f.relative_to(p).as_posix())
    if not files:
        raise VectorFileError(f"{p}: no {', '.join('*' + s for s in SUFFIXES)} files in this folder")
    return files


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines with their numbers; VectorFileError for an unreadable file, bad gzip or UTF-8."""
    n = 0
    try:
        with gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                line = raw.decode("utf-8")
                if line.strip():
                    yield n, line
    except UnicodeDecodeError:
        raise VectorFileError(f"{path}:{n}: not valid UTF-8") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise VectorFileError(f"{path}: not a readable gzip file ({e or 'truncated'})") from None
    except OSError as e:
        raise VectorFileError(f"{path}: cannot read ({e.strerror or e})") from None


class _Dups(dict):
    """A JSON object that repeated a key (``dup``: the first repeated one)."""

    dup: str = ""


def _pairs(pairs: list) -> dict:
    d = dict(pairs)
    if len(d) != len(pairs):
        d = _Dups(pairs)
        seen: set = set()
        d.dup = next(k for k, _ in pairs if k in seen or seen.add(k))
    return d


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs)


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
