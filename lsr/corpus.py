"""Reading corpora: a BEIR folder (``corpus.jsonl``) or a JSONL file of ``{"id"|"_id", "title"?, "text",
"metadata"?}`` (``metadata``: an object of strings, numbers, booleans, nulls and lists of strings)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from lsr.errors import CorpusError
from lsr.metadata import check_metadata


@dataclass(frozen=True)
class Record:
    """One corpus document; ``metadata``: its checked metadata object (empty when the line has none).

    Example:
        >>> Record("d1", "Title", "Body text").content
        'Title Body text'
        >>> Record("d2", "", "Text", {"lang": "en"}).metadata
        {'lang': 'en'}
    """

    id: str
    title: str
    text: str
    metadata: dict = field(default_factory=dict, hash=False)

    @property
    def content(self) -> str:
        """What the encoder sees: title and text joined by a space (the BEIR/SPLADE convention)."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass(frozen=True)
class Corpus:
    """The records of a corpus file, plus how many bad lines were skipped (with ``skip_bad=True``)."""

    path: Path
    records: list[Record]
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    #: the good documents (:func:`scan_corpus` keeps none in ``records``); None: ``len(records)``
    documents: int | None = None
    #: the line numbers :func:`scan_corpus` skipped (bad lines, repeated ids)
    skipped_lines: frozenset = frozenset()

    def __len__(self) -> int:
        return len(self.records) if self.documents is None else self.documents


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and ``noun`` in the right number, for messages.

    Example:
        >>> counted(1, "bad line"), counted(1234, "query", "queries")
        ('1 bad line', '1,234 queries')
    """
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def corpus_file(path: str | Path) -> Path:
    """The JSONL file behind ``path``: the file itself, or ``corpus.jsonl`` inside a BEIR folder."""
    p = Path(path)
    if p.is_dir():
        f = p / "corpus.jsonl"
        if not f.is_file():
            raise CorpusError(f"{p}: a corpus folder must contain corpus.jsonl (BEIR layout)")
        return f
    if not p.exists():
        raise CorpusError(f"{p}: no such file or folder")
    return p


def json_record(line: str, where: str) -> tuple[dict, object]:
    """One JSONL line as (object, id): the id is ``_id`` or ``id`` (integers as strings), None when absent.
    CorpusError, prefixed with ``where``, for a line that is not JSON or not an object."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise CorpusError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    rid = obj.get("_id", obj.get("id"))
    return obj, str(rid) if isinstance(rid, int) and not isinstance(rid, bool) else rid


def parse_record(line: str, where: str, seen: dict[str, int] | None, lineno: int) -> Record:
    """One corpus line as a checked :class:`Record`; CorpusError prefixed with ``where`` (``file:line``).
    ``seen``: ids met so far with their line numbers (a repeat is an error); None skips that check.

    Example:
        >>> parse_record('{"_id": "d1", "text": "Body"}', "corpus.jsonl:1", {}, 1).id
        'd1'
    """
    obj, doc_id = json_record(line, where)
    if doc_id is None:
        key = "_id" if "_id" in obj else "id" if "id" in obj else None
        raise CorpusError(f"{where}: the document id ('{key}') is null" if key else
                          f"{where}: no 'id' or '_id' field")
    if not isinstance(doc_id, str) or not doc_id.strip() or "\n" in doc_id or "\r" in doc_id:
        raise CorpusError(f"{where}: the id must be a non-empty single-line string, got {doc_id!r}")
    if "text" not in obj:
        raise CorpusError(f"{where}: document {doc_id!r} has no 'text' field")
    text, title = obj["text"], obj.get("title") or ""
    if not isinstance(text, str) or not isinstance(title, str):
        raise CorpusError(f"{where}: document {doc_id!r}: 'text' and 'title' must be strings")
    if not text.strip() and not title.strip():
        raise CorpusError(f"{where}: document {doc_id!r} has an empty text and title")
    try:
        metadata = check_metadata(obj.get("metadata"))
    except ValueError as e:
        raise CorpusError(f"{where}: document {doc_id!r}: {e}") from None
    if seen is not None:
        if doc_id in seen:
            raise CorpusError(f"{where}: repeats id {doc_id!r} (first seen on line {seen[doc_id]})")
        seen[doc_id] = lineno
    return Record(doc_id, title, text, metadata)


