"""On-disk plumbing of an index folder: atomic writes, manifest.json, .npy arrays.

An index folder is complete exactly when it holds ``manifest.json``: the manifest is written last and lists
every other file with its size and sha256, and the folder itself only appears at its final path through a
rename (:func:`atomic_folder`), so readers never see a half-written index.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lsr.errors import IndexFormatError

FORMAT_VERSION = 2
MANIFEST = "manifest.json"


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


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a folder atomically: yield a sibling temp folder, rename it to ``path`` on success.

    On an exception the temp folder is removed and an existing ``path`` is left untouched. With
    ``overwrite=True`` an existing ``path`` is renamed aside, replaced, then deleted.

    Example:
        >>> with atomic_folder(tmp_path / "idx") as tmp:   # doctest: +SKIP
        ...     (tmp / "data.txt").write_text("hello")
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{path.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        if os.path.lexists(path):
            if not overwrite:
                raise FileExistsError(f"{path} appeared while it was being written; nothing was replaced")
            old = parent / f"{path.name}.old-{secrets.token_hex(6)}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)  # put the previous index back
                raise
            _fsync_dir(parent)
            _remove(old)
        else:
            os.rename(tmp, path)
            _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _listed_files(folder: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(MANIFEST):
            files[p.relative_to(folder).as_posix()] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return files


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` (last!) with format version, provenance and a size+sha256 list of all files.

    Returns the manifest as written.
    """
    folder = Path(folder)
    out = dict(manifest)
    out.update(
        format_version=FORMAT_VERSION,
        created_by=f"lsr-engine {_version()}",
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        files=_listed_files(folder),
    )
    text = json.dumps(out, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    tmp = folder / f"{MANIFEST}.tmp-{secrets.token_hex(4)}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    return out


def read_manifest(path: str | os.PathLike, *, verify: bool = False) -> dict[str, Any]:
    """Read and check an index folder's manifest; raise IndexFormatError naming the problem and the path.

    Checks that every listed file exists with the listed size; ``verify=True`` also checks sha256 sums.
    """
    path = Path(path)
    if not path.exists():
        raise IndexFormatError(f"index folder {path} does not exist")
    if not path.is_dir():
        raise IndexFormatError(f"{path} is not a folder (an index is a folder holding {MANIFEST})")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexFormatError(f"{path} has no {MANIFEST}: not an lsr index or an incomplete one")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{mpath} is unreadable: {e}") from None
    if not isinstance(manifest, dict):
        raise IndexFormatError(f"{mpath} is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has index format version {version!r}; this lsr-engine ({_version()}) reads version "
            f"{FORMAT_VERSION} only: rebuild the index"
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
        except (TypeError, KeyError, ValueError):
            raise IndexFormatError(f"{mpath}: bad entry for {rel}") from None
        size = fpath.stat().st_size
        if size != expected:
            raise IndexFormatError(f"{path} is corrupted: {rel} has {size} bytes, the manifest says "
                                   f"{expected}")
        if verify and sha256_file(fpath) != info.get("sha256"):
            raise IndexFormatError(f"{path} is corrupted: {rel} does not match its sha256 in the manifest")
    return manifest


def save_array(folder: str | os.PathLike, relpath: str, arr: np.ndarray) -> Path:
    """Save ``arr`` as ``folder/relpath`` (.npy, no pickles), creating sub-folders."""
    out = Path(folder) / relpath
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.save(f, np.ascontiguousarray(arr), allow_pickle=False)
    return out


def load_array(folder: str | os.PathLike, relpath: str, mmap: bool = True) -> np.ndarray:
    """Load ``folder/relpath`` (.npy), memory-mapped read-only by default; IndexFormatError if unreadable."""
    p = Path(folder) / relpath
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFormatError(f"{Path(folder)} is incomplete: {relpath} is missing") from None
    except (OSError, ValueError, EOFError) as e:
        raise IndexFormatError(f"{p} is not a readable .npy array: {e}") from None
