"""Deprecated: the metrics and TREC run files moved to :mod:`lsr.eval.metrics` (also in :mod:`lsr.eval`).

This module re-exports the names of :mod:`lsr.eval.metrics` and warns once, at import.

Example:
    >>> from lsr.eval.metrics import evaluate   # instead of: from lsr.evaluation import evaluate
"""

import warnings

from lsr.eval.metrics import *  # noqa: F403
from lsr.eval.metrics import __all__  # noqa: F401
from lsr.eval.metrics import measure as _measure  # noqa: F401  (its name before lsr.eval)

warnings.warn("lsr.evaluation is deprecated: import from lsr.eval.metrics (or lsr.eval) instead",
              DeprecationWarning, stacklevel=2)
