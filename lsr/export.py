"""Export an index's SPLADE vectors for other engines: Anserini/Pyserini ``JsonVectorCollection``.

Each line is ``{"id": doc_id, "contents": "", "vector": {token: weight}}`` with integer weights, which is
what ``python -m pyserini.index.lucene --collection JsonVectorCollection --impact --pretokenized`` (or
Anserini's ``IndexCollection``) indexes. A uint8 index exports its stored impacts as they are, so Lucene
scores the very same integers our kernels do; a float32 index is quantised as ``round(weight * 100)``.

Example:
    >>> from lsr.export import export_pyserini
    >>> export_pyserini("my-index", "my-index-pyserini").documents   # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from lsr.collection import Collection
from lsr.encoders._hf import load_error, quiet_hf
from lsr.encoders.resolve import resolve_model
from lsr.index import SparseIndex
from lsr.index.storage import atomic_folder, write_manifest

#: Query weights and float32 document weights become integers as round(weight * QUERY_SCALE) (the
#: quantisation of Anserini's SPLADE regressions).
QUERY_SCALE = 100.0
FORMATS = ("pyserini",)


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_pyserini` wrote."""

    path: Path
    documents: int
    postings: int
    files: int


def vocabulary(model: str, vocab_size: int | None = None) -> list[str]:
    """Token strings of a SPLADE model's vocabulary, by term id (loads the tokenizer only)."""
    path = resolve_model(model)
    try:
        from transformers import AutoTokenizer

        with quiet_hf():
            tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise load_error(e, model, path, "a local model folder") from None
    n = vocab_size or len(tok)
    tokens = tok.convert_ids_to_tokens(list(range(min(n, len(tok)))))
    return [t if t is not None else f"[id{i}]" for i, t in enumerate(tokens)] + \
        [f"[id{i}]" for i in range(len(tokens), n)]


def open_sparse(index: str | Path | SparseIndex | Collection) -> tuple[SparseIndex, str | None]:
    """The SPLADE index of an index folder (or a :class:`~lsr.collection.Collection`, or a SparseIndex
    itself) with the name of its encoder (None when the manifest names none).

    Example:
        >>> index, model = open_sparse("my-index")   # doctest: +SKIP
        >>> model
        'splade-tiny'
    """
    if isinstance(index, SparseIndex):  # the array layer's own manifest
        return index, index.manifest.get("metadata", {}).get("encoder", {}).get("name")
    collection = index if isinstance(index, Collection) else Collection.open(index, load_encoders=False)
    names = [n for n, e in collection.manifest.retrievers.items() if e.kind == "sparse"]
    if not names:
        raise ValueError(f"{collection.path} has no sparse (SPLADE) retriever to export")
    segs = collection.manifest.segments
    if segs is not None and (len(segs) > 1 or collection.live is not None):
        raise ValueError(f"{collection.path} has {len(segs)} segments or deleted documents: export reads one "
                         f"SPLADE index; merge them first (`lsr merge --index {collection.path} "
                         "--max-segments 1`)")
    entry = collection.manifest.retrievers[names[0]]
    return collection.retrievers[names[0]].index, (entry.encoder or {}).get("name")