def jsonl_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a UTF-8 file with their line numbers; CorpusError names an unreadable file
    or the first line that is not UTF-8."""
    try:
        fh = open(path, encoding="utf-8")
    except OSError as e:
        raise CorpusError(f"{path}: cannot read ({e.strerror})") from None
    with fh:
        n = 0
        try:
            for n, line in enumerate(fh, start=1):
                if line.strip():
                    yield n, line
        except UnicodeDecodeError:
            raise CorpusError(f"{path}:{n + 1}: not valid UTF-8") from None


def scan_corpus(path: str | Path, *, skip_bad: bool = False, limit: int | None = None) -> Corpus:
    """Validate a whole corpus without keeping its documents (a build's first pass, before any model is
    loaded): a :class:`Corpus` whose ``records`` is empty, with the counts; raises as :func:`read_corpus`.

    Example:
        >>> scan_corpus("data/demo/corpus.jsonl").skipped     # doctest: +SKIP
        0
    """
    f = corpus_file(path)
    seen: dict[str, int] = {}
    n, skipped, examples, bad = 0, 0, [], set()
    for lineno, line in jsonl_lines(f):
        try:
            parse_record(line, f"{f}:{lineno}", seen, lineno)
            n += 1
        except CorpusError as e:
            if not skip_bad:
                raise
            skipped += 1
            bad.add(lineno)
            if len(examples) < 3:
                examples.append(str(e))
        if limit is not None and n >= limit:
            break
    if not n:
        why = f" ({counted(skipped, 'bad line')} skipped)" if skipped else ""
        raise CorpusError(f"{f}: no documents{why}")
    return Corpus(f, [], skipped, examples, documents=n, skipped_lines=frozenset(bad))


def iter_corpus(scan: Corpus, *, limit: int | None = None) -> Iterator[Record]:
    """The good documents of a corpus :func:`scan_corpus` checked (``scan``), one at a time, without the
    lines it skipped (ids are not checked again), up to ``limit``."""
    f = scan.path
    n = 0
    for lineno, line in jsonl_lines(f):
        if lineno in scan.skipped_lines:
            continue
        try:
            record = parse_record(line, f"{f}:{lineno}", None, lineno)
        except CorpusError:
            continue
        yield record
        n += 1
        if limit is not None and n >= limit:
            return


def read_corpus(path: str | Path, *, skip_bad: bool = False, limit: int | None = None) -> Corpus:
    """Read and validate a corpus.

    Every bad line (not JSON, no text, a repeated id, metadata that is not an object of strings, numbers,
    booleans, nulls and lists of strings, ...) raises :class:`CorpusError` naming the file and
    line number, or with ``skip_bad=True`` is skipped and counted.

    Example:
        >>> corpus = read_corpus("data/demo/corpus.jsonl")   # doctest: +SKIP
        >>> corpus.records[0].id                              # doctest: +SKIP
    """
    f = corpus_file(path)
    records: list[Record] = []
    seen: dict[str, int] = {}
    skipped, examples = 0, []
    for lineno, line in jsonl_lines(f):
        try:
            records.append(parse_record(line, f"{f}:{lineno}", seen, lineno))
        except CorpusError as e:
            if not skip_bad:
                raise
            skipped += 1
            if len(examples) < 3:
                examples.append(str(e))
        if limit is not None and len(records) >= limit:
            break
    if not records:
        why = f" ({counted(skipped, 'bad line')} skipped)" if skipped else ""
        raise CorpusError(f"{f}: no documents{why}")
    return Corpus(f, records, skipped, examples)
