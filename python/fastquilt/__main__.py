"""``python -m fastquilt``: the command line (:mod:`fastquilt.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
