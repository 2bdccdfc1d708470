"""The storage and search layer: an inverted index over sparse vectors and a document store.

Example:
    >>> from lsr.index import SparseIndex, DocStore    # doctest: +SKIP
    >>> index = SparseIndex.load("my-index")           # doctest: +SKIP
"""

from lsr.index.docstore import DocStore, Document
from lsr.index.sparse import SparseIndex
from lsr.index.storage import FORMAT_VERSION

__all__ = ["SparseIndex", "DocStore", "Document", "FORMAT_VERSION"]
