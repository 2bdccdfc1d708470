"""Test helpers: write an index folder of format version 2 the way lsr-engine wrote it before issue 12, and
reuse the session's loaded encoders when a test opens a folder (no second model load).

Format 2 (``lsr/indexing.py`` and ``lsr/hybrid.py`` at commit 8ba6cfc): the SPLADE ``SparseIndex`` at the
folder's root (its ``docids.txt`` in its reordered row order and a version-2 manifest with ``metadata``),
the dense side under ``dense/`` in the sparse index's row order, the BM25 side as a second ``SparseIndex``
under ``bm25/`` with its own ids in input order plus ``bm25/bm25.json``, ``docs.sqlite``, and the root
manifest rewritten last with ``sides``.

Example:
    >>> write_v2_folder(MINI_CORPUS, tmp_path / "v2", encoder=splade, dense_encoder=None)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lsr.bm25 import BM25Encoder
from lsr.collection import encode_corpus
from lsr.corpus import read_corpus
from lsr.index import DocStore, SparseIndex, storage


def write_v2_folder(corpus: str | Path, out: str | Path, *, encoder: Any, dense_encoder: Any = None,
                    bm25: bool = True, limit: int | None = None, quantization: str = "uint8",
                    block_size: int = 8) -> dict:
    """Index ``corpus`` into ``out`` in format version 2 (what ``lsr index`` wrote before format 3);
    returns the root manifest as written."""
    data = read_corpus(corpus, limit=limit)
    records = data.records
    texts = [r.content for r in records]
    ids = [r.id for r in records]
    vectors = encode_corpus(encoder, texts, batch_size=32, show_progress=False)
    metadata = {"encoder": encoder.describe(),
                "corpus": {"name": Path(corpus).stem, "path": str(data.path),
                           "sha256": storage.sha256_file(data.path), "documents": len(records), "skipped": 0}}
    with storage.atomic_folder(out) as tmp:
        tmp = Path(tmp)
        DocStore.write(tmp / "docs.sqlite", ((r.id, r.title, r.text) for r in records))
        manifest = SparseIndex.write_into(tmp, vectors, ids, quantization=quantization, block_size=block_size,
                                          reorder=True, metadata=metadata)
        sides = {}
        if dense_encoder is not None:
            from lsr.index.dense import DenseIndex  # faiss

            order = np.load(tmp / manifest["order"])
            dv = dense_encoder.encode_documents(texts, batch_size=64, show_progress=False)
            index = DenseIndex.build(dv[order], kind="flat")
            files = index.save(tmp)
            sides["dense"] = {"encoder": dense_encoder.describe(), "index": index.describe(), "files": files}
        if bm25:
            enc = BM25Encoder.fit(texts, analyzer="wordpiece", tokenizer=encoder.tokenizer)
            (tmp / "bm25").mkdir()
            SparseIndex.write_into(tmp / "bm25", enc.encode_documents(texts), ids, quantization="float32",
                                   reorder=False)
            (tmp / "bm25" / "bm25.json").write_text(enc.to_json())
            sides["bm25"] = {"analyzer": "wordpiece", "k1": enc.k1, "b": enc.b, "avgdl": enc.avgdl,
                             "stats": "bm25/bm25.json"}
        written = storage.write_manifest(tmp, {**manifest, "sides": sides}, version=2) if sides else manifest
    return written


def reuse_encoders(monkeypatch: Any, *, splade: Any = None, dense: Any = None) -> list[str]:
    """Make ``SpladeEncoder.from_pretrained`` / ``DenseEncoder.from_pretrained`` return the given loaded
    encoders (opening a folder then loads no model); returns the list of names asked for."""
    from lsr.encoders import DenseEncoder, SpladeEncoder

    asked: list[str] = []

    def fake(loaded):
        def from_pretrained(cls, name, **kw):
            asked.append(str(name))
            if loaded is None:
                raise AssertionError(f"{cls.__name__}.from_pretrained({name!r}) was not expected")
            return loaded
        return classmethod(from_pretrained)

    monkeypatch.setattr(SpladeEncoder, "from_pretrained", fake(splade))
    monkeypatch.setattr(DenseEncoder, "from_pretrained", fake(dense))
    return asked
