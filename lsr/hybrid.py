"""Deprecated: hybrid retrieval now lives in :mod:`lsr.params` (modes, :class:`lsr.params.FusionSpec`),
:mod:`lsr.retrievers` (one module per retriever kind) and :mod:`lsr.fusion` (fusion on arrays).

The names kept here answer as before.

Example:
    >>> from lsr.hybrid import check_fusion
    >>> check_fusion({"weights": {"sparse": 3, "dense": 1}}, ["sparse", "dense"])["weights"]
    {'sparse': 0.75, 'dense': 0.25}
"""

from __future__ import annotations

import warnings
from typing import Any

from lsr.params import MODES, FusionSpec
from lsr.retrievers import KINDS, retriever_class

__all__ = ["MODES", "THEORETICAL_MIN", "check_fusion", "default_fusion"]

#: Lowest possible score of each retriever kind (theoretical min-max normalisation, Bruch et al. 2023).
THEORETICAL_MIN = {kind: retriever_class(kind).theoretical_min for kind in KINDS}


def check_fusion(fusion: Any, available: list[str], *, mode: str = "hybrid") -> dict:
    """Deprecated: :meth:`lsr.params.FusionSpec.check` (this returns its JSON form)."""
    warnings.warn("lsr.hybrid.check_fusion is deprecated: use lsr.params.FusionSpec.check",
                  DeprecationWarning, stacklevel=2)
    if mode != "hybrid":
        raise ValueError(f"fusion applies only to mode 'hybrid', not {mode!r}: leave fusion out or use "
                         "mode 'hybrid'")
    return FusionSpec.check(fusion, available).to_dict()


def default_fusion(manifest: dict) -> dict:
    """Deprecated: :meth:`lsr.manifest.Manifest.default_fusion` (for a raw format-2 manifest dict)."""
    warnings.warn("lsr.hybrid.default_fusion is deprecated: use lsr.manifest.Manifest.default_fusion",
                  DeprecationWarning, stacklevel=2)
    tuned = manifest.get("fusion")
    if isinstance(tuned, dict) and tuned.get("method"):
        return dict(tuned)
    sides = ["sparse", *[s for s in ("dense", "bm25") if s in manifest.get("sides", {})]]
    return {"method": "convex", "normalization": "minmax", "weights": {s: 1.0 for s in sides}}
