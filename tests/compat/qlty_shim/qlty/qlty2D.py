"""``qlty.qlty2D`` -> fastquilt.compat."""

from fastquilt.compat import NCYXQuilt  # noqa: F401
