"""On-disk plumbing of an index folder: atomic writes, manifest.json, .npy arrays.

An index folder is complete exactly when it holds ``manifest.json``: the manifest is written last and lists
every other file with its size and sha256, and the folder itself only appears at its final path through a
rename (:func:`atomic_folder`), so readers never see a half-written index.

Files on disk are the user's: an existing path is only ever replaced when it is recognisably ours
(:func:`check_target`), and the scratch folders a killed build leaves behind (``NAME.tmp-<hex>``,
``NAME.old-<hex>``) are refused by :func:`read_manifest` and removed by the next build of ``NAME`` once no
live process holds their lock (:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import warnings
from datetime import datetime, timezone
from pathlib import Path
from tokenize import TokenError
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from lsr.errors import IndexFormatError, LsrError
from lsr.util import sha256_file

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, so stale scratch folders are kept
    fcntl = None

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
#: Present in a temporary build folder until the moment it is renamed into place.
UNFINISHED_MARKER = ".lsr-unfinished"
#: What a living collection adds to a built folder (lsr.segments): lock, commit points, segments, deletions.
_LIVING = re.compile(r"^(write\.lock|commit-\d{1,12}\.json(\.tmp-[0-9a-f]{8})?|(segments|deletes)(/.*)?)$")
#: The scratch siblings of a target NAME: ``NAME.tmp-<12 hex>`` (being written), ``NAME.old-<12 hex>``
#: (the replaced folder, set aside during the swap).
_SCRATCH = re.compile(r"\.(tmp|old)-[0-9a-f]{12}$")
_MANIFEST_TMP = re.compile(r"(^|/)manifest\.json\.tmp-[0-9a-f]{8}$")


class UnsafeTargetError(LsrError):
    """Refusal to write at a path that is not safely replaceable (a user's folder, a file, the corpus, ...).

    Example:
        >>> check_target(".", overwrite=True)   # doctest: +SKIP
        Traceback (most recent call last):
        UnsafeTargetError: refusing to write at .: it is the current folder ...
    """


def _version() -> str:
    try:
        from lsr import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - lsr is always importable when lsr.index is
        return "unknown"


def _fsync_dir(path: Path) -> None:
    """Best effort: make a rename in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _lock(folder: Path) -> int | None:
    """A descriptor holding an exclusive flock on ``folder`` (released by closing it, or by the death of the
    process), or None when another open description holds it or the folder is gone."""
    if fcntl is None:  # pragma: no cover
        return None
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _close(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def _new_scratch(parent: Path, name: str, kind: str) -> tuple[Path, int | None]:
    """Create ``parent/name.<kind>-<hex>`` and lock it (retrying if a concurrent cleaner took it first)."""
    for _ in range(100):
        path = parent / f"{name}.{kind}-{secrets.token_hex(6)}"
        path.mkdir()
        fd = _lock(path)
        if fcntl is None:  # pragma: no cover
            return path, None
        try:
            if fd is not None and os.stat(path).st_ino == os.fstat(fd).st_ino:
                return path, fd
        except OSError:
            pass
        _close(fd)  # another build's cleanup removed it between mkdir and lock: take another name
    raise OSError(f"cannot create a temporary folder next to {parent / name}")  # pragma: no cover


def is_scratch(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a build's temporary folder (by its name ``NAME.tmp-<hex>`` / ``NAME.old-<hex>``,
    or by the marker inside it), never a loadable index.

    Example:
        >>> is_scratch("my-index.tmp-0123456789ab")
        True
    """
    p = Path(os.path.abspath(path))
    return bool(_SCRATCH.search(p.name)) or (p / UNFINISHED_MARKER).exists()


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the scratch folders of target ``path`` left by killed builds; return those removed.

    A scratch folder is stale when no process holds its lock (a build holds it from creation to the end).
    ``NAME.old-<hex>`` is a previous index set aside by a build killed during the swap: when ``path`` itself
    is missing, it is renamed back to ``path`` rather than deleted.

    Example:
        >>> remove_stale(tmp_path / "my-index")   # doctest: +SKIP
        [PosixPath('.../my-index.tmp-3f2a9c0d1b7e')]
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir() or fcntl is None:
        return []
    pattern = re.compile(re.escape(path.name) + _SCRATCH.pattern)
    removed = []
    for entry in sorted(parent.iterdir()):
        kind = pattern.fullmatch(entry.name)
        if kind is None or entry.is_symlink() or not entry.is_dir():
            continue
        fd = _lock(entry)
        if fd is None:  # a live build holds it
            continue
        try:
            if kind.group(1) == "old" and not os.path.lexists(path) and (entry / MANIFEST).is_file():
                os.rename(entry, path)  # a build died between its two renames: put the previous index back
                _fsync_dir(parent)
            else:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        finally:
            _close(fd)
    return removed


def _raw_manifest(folder: Path) -> dict | None:
    """``folder/manifest.json`` as a dict, or None when it is missing or unreadable: for the callers that
    tolerate that (what may be replaced, what a rewrite keeps, which sha256 to check); :func:`read_manifest`
    is the checked reader."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _is_inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _unreplaceable(path: Path) -> str | None:
    """Why the existing ``path`` must not be replaced, or None when it is an lsr folder with nothing else."""
    if path.is_symlink():
        return "is a symbolic link"
    if not path.is_dir():
        return "is a file, not an index folder"
    if os.path.ismount(path):
        return "is a mount point"
    entries = [Path(root, n) for root, dirs, files in os.walk(path) for n in files + dirs
               if n in files or Path(root, n).is_symlink()]
    if not entries:
        return None  # an empty folder: nothing to lose
    if not (path / MANIFEST).is_file():
        return f"is a folder that is not an lsr-engine index (it has no {MANIFEST})"
    manifest = _raw_manifest(path)
    if manifest is None or not str(manifest.get("created_by", "")).startswith("lsr-engine") \
            or not isinstance(manifest.get("files"), dict):
        return f"has a {MANIFEST} that is not an lsr-engine manifest"
    listed = set(manifest["files"])
    extra = sorted(rel for rel in (e.relative_to(path).as_posix() for e in entries)
                   if rel not in listed and rel != MANIFEST and not _MANIFEST_TMP.search(rel)
                   and not _LIVING.match(rel))
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        return f"holds {extra[0]}{more}, which its {MANIFEST} does not list"
    return None


def check_target(path: str | os.PathLike, *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> None:
    """Raise unless a folder may be written at ``path``: the one place that decides what may be replaced.

    Never the current folder or one holding it, never one of ``inputs`` (the corpus being read) or a folder
    holding one; an existing ``path`` is replaced only when it is an empty folder or an lsr-engine folder (its
    ``manifest.json`` is ours and lists every file in it), and only with ``overwrite=True`` (an empty folder
    needs no overwrite). Raises :class:`UnsafeTargetError`, or FileExistsError when ``overwrite`` is missing.

    Example:
        >>> check_target(tmp_path / "new-index")   # doctest: +SKIP
    """
    path = Path(path)
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if _is_inside(cwd, real):
        what = "the current folder" if real == cwd else "a folder holding the current folder"
        raise UnsafeTargetError(f"refusing to write at {path}: it is {what}; give the path of a new folder, "
                                f"e.g. {path / 'my-index'}")
    for src in inputs:  # inside an input is fine (an index in its BEIR folder): nothing read is lost
        s = Path(src).resolve()
        if _is_inside(s, real):
            relation = "the same as" if real == s else "a folder holding"
            raise UnsafeTargetError(f"refusing to write at {path}: it is {relation} the input {src} being "
                                    "read; write the index to a folder outside it")
    if not os.path.lexists(path):
        return
    reason = _unreplaceable(path)
    if reason is not None:
        raise UnsafeTargetError(f"refusing to replace {path}: it {reason}; nothing was changed (move it away "
                                "or choose another folder)")
    if not overwrite and any(path.iterdir()):
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False,
                  inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Write a folder atomically: yield a sibling temp folder, rename it to ``path`` on success.

    :func:`check_target` decides first (and again just before the swap) whether ``path`` may be written;
    ``inputs`` are paths being read that must not be written over. Stale scratch folders of ``path`` are
    removed first (:func:`remove_stale`). The temp folder is locked and marked unfinished for its whole life,
    so a killed build leaves nothing loadable. On an exception it is removed and an existing ``path`` is left
    untouched. With ``overwrite=True`` an existing ``path`` is renamed aside, replaced, then deleted.

    Example:
        >>> with atomic_folder(tmp_path / "idx") as tmp:   # doctest: +SKIP
        ...     (tmp / "data.txt").write_text("hello")
    """
    path = Path(path)
    inputs = list(inputs)
    remove_stale(path)
    check_target(path, overwrite=overwrite, inputs=inputs)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp, lock = _new_scratch(parent, path.name, "tmp")
    old_lock = None
    try:
        try:
            (tmp / UNFINISHED_MARKER).write_text("a build is writing this folder (or was killed doing so)\n")
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        try:
            check_target(path, overwrite=overwrite, inputs=inputs)  # it may have changed meanwhile
            (tmp / UNFINISHED_MARKER).unlink()
            if os.path.lexists(path):
                old_lock = _lock(path)  # keep other builds' cleanup off it while it is set aside
                old = parent / f"{path.name}.old-{secrets.token_hex(6)}"
                try:
                    os.rename(path, old)
                    os.rename(tmp, path)
                except BaseException:  # an error or a signal between the renames: put the previous one back
                    if os.path.lexists(old) and not os.path.lexists(path):
                        os.rename(old, path)
                    raise
                _fsync_dir(parent)
                _remove(old)
            else:
                os.rename(tmp, path)
                _fsync_dir(parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        _close(old_lock)
        _close(lock)


def _listed_files(folder: Path, only: set[str] | None = None) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and not rel.startswith(MANIFEST) and rel != UNFINISHED_MARKER \
                and (only is None or rel in only):
            files[rel] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return files


def _finished_listing(folder: Path) -> set[str] | None:
    """The files the manifest of a finished folder lists, or None for a folder being built (or new)."""
    manifest = None if (folder / UNFINISHED_MARKER).exists() else _raw_manifest(folder)
    files = manifest.get("files") if manifest is not None else None
    return set(files) if isinstance(files, dict) else None


def _updated_listing(listed: set[str] | None, add: Sequence[str], drop: Sequence[str]) -> set[str] | None:
    if listed is None:
        return None
    return (listed | set(add)) - set(drop)


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any], *,
                   version: int = FORMAT_VERSION, add: Sequence[str] = (),
                   drop: Sequence[str] = (), only: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` (last!) with format version, provenance and a size+sha256 list of all files.

    In a folder being built (or without a manifest yet) every file is listed. Rewriting the manifest of a
    finished folder (a metadata update, e.g. ``lsr tune-fusion``) keeps its file list: a file someone put
    there since is not adopted, so it is never deleted by a later overwrite; ``add`` names the files the
    update wrote (adopted), ``drop`` those it no longer uses; ``only``: list exactly these files (a folder
    whose other files belong to something else: a living collection's segments). Returns the manifest as
    written.

    Example:
        >>> write_manifest(folder, {"kind": "index", "n_docs": 3})["files"]   # doctest: +SKIP
        {'docids.txt': {'bytes': 6, 'sha256': '...'}}
    """
    folder = Path(folder)
    out = dict(manifest)
    out.update(
        format_version=version,
        created_by=f"lsr-engine {_version()}",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        files=_listed_files(folder, set(only) if only is not None else
                            _updated_listing(_finished_listing(folder), add, drop)),
    )
    text = json.dumps(out, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    tmp = folder / f"{MANIFEST}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return out


def read_manifest(path: str | os.PathLike, *, verify: bool = False,
                  versions: tuple[int, ...] = (FORMAT_VERSION,)) -> dict[str, Any]:
    """Read and check an index folder's manifest; raise IndexFormatError naming the problem and the path.

    ``versions``: the format versions the caller reads (the array layer: :data:`FORMAT_VERSION`; the
    collection manifest of :mod:`lsr.manifest`: its own).
    Checks that every listed file exists with the listed size; ``verify=True`` also checks sha256 sums.
    """
    path = Path(path)
    if not path.exists():
        raise IndexFormatError(f"index folder {path} does not exist")
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not a folder (an index is a folder holding {MANIFEST})")
    if is_scratch(path):
        raise IndexFormatError(f"{path} is the temporary folder of an index build that was interrupted or is "
                               "still running, not an index: open the built index (the next build of the "
                               "same index removes this folder)")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexFormatError(f"{path} has no {MANIFEST}: not an lsr index or an incomplete one")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{mpath} is unreadable: {e}") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{mpath} is not a JSON object")
    if manifest.get("kind", "index") != "index":
        raise IndexFormatError(f"{path} is not an index: lsr-engine wrote it as kind {manifest['kind']!r}")
    version = manifest.get("format_version")
    if version not in versions:
        raise IndexFormatError(
            f"{path} has index format version {version!r}; this lsr-engine ({_version()}) reads version "
            f"{' and '.join(map(str, versions))} only: rebuild the index"
        )
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise IndexFormatError(f"{mpath}: 'files' must be an object")
    for rel, info in files.items():
        rel_path = Path(rel)
        if rel_path.is_absolute() or ".." in rel_path.parts:
            raise IndexFormatError(f"{mpath} lists a file outside the index: {rel!r}")
        fpath = path / rel_path
        if not fpath.is_file():
            raise IndexFormatError(f"{path} is incomplete: {rel} is missing")
        try:
            expected = int(info["bytes"])
        except (TypeError, KeyError, ValueError, OverflowError):  # OverflowError: Infinity
            raise IndexFormatError(f"{mpath}: bad entry for {rel}") from None
        size = fpath.stat().st_size
        if size != expected:
            raise IndexFormatError(f"{path} is corrupted: {rel} has {size} bytes, the manifest says "
                                   f"{expected}")
        if verify:
            _check_sha256(path, rel, info)
    return manifest


def _check_sha256(folder: Path, rel: str, info: Any) -> None:
    if sha256_file(folder / rel) != (info.get("sha256") if isinstance(info, dict) else None):
        raise IndexFormatError(f"{folder / rel} is corrupted: it does not match its sha256 in "
                               f"{folder / MANIFEST}")


def verify_listed(folder: str | os.PathLike, relpaths: Iterable[str]) -> None:
    """Check the files ``relpaths`` of ``folder`` against the sha256 its manifest lists for them (files it
    does not list, or a folder without a manifest, are not checked); IndexFormatError naming the first that
    differs. For files a library reads unchecked (faiss), before it reads them.

    Example:
        >>> verify_listed(index_folder, ["dense/faiss.index"])   # doctest: +SKIP
    """
    folder = Path(folder)
    manifest = _raw_manifest(folder)
    files = manifest.get("files") if manifest is not None else None
    for rel in relpaths if isinstance(files, dict) else ():
        if isinstance(files.get(rel), dict) and "sha256" in files[rel] and (folder / rel).is_file():
            _check_sha256(folder, rel, files[rel])


def save_array(folder: str | os.PathLike, relpath: str, arr: np.ndarray) -> Path:
    """Save ``arr`` as ``folder/relpath`` (.npy, no pickles), creating sub-folders."""
    out = Path(folder) / relpath
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
    return out


def load_array(folder: str | os.PathLike, relpath: str, mmap: bool = True) -> np.ndarray:
    """Load ``folder/relpath`` (.npy), memory-mapped read-only by default; IndexFormatError if unreadable.

    A damaged header is refused whatever numpy raises for it (its header parser also lets TokenError,
    SyntaxError, TypeError and OverflowError out, and warns about "Python 2" headers it repairs).
    """
    p = Path(folder) / relpath
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFormatError(f"{Path(folder)} is incomplete: {relpath} is missing") from None
    except (OSError, ValueError, EOFError, TokenError, SyntaxError, TypeError, OverflowError,
            MemoryError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IndexFormatError(f"{p} is not a readable .npy array: {first}") from None


def read_id_list(path: str | os.PathLike, count: int) -> list[str]:
    """The ids of an id list file (one per line, utf-8): exactly ``count`` of them, else IndexFormatError.

    Example:
        >>> read_id_list(folder / "ids.txt", 3)   # doctest: +SKIP
        ['d1', 'd2', 'd3']
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise IndexFormatError(f"{path} is unreadable: {e}") from None
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != count:
        raise IndexFormatError(f"{path} has {len(lines)} ids, the manifest says {count}")
    return lines


def check_unique_ids(ids: Sequence[str], path: str | os.PathLike) -> None:
    """IndexFormatError naming the first empty or repeated id of the list read from ``path``."""
    if len(set(ids)) == len(ids) and "" not in ids:
        return
    seen: set[str] = set()
    for i, x in enumerate(ids):
        if not x or x in seen:
            raise IndexFormatError(f"{path} is corrupted: line {i + 1} holds "
                                   f"{'an empty' if not x else 'a duplicate'} id {x!r}")
        seen.add(x)
