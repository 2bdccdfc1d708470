"""lsr-engine: learned sparse retrieval with SPLADE encoders and a Numba inverted index.

Example:
    >>> from lsr import Searcher                                  # doctest: +SKIP
    >>> Searcher.load("my-index").search("sparse retrieval", k=3)  # doctest: +SKIP
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

from lsr.errors import CorpusError, IndexFormatError, LsrError, ModelNotFoundError
from lsr.types import Hit, SparseBatch

__version__ = "0.1.0"

_LAZY = {"SpladeEncoder": "lsr.encoders", "Searcher": "lsr.searcher", "index_corpus": "lsr.indexing",
         "Collection": "lsr.collection", "SearchParams": "lsr.params", "FusionSpec": "lsr.params",
         "BuildConfig": "lsr.params", "SearchResult": "lsr.searcher"}

__all__ = ["SparseBatch", "Hit", "SpladeEncoder", "Searcher", "index_corpus", "Collection", "SearchParams",
           "FusionSpec", "BuildConfig", "SearchResult", "LsrError", "CorpusError", "IndexFormatError",
           "ModelNotFoundError", "__version__"]


class _SourceTreeFinder(importlib.abc.MetaPathFinder):
    """Maps ``lsr.index`` and ``lsr.service`` to the checkout's ``index/`` and ``service/`` folders.

    An install maps them so (pyproject's package-dir). Run from the root of a source checkout, Python finds
    ``./lsr`` first, which holds neither: this finder, installed only in that case, makes the tree importable
    from its root exactly as it is once installed. Nothing else is mapped.
    """

    def __init__(self, root: Path) -> None:
        self.folders = {"lsr.index": root / "index", "lsr.service": root / "service"}

    def find_spec(self, name, path=None, target=None):
        folder = self.folders.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def _map_source_tree() -> None:
    here = Path(__file__).absolute().parent  # not resolve(): an editable install links its files
    root = here.parent
    if (here / "index").is_dir() or not (root / "pyproject.toml").is_file():
        return  # an installed lsr (its own lsr/index), or not a checkout
    if not ((root / "index" / "__init__.py").is_file() and (root / "service" / "__init__.py").is_file()):
        return
    if not any(isinstance(f, _SourceTreeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceTreeFinder(root))


_map_source_tree()


def __getattr__(name: str):
    # torch and transformers load only when an encoder or searcher is asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lsr' has no attribute {name!r}")
