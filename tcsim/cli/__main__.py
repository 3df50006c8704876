"""``python -m tcsim.cli ARGS``: the same as ``tcsim ARGS``."""

import sys

from .entry import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
