"""DocStore: document titles and texts by external id, in one SQLite file (stdlib sqlite3)."""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from lsr.errors import IndexFormatError

_SCHEMA = "CREATE TABLE docs(row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, title TEXT, text TEXT)"
_MAX_VARS = 500  # ids per SELECT ... IN (...), well below every SQLite's variable limit


@dataclass(frozen=True, slots=True)
class Document:
    """One stored document."""

    id: str
    title: str
    text: str


def _checked(records: Iterable[tuple[str, str, str]]) -> Iterator[tuple[int, str, str, str]]:
    for row, rec in enumerate(records):
        try:
            doc_id, title, text = rec
        except (TypeError, ValueError):
            raise ValueError(f"record #{row} must be an (id, title, text) tuple, got {rec!r:.80}") from None
        if not isinstance(doc_id, str) or not doc_id:
            raise ValueError(f"record #{row}: id must be a non-empty string, got {doc_id!r}")
        title = "" if title is None else title
        text = "" if text is None else text
        if not isinstance(title, str) or not isinstance(text, str):
            raise ValueError(f"record #{row} ({doc_id!r}): title and text must be strings")
        yield row, doc_id, title, text


class DocStore:
    """Read-only, thread-safe lookup of documents by external id.

    Example:
        >>> DocStore.write(tmp_path / "docs.sqlite", [("d1", "Title", "Body text")])   # doctest: +SKIP
        1
        >>> with DocStore(tmp_path / "docs.sqlite") as store:                           # doctest: +SKIP
        ...     store.get("d1").title, store.get_many(["nope", "d1"])[0]
        ('Title', None)
    """

    @staticmethod
    def write(path: str | os.PathLike, records: Iterable[tuple[str, str, str]], *,
              batch_size: int = 1000) -> int:
        """Create a new store at ``path`` (replacing a file there) from (id, title, text); return the count.

        Rows are numbered 0, 1, ... in input order. A duplicate id raises ValueError and leaves no file.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        path = Path(path)
        if path.exists():
            path.unlink()
        conn = sqlite3.connect(path, isolation_level=None)
        n = 0
        try:
            conn.execute("PRAGMA journal_mode=OFF")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(_SCHEMA)
            conn.execute("BEGIN")
            it = _checked(records)
            while batch := list(islice(it, batch_size)):
                try:
                    conn.executemany("INSERT INTO docs(row, id, title, text) VALUES (?, ?, ?, ?)", batch)
                except sqlite3.IntegrityError:
                    # executemany stops at the failing record: the rows stored so far tell which one it is
                    done = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
                    bad = batch[done - n][1]
                    raise ValueError(f"duplicate document id {bad!r} (record #{done})") from None
                n += len(batch)
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            path.unlink(missing_ok=True)
            raise
        conn.close()
        return n

    def __init__(self, path: str | os.PathLike) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            raise IndexFormatError(f"document store {self._path} does not exist")
        uri = f"{self._path.resolve().as_uri()}?mode=ro&immutable=1"
        try:
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        except sqlite3.Error as e:
            raise IndexFormatError(f"cannot open document store {self._path}: {e}") from None
        self._lock = threading.Lock()
        try:
            self._len = int(self._conn.execute("SELECT count(*) FROM docs").fetchone()[0])
            self._conn.execute("SELECT row, id, title, text FROM docs LIMIT 0").fetchall()
        except (sqlite3.Error, UnicodeDecodeError) as e:  # sqlite's message may quote damaged text
            self._conn.close()
            raise IndexFormatError(f"{self._path} is not an lsr document store: {e}") from None

    @property
    def path(self) -> Path:
        return self._path

    def __len__(self) -> int:
        return self._len

    def get(self, doc_id: str) -> Document | None:
        """The document with external id ``doc_id``, or None."""
        return self.get_many([doc_id])[0]

    def get_many(self, ids: Sequence[str]) -> list[Document | None]:
        """Documents for ``ids`` in the same order (None where an id is unknown)."""
        ids = list(ids)
        wanted = list(dict.fromkeys(ids))
        found: dict[str, Document] = {}
        with self._lock:
            try:
                for i in range(0, len(wanted), _MAX_VARS):
                    part = wanted[i : i + _MAX_VARS]
                    sql = f"SELECT id, title, text FROM docs WHERE id IN ({','.join('?' * len(part))})"
                    for doc_id, title, text in self._conn.execute(sql, part):
                        if not all(isinstance(x, (str, type(None))) for x in (doc_id, title, text)):
                            raise IndexFormatError(f"{self._path} is corrupted: document {doc_id!r} holds a "
                                                   "value that is not text")
                        found[doc_id] = Document(doc_id, title or "", text or "")
            except (sqlite3.Error, UnicodeDecodeError) as e:  # damage is only found when read ("immutable")
                raise IndexFormatError(f"{self._path} is corrupted: {e}") from None
        return [found.get(i) for i in ids]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> "DocStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DocStore({str(self._path)!r}, n_docs={self._len})"
