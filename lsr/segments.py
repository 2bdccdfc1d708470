"""Segments and commit points: the files of a living collection (no retriever knowledge here).

A collection folder that has taken writes is a list of immutable segments plus deletion bitmaps, named by a
commit point (Lucene's ``segments_N``; ``SegmentInfos``)::

    DIR/manifest.json              the first build's manifest: segment "." (read only through a commit point
                                   once there is one)
    DIR/commit-<generation>.json   a commit point: the live segments, each one's deletion bitmap, and the
                                   collection's settings (retrievers, fusion, metadata schema, statistics)
    DIR/segments/<name>/           a segment: the layout of a built folder (manifest.json, ids.txt,
                                   docs.sqlite, sparse/, dense/, bm25/, metadata/)
    DIR/deletes/<name>-<gen>.npy   a segment's deleted rows (np.packbits of a bool per row), a new name
                                   per commit
    DIR/write.lock                 held (flock) by the one writer

A commit point is written to a temporary name, fsynced and renamed (the rename is the commit); the newest
valid one wins. A reader holds a shared flock on the commit point it opened (:class:`ReaderLease`); the writer
removes an older commit point only when it can take that lock exclusively, and removes the files no remaining
commit point names (:func:`collect_garbage`).

Example:
    >>> from lsr.segments import newest_commit
    >>> newest_commit("my-index")          # doctest: +SKIP
    (7, {...})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from lsr.errors import IndexFormatError, LsrError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

COMMIT_RE = re.compile(r"^commit-(\d{1,12})\.json$")
LOCK_FILE = "write.lock"
SEGMENTS_DIR = "segments"
DELETES_DIR = "deletes"
BASE = "."
_TMP_RE = re.compile(r"\.tmp-[0-9a-f]{8,12}$")


class WriterLockedError(LsrError):
    """Another writer (process or open collection) holds the collection's write lock."""


class ConflictError(LsrError):
    """The collection changed under a write that started from an older state."""


@dataclass(frozen=True)
class SegmentRef:
    """One segment in a commit point: its folder, document count, deleted count and bitmap file.

    Example:
        >>> SegmentRef(name="s000002", dir="segments/s000002", documents=100).live
        100
    """

    name: str
    dir: str
    documents: int
    deleted: int = 0
    deletes: str | None = None

    @property
    def live(self) -> int:
        return self.documents - self.deleted

    def to_json(self) -> dict:
        return {"name": self.name, "dir": self.dir, "documents": self.documents, "deleted": self.deleted,
                "deletes": self.deletes}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "SegmentRef":
        try:
            name, folder, docs = obj["name"], obj["dir"], obj["documents"]
            deleted, deletes = obj.get("deleted", 0), obj.get("deletes")
            ok = isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name) is not None
            ok = ok and (folder == BASE or (isinstance(folder, str) and re.fullmatch(
                rf"{SEGMENTS_DIR}/[A-Za-z0-9_-]{{1,64}}", folder) is not None))
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in (docs, deleted))
            ok = ok and 0 <= deleted <= docs < 2**40
            ok = ok and (deletes is None or (isinstance(deletes, str) and re.fullmatch(
                rf"{DELETES_DIR}/[A-Za-z0-9_.-]{{1,80}}\.npy", deletes) is not None))
        except (KeyError, TypeError):
            ok = False
        if not ok:
            raise IndexFormatError(f"{where}: bad segment entry {obj!r}")
        return cls(name=name, dir=folder, documents=docs, deleted=deleted, deletes=deletes)


def commit_name(generation: int) -> str:
    return f"commit-{int(generation)}.json"


def commit_generations(folder: str | os.PathLike) -> list[int]:
    """The generations of the commit points in ``folder``, newest first."""
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    gens = [int(m.group(1)) for n in names if (m := COMMIT_RE.match(n))]
    return sorted(gens, reverse=True)


def _checksum(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def read_commit(folder: str | os.PathLike, generation: int) -> dict:
    """The commit point of ``generation`` (checked: JSON object, checksum, generation), else
    IndexFormatError."""
    path = Path(folder) / commit_name(generation)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path} is unreadable: {e}") from None
    if not isinstance(obj, dict) or obj.get("kind") != "commit":
        raise IndexFormatError(f"{path} is not a commit point")
    body = {k: v for k, v in obj.items() if k != "checksum"}
    if obj.get("checksum") != _checksum(body):
        raise IndexFormatError(f"{path} is damaged (checksum mismatch)")
    if obj.get("generation") != generation:
        raise IndexFormatError(f"{path} names generation {obj.get('generation')!r}")
    return obj


