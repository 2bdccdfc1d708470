"""Text encoders: SPLADE (sparse) and dense models, and the model-name resolver.

The encoder classes need torch and transformers: they are imported on first use, so that the resolver and
the shared helpers (:mod:`lsr.encoders.resolve`, :mod:`lsr.encoders._hf`) load without them.

Example:
    >>> from lsr.encoders import resolve_model, KNOWN_MODELS
    >>> "splade-tiny" in KNOWN_MODELS
    True
    >>> from lsr.encoders import SpladeEncoder   # imports torch   # doctest: +SKIP
"""

import importlib

from lsr.encoders.resolve import KNOWN_MODELS, resolve_model

__all__ = ["DenseEncoder", "SpladeEncoder", "resolve_model", "KNOWN_MODELS"]

#: torch-backed classes, imported when first asked for
_LAZY = {"SpladeEncoder": "lsr.encoders.splade", "DenseEncoder": "lsr.encoders.dense"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lsr.encoders' has no attribute {name!r}")
