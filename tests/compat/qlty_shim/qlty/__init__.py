"""A shim named ``qlty`` that points qlty 1.5.0's public names at ``fastquilt.compat``, so
qlty's own test-suite runs against fastquilt (tools/run_qlty_tests.py puts it first on
``sys.path`` for that run only). It holds no qlty code."""

from fastquilt.compat import *  # noqa: F403
from fastquilt.compat import __all__

from . import (  # noqa: F401
    backends_2_5D,
    base,
    cleanup,
    patch_pairs_2d,
    patch_pairs_3d,
    qlty2_5D,
    qlty2D,
    qlty2DLarge,
    qlty3D,
    qlty3DLarge,
)

__version__ = "1.5.0"
__all__ = list(__all__)
