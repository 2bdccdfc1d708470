"""lsr-engine: learned sparse retrieval with SPLADE encoders and a Numba inverted index.

Example:
    >>> from lsr import Searcher                                  # doctest: +SKIP
    >>> Searcher.load("my-index").search("sparse retrieval", k=3)  # doctest: +SKIP
"""

from lsr.errors import CorpusError, IndexFormatError, LsrError, ModelNotFoundError
from lsr.types import Hit, SparseBatch

__version__ = "0.1.0"

_LAZY = {"SpladeEncoder": "lsr.encoders", "Searcher": "lsr.searcher", "index_corpus": "lsr.indexing"}

__all__ = ["SparseBatch", "Hit", "SpladeEncoder", "Searcher", "index_corpus", "LsrError", "CorpusError",
           "IndexFormatError", "ModelNotFoundError", "__version__"]


def __getattr__(name: str):
    # torch and transformers load only when an encoder or searcher is asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")
