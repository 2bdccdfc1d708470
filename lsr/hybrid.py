"""The dense and BM25 sides of an index folder, next to the SPLADE (sparse) side, and how they fuse.

An index folder built by ``lsr index`` holds up to three retrievers over the same documents:

* ``sparse``: the SPLADE :class:`lsr.index.SparseIndex` at the folder's root (always);
* ``dense``: a :class:`lsr.index.dense.DenseIndex` under ``dense/`` whose rows follow the sparse index's
  internal row order, so the sparse index's id list serves both;
* ``bm25``: a second :class:`~lsr.index.SparseIndex` under ``bm25/`` holding BM25 impacts (float32), with
  the :class:`lsr.bm25.BM25Encoder` statistics in ``bm25/bm25.json``.

The root manifest's ``sides`` entry names the sides and their settings, and ``fusion`` the default fusion
(written by ``lsr tune-fusion``; equal-weight min-max convex fusion when untuned).

Example:
    >>> from lsr.hybrid import default_fusion
    >>> default_fusion({"sides": {"dense": {}, "bm25": {}}})["method"]
    'convex'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lsr.errors import IndexFormatError

DENSE_DIR = "dense"
BM25_DIR = "bm25"
BM25_FILE = "bm25/bm25.json"
MODES = ("hybrid", "sparse", "dense", "bm25")
#: Lowest possible score of each retriever (theoretical min-max normalisation, Bruch et al. 2023).
THEORETICAL_MIN = {"sparse": 0.0, "dense": -1.0, "bm25": 0.0}


def write_dense_side(folder: Path, encoder: Any, texts: list[str], order: np.ndarray, *, kind: str = "flat",
                     batch_size: int = 64, show_progress: bool = True, **params: Any) -> dict:
    """Encode ``texts`` (input order), store them in the sparse index's row ``order``; returns the entry."""
    from lsr.index.dense import DenseIndex

    vectors = encoder.encode_documents(texts, batch_size=batch_size, show_progress=show_progress)
    index = DenseIndex.build(vectors[np.asarray(order)], kind=kind, **params)
    files = index.save(folder)
    return {"encoder": encoder.describe(), "index": index.describe(), "files": files}


def write_bm25_side(folder: Path, texts: list[str], ids: list[str], *, analyzer: str = "wordpiece",
                    tokenizer: Any = None, k1: float = 0.9, b: float = 0.4) -> dict:
    """Fit BM25 on ``texts``, index its impacts under ``bm25/``; returns the manifest entry."""
    from lsr.bm25 import BM25Encoder
    from lsr.index import SparseIndex

    enc = BM25Encoder.fit(texts, analyzer=analyzer, tokenizer=tokenizer, k1=k1, b=b)
    sub = Path(folder) / BM25_DIR
    sub.mkdir(parents=True, exist_ok=True)
    SparseIndex.write_into(sub, enc.encode_documents(texts), ids, quantization="float32", reorder=False)
    (Path(folder) / BM25_FILE).write_text(enc.to_json())
    return {"analyzer": analyzer, "k1": enc.k1, "b": enc.b, "avgdl": enc.avgdl, "stats": BM25_FILE}


def default_fusion(manifest: dict) -> dict:
    """The fusion recorded in the manifest (tuned), else equal-weight min-max convex fusion."""
    tuned = manifest.get("fusion")
    if isinstance(tuned, dict) and tuned.get("method"):
        return dict(tuned)
    sides = ["sparse", *[s for s in ("dense", "bm25") if s in manifest.get("sides", {})]]
    return {"method": "convex", "normalization": "minmax", "weights": {s: 1.0 for s in sides}}


