"""``python -m tcsim.train CONFIG.toml [--out DIR] ...``: the same as ``tcsim train``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train"] + sys.argv[1:]))
