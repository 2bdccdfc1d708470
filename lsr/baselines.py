"""Deprecated: the Pyserini baselines moved to :mod:`lsr.eval.baselines` (also in :mod:`lsr.eval`).

This module re-exports the names of :mod:`lsr.eval.baselines` and warns once, at import.

Example:
    >>> from lsr.eval.baselines import pyserini_bm25   # instead of: from lsr.baselines import ...
"""

import warnings

from lsr.eval.baselines import *  # noqa: F403
from lsr.eval.baselines import __all__  # noqa: F401

warnings.warn("lsr.baselines is deprecated: import from lsr.eval.baselines (or lsr.eval) instead",
              DeprecationWarning, stacklevel=2)
