"""``python -m lsr.eval ...``: the same command as ``lsr eval ...``."""

import sys

from lsr.eval.run import main

sys.exit(main())
