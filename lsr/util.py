"""Small helpers shared across lsr's layers (no project imports: any module may use them).

Example:
    >>> from lsr.util import sha256_file
    >>> len(sha256_file(__file__))
    64
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks.

    Example:
        >>> sha256_file("corpus.jsonl")   # doctest: +SKIP
        '9f86d081884c7d65...'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
