"""From a corpus file to an index folder (``lsr index``): :func:`index_corpus`, a keyword front for
:meth:`lsr.collection.Collection.build` with a :class:`lsr.params.BuildConfig`.

Example:
    >>> from lsr.indexing import index_corpus
    >>> index_corpus("data.jsonl", "my-index").documents   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lsr.collection import Collection, IndexSummary, encode_corpus, permute_rows
from lsr.params import BuildConfig

__all__ = ["IndexSummary", "encode_corpus", "index_corpus", "permute_rows"]

#: the keywords of index_corpus that set a BuildConfig field (the older spelling of ``config=``)
_CONFIG_KEYWORDS = {f.name for f in dataclasses.fields(BuildConfig)} | {"bm25_analyzer", "dense_kind"}


def index_corpus(corpus: str | Path, out: str | Path, *, config: BuildConfig | None = None,
                 encoder: Any = None,
                 dense_encoder: Any = None, device: str = "auto", skip_bad: bool = False,
                 overwrite: bool = False, limit: int | None = None, show_progress: bool = True,
                 corpus_name: str | None = None, vectors: Any = None, segment_docs: int | None = None,
                 merge: bool = True, **settings: Any) -> IndexSummary:
    """Index a BEIR folder or JSONL file into the folder ``out`` (written to a temporary folder, then
    renamed). ``config``: what to build (:class:`lsr.params.BuildConfig`); its fields may also be given
    as keywords (``model=``, ``dense=None``, ``bm25=False``, ``block_size=``, ...), which override it.
    ``segment_docs`` / ``merge``: the bounded-memory build (:class:`lsr.bulk.BulkBuilder`).

    Example:
        >>> index_corpus("data.jsonl", "my-index", dense=None).documents   # doctest: +SKIP
    """
    unknown = set(settings) - _CONFIG_KEYWORDS
    if unknown:
        raise TypeError(f"index_corpus() got unexpected keyword(s) {sorted(unknown)}")
    config = config or BuildConfig()
    if settings:
        config = dataclasses.replace(config, **settings)
    return Collection.build(corpus, out, config=config, device=device, encoder=encoder,
                            dense_encoder=dense_encoder, skip_bad=skip_bad, overwrite=overwrite, limit=limit,
                            show_progress=show_progress, corpus_name=corpus_name, vectors=vectors,
                            segment_docs=segment_docs, merge=merge)