def check_fusion(fusion: Any, available: list[str], *, mode: str = "hybrid") -> dict:
    """Check a fusion setting (from Python, CLI JSON, HTTP or a manifest); a ValueError names the problem.

    Every interface goes through here, so the numbers are bounded here: convex weights come back
    normalised to sum 1 and RRF weights scaled so the largest is 1 (the same rankings; fused scores
    cannot overflow, nor all underflow to 0), and RRF ``k`` is at most :data:`lsr.fusion.MAX_RRF_K`.
    A fusion applies only to ``mode`` "hybrid": given with another mode it is refused, not ignored.

    Example:
        >>> check_fusion({"weights": {"sparse": 3, "dense": 1}}, ["sparse", "dense"])["weights"]
        {'sparse': 0.75, 'dense': 0.25}
    """
    from lsr.fusion import MAX_RRF_K, METHODS, NORMALIZATIONS, scaled

    if mode != "hybrid":
        raise ValueError(f"fusion applies only to mode 'hybrid', not {mode!r}: leave fusion out or use "
                         "mode 'hybrid'")
    if not isinstance(fusion, dict):
        raise ValueError(f"fusion must be an object like {{'method': 'rrf'}}, got {type(fusion).__name__}")
    unknown = set(fusion) - {"method", "weights", "normalization", "k", "depth", "tuned"}
    if unknown:
        raise ValueError(f"unknown fusion field(s) {sorted(unknown)}: use method, weights, normalization, k, "
                         "depth")
    out = dict(fusion)
    out.setdefault("method", "convex")
    if out["method"] not in METHODS:
        raise ValueError(f"fusion method must be one of {METHODS}, got {out['method']!r}")
    if out.get("normalization", "minmax") not in NORMALIZATIONS:
        raise ValueError(f"fusion normalization must be one of {NORMALIZATIONS}, "
                         f"got {out['normalization']!r}")
    if "k" in out or out["method"] == "rrf":
        k = out.get("k", 60.0)
        if isinstance(k, bool) or not isinstance(k, (int, float)) or not 0 <= k <= MAX_RRF_K:
            raise ValueError(f"fusion k (RRF) must be a number in 0..{MAX_RRF_K:.0f}, got {k!r} (with a "
                             "larger k every rank scores about the same)")
        out["k"] = float(k)
    weights = out.get("weights") or {s: 1.0 for s in available}
    if not isinstance(weights, dict) or not weights:
        raise ValueError("fusion weights must be an object {retriever: weight}")
    for name, w in weights.items():
        if name not in MODES[1:]:
            raise ValueError(f"fusion weight for unknown retriever {name!r}: use {', '.join(MODES[1:])}")
        if name not in available:
            raise ValueError(f"fusion weight for {name!r}, which this index does not have "
                             f"(it has {', '.join(available)})")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0 <= w < float("inf"):
            raise ValueError(f"fusion weight for {name!r} must be a finite number >= 0, got {w!r}")
    if not any(w > 0 for w in weights.values()):
        raise ValueError("fusion weights must not all be 0")
    names = list(weights)
    values = scaled([float(weights[n]) for n in names])  # largest 1: no sum overflows
    for name, v in zip(names, values):
        if weights[name] > 0 and v == 0.0:
            raise ValueError(f"fusion weight for {name!r} ({weights[name]!r}) is too small next to the "
                             f"largest ({max(weights.values())!r}) to count; use 0 to leave it out")
    if out["method"] == "convex":
        values = [v / sum(values) for v in values]
    out["weights"] = dict(zip(names, values))
    depth = out.get("depth", 100)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 10_000:
        raise ValueError(f"fusion depth must be an integer in 1..10000, got {depth!r}")
    out["depth"] = depth
    return out


def load_sides(path: Path, manifest: dict, *, device: str = "auto", load_encoders: bool = True,
               splade_tokenizer: Any = None) -> dict[str, Any]:
    """Open the dense and BM25 sides named in ``manifest``: {"dense": (index, encoder), "bm25": (...)}."""
    from lsr.index import SparseIndex
    from lsr.index.dense import DenseIndex

    sides = manifest.get("sides", {})
    out: dict[str, Any] = {}
    if "dense" in sides:
        index = DenseIndex.load(path)
        encoder = None
        if load_encoders:
            from lsr.encoders import DenseEncoder

            info = sides["dense"].get("encoder", {})
            encoder = DenseEncoder.from_pretrained(info.get("name", "minilm"), device=device,
                                                   max_length=int(info.get("max_length", 256)))
            if encoder.dim != index.dim:
                raise IndexFormatError(f"{path}: dense encoder {info.get('name')!r} makes {encoder.dim}-d "
                                       f"vectors, the dense index holds {index.dim}-d ones")
        out["dense"] = (index, encoder)
    if "bm25" in sides:
        from lsr.bm25 import BM25Encoder

        index = SparseIndex.load(Path(path) / BM25_DIR)
        try:
            text = (Path(path) / BM25_FILE).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise IndexFormatError(f"{path}: unreadable BM25 statistics ({e})") from None
        analyzer = sides["bm25"].get("analyzer")
        encoder = None
        if load_encoders or analyzer == "porter":
            if analyzer == "wordpiece" and splade_tokenizer is None:
                raise IndexFormatError(f"{path}: the BM25 side needs the SPLADE encoder's tokenizer")
            try:
                encoder = BM25Encoder.from_json(text, tokenizer=splade_tokenizer)
            except (ValueError, KeyError, TypeError, AttributeError) as e:  # damaged JSON or fields
                raise IndexFormatError(f"{Path(path) / BM25_FILE} is corrupted: {e!r}") from None
        out["bm25"] = (index, encoder)
    return out
