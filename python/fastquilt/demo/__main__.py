"""``python -m fastquilt.demo``."""

from . import main

main()