def newest_commit(folder: str | os.PathLike) -> tuple[int, dict] | None:
    """(generation, commit point) of the newest valid commit point, or None when the folder has none (a
    collection that never took a write). Damaged newer ones are skipped (they were never committed: the
    rename is the commit); IndexFormatError when there are commit points but none is valid."""
    gens = commit_generations(folder)
    errors = []
    for g in gens:
        try:
            return g, read_commit(folder, g)
        except IndexFormatError as e:
            errors.append(str(e))
    if gens:
        raise IndexFormatError(f"{folder}: no valid commit point ({errors[0]})")
    return None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path``: temporary name, fsync, rename, fsync of the folder."""
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_commit(folder: str | os.PathLike, generation: int, segments: Iterable[SegmentRef],
                 collection: dict) -> dict:
    """Commit: write ``commit-<generation>.json`` (segments + the collection's manifest body) atomically.
    Refuses to replace an existing commit point of that generation (ConflictError)."""
    folder = Path(folder)
    if (folder / commit_name(generation)).exists():
        raise ConflictError(f"{folder}: commit {generation} already exists (another writer committed)")
    body = {"kind": "commit", "format_version": 1, "generation": int(generation),
            "segments": [s.to_json() for s in segments], "collection": collection}
    obj = {**body, "checksum": _checksum(body)}
    write_json_atomic(folder / commit_name(generation), obj)
    return obj


# -- deletions ------------------------------------------------------------------------------------------
def write_deletes(folder: Path, rel: str, deleted: np.ndarray) -> None:
    """Store a segment's deleted rows (bool per row) as ``rel`` (packed bits; temporary name, rename)."""
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    with open(tmp, "wb") as f:
        np.save(f, np.packbits(np.asarray(deleted, bool)), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_deletes(folder: Path, ref: SegmentRef) -> np.ndarray | None:
    """A segment's deleted rows (bool per row) or None; checked against the commit point's count."""
    if ref.deletes is None:
        if ref.deleted:
            raise IndexFormatError(f"{folder}: segment {ref.name} has {ref.deleted} deletions but no bitmap")
        return None
    path = folder / ref.deletes
    try:
        packed = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise IndexFormatError(f"{path} is unreadable: {e}") from None
    if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (ref.documents + 7) // 8:
        raise IndexFormatError(f"{path} is corrupted: expected {(ref.documents + 7) // 8} packed bytes")
    deleted = np.unpackbits(packed, count=ref.documents).astype(bool)
    if int(deleted.sum()) != ref.deleted or np.any(np.unpackbits(packed)[ref.documents:]):
        raise IndexFormatError(f"{path} is corrupted: {int(deleted.sum())} deleted rows, the commit point "
                               f"says {ref.deleted}")
    return deleted


# -- locks ----------------------------------------------------------------------------------------------
class WriteLock:
    """The collection's one-writer lock (``write.lock``, flock: released when the holder dies).

    Example:
        >>> with WriteLock.acquire("my-index"):      # doctest: +SKIP
        ...     pass
    """

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path

    @classmethod
    def acquire(cls, folder: str | os.PathLike) -> "WriteLock":
        path = Path(folder) / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise WriterLockedError(
                    f"{folder} is being written by another writer (process {holder}); one writer at a time: "
                    f"wait for it to finish (commit or close) and retry") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "WriteLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class ReaderLease:
    """A shared flock on the commit point a reader opened: the writer keeps that commit point and its files
    while any reader holds one. Released by :meth:`release` or when the object is collected."""

    def __init__(self, folder: Path, generation: int) -> None:
        self.generation = generation
        self.fd = -1
        path = folder / commit_name(generation)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        if fcntl is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_SH)
        self.fd = fd
        self._finalizer = weakref.finalize(self, _close_fd, fd)

    @property
    def held(self) -> bool:
        return self.fd >= 0

    def release(self) -> None:
        if self.fd >= 0:
            self._finalizer()
            self.fd = -1


def _close_fd(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _unheld(path: Path) -> bool:
    """Whether no reader holds a lease on the commit point ``path`` (takes and drops an exclusive lock)."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


# -- garbage ------------------------------------------------------------------------------------------------
def referenced(commit: dict) -> tuple[set[str], set[str]]:
    """(segment folders, deletion files) a commit point names (relative paths)."""
    segs = {s["dir"] for s in commit.get("segments", [])}
    dels = {s["deletes"] for s in commit.get("segments", []) if s.get("deletes")}
    return segs, dels


def collect_garbage(folder: str | os.PathLike, *, base_files: Iterable[str] = (),
                    keep: Iterable[str] = ()) -> list[str]:
    """Remove (the writer only, under its lock) older commit points no reader holds, then every segment
    folder, deletion file and temporary file that no remaining commit point names. ``base_files``: the
    first build's files at the root (segment "."), removed once no commit point names "."; ``keep``: names
    of segments being written (a merge's, not committed yet), left with their temporary folders. Returns
    what was removed (relative paths)."""
    folder = Path(folder)
    building = set(keep)
    gens = commit_generations(folder)
    removed: list[str] = []
    keep: list[dict] = []
    for i, g in enumerate(gens):
        path = folder / commit_name(g)
        try:
            obj = read_commit(folder, g)
        except IndexFormatError:
            obj = None
        if i == 0 or (obj is not None and not _unheld(path)):
            if obj is not None:
                keep.append(obj)
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path.name)
    if not keep:
        return removed
    segs: set[str] = set()
    dels: set[str] = set()
    for obj in keep:
        s, d = referenced(obj)
        segs |= s
        dels |= d
    for sub, names in ((SEGMENTS_DIR, segs), (DELETES_DIR, dels)):
        base = folder / sub
        if not base.is_dir():
            continue
        for p in base.iterdir():
            rel = f"{sub}/{p.name}"
            if sub == SEGMENTS_DIR and any(p.name == k or p.name.startswith(f"{k}.") for k in building):
                continue
            if rel not in names:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
                removed.append(rel)
    for p in folder.iterdir():  # commit points and manifests a killed writer left half-written
        if _TMP_RE.search(p.name) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p.name)
    if BASE not in segs:
        for rel in base_files:
            p = folder / rel
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(rel)
            elif p.exists():
                p.unlink()
                removed.append(rel)
    return removed
