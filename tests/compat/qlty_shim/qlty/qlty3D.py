"""``qlty.qlty3D`` -> fastquilt.compat."""

from fastquilt.compat import NCZYXQuilt  # noqa: F401
