"""``qlty.qlty2DLarge`` -> fastquilt.compat."""

from fastquilt.compat import LargeNCYXQuilt  # noqa: F401