def integer_weights(index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The index's document vectors as CSR with positive integer weights (see the module docstring)."""
    indptr, terms, impacts = index.forward()
    if index.quantization == "uint8":
        return np.asarray(indptr), np.asarray(terms), np.asarray(impacts).astype(np.int64)
    w = np.rint(np.asarray(impacts, np.float64) * index.scale * QUERY_SCALE).astype(np.int64)
    keep = w > 0
    kept = np.concatenate([[0], np.cumsum(keep)])
    return kept[np.asarray(indptr)], np.asarray(terms)[keep], w[keep]


def lucene_queries(batch, tokens: Sequence[str], *, scale: float = QUERY_SCALE) -> list[dict[str, int]]:
    """Each row of a query SparseBatch as ``{token: round(weight * scale)}`` (zeros dropped)."""
    out = []
    for i in range(len(batch)):
        row = batch.row(i)
        w = np.rint(row.values.astype(np.float64) * scale).astype(np.int64)
        q: dict[str, int] = {}
        for t, v in zip(row.indices.tolist(), w.tolist()):
            if v > 0:
                q[tokens[t]] = q.get(tokens[t], 0) + v
        out.append(q)
    return out


def export_pyserini(index, out: str | Path, *, tokens: Sequence[str] | None = None, overwrite: bool = False,
                    shard_docs: int = 500_000, queries: Mapping[str, Mapping[str, int]] | None = None,
                    source: str | Path | None = None) -> ExportSummary:
    """Write the SPLADE vectors of ``index`` (an index folder, a Collection or a SparseIndex) as a
    JsonVectorCollection folder.

    ``tokens`` are the vocabulary strings (default: the tokenizer of the encoder the index names).
    ``queries`` (query id to ``{token: weight}``, see :func:`lucene_queries`) are also written to
    ``queries.tsv`` (Anserini TsvString, each token repeated weight times). The folder is written
    atomically, with ``export.json`` describing the source and a ``manifest.json`` (kind ``export``)
    listing its files, so that ``overwrite=True`` can later tell it is ours to replace. ``source``: the
    folder named in ``export.json`` (default: the index's).
    """
    if source is None and not isinstance(index, SparseIndex):
        source = getattr(index, "path", index)
    index, name = open_sparse(index)
    source = index.path if source is None else source
    if tokens is None:
        if not name:
            raise ValueError(f"{index.path}: the manifest names no encoder; pass tokens=")
        tokens = vocabulary(name, index.vocab_size)
    if len(tokens) < index.vocab_size:
        raise ValueError(f"{len(tokens)} tokens for a vocabulary of {index.vocab_size} terms")
    keys = [json.dumps(t, ensure_ascii=False) + ": " for t in tokens]
    indptr, terms, weights = integer_weights(index)
    ids = index.ids
    files = 0
    with atomic_folder(out, overwrite=overwrite) as tmp:
        (tmp / "docs").mkdir()
        for start in range(0, index.n_docs, shard_docs):
            with open(tmp / "docs" / f"part-{files:05d}.jsonl", "w", encoding="utf-8") as f:
                for d in range(start, min(start + shard_docs, index.n_docs)):
                    s, e = indptr[d], indptr[d + 1]
                    body = ", ".join(keys[t] + str(w) for t, w in zip(terms[s:e].tolist(),
                                                                      weights[s:e].tolist()))
                    f.write('{"id": %s, "contents": "", "vector": {%s}}\n'
                            % (json.dumps(str(ids[d]), ensure_ascii=False), body))
            files += 1
        (tmp / "export.json").write_text(json.dumps({
            "format": "pyserini JsonVectorCollection", "source": str(source),
            "documents": index.n_docs, "postings": int(terms.size),
            "weights": "stored uint8 impacts" if index.quantization == "uint8"
            else f"round(weight * {QUERY_SCALE:g})",
            "scale": index.scale if index.quantization == "uint8" else 1.0 / QUERY_SCALE,
            "query_scale": QUERY_SCALE,
            "index_with": "IndexCollection -collection JsonVectorCollection -input docs "
                          "-generator DefaultLuceneDocumentGenerator -impact -pretokenized"}, indent=2))
        if queries is not None:
            with open(tmp / "queries.tsv", "w", encoding="utf-8") as f:
                for qid, vec in queries.items():
                    f.write(qid + "\t" + " ".join(" ".join([t] * w) for t, w in vec.items()) + "\n")
        write_manifest(tmp, {"kind": "export", "format": "pyserini", "source": str(source)})
    return ExportSummary(Path(out), index.n_docs, int(terms.size), files)
