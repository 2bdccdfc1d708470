"""Vector files' vocabularies and lines (for :mod:`lsr.vectorfiles`): :class:`Vocabulary` (a model's tokens,
the files' own tokens, or term ids) and the files behind a path, read line by line (gzip, UTF-8 checked).

Example:
    >>> from lsr.vocabulary import Vocabulary
    >>> Vocabulary(["apple", "pear"]).term("pear")
    1
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from lsr.encoders._hf import load_error, quiet_hf
from lsr.encoders.resolve import resolve_model
from lsr.errors import CorpusError
from lsr.types import SparseBatch

#: a collection built with ``vocab="files"`` keeps its vocabulary here (a JSON list: term id -> token)
VOCABULARY_FILE = "vocabulary.json"
SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
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
