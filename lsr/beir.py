"""Deprecated: the BEIR data sets moved to :mod:`lsr.eval.beir` (also in :mod:`lsr.eval`).

This module re-exports the names of :mod:`lsr.eval.beir` and warns once, at import.

Example:
    >>> from lsr.eval.beir import load_beir   # instead of: from lsr.beir import load_beir
"""

import warnings

from lsr.eval.beir import *  # noqa: F403
from lsr.eval.beir import __all__  # noqa: F401

warnings.warn("lsr.beir is deprecated: import from lsr.eval.beir (or lsr.eval) instead",
              DeprecationWarning, stacklevel=2)
