"""``qlty.qlty3DLarge`` -> fastquilt.compat."""

from fastquilt.compat import LargeNCZYXQuilt  # noqa: F401
