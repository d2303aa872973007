"""qlty 1.5.0 drop-in: qlty's names, signatures, defaults and return shapes on fastquilt's
kernels. Change one import::

    from fastquilt.compat import NCYXQuilt, weed_sparse_classification_training_pairs_2D

Where qlty is wrong fastquilt deviates on purpose (docs/qlty-compatibility.md): step-back in
3D, a race-free stitch, dtype and device kept, ``missing_label`` in 3D, NaN-aware weeding,
absolute positional channels that work, an empty result instead of a crash, per-image weight
sums in the Large classes.
"""

from .large import LargeNCYXQuilt, LargeNCZYXQuilt
from .quilts import NCYXQuilt, NCZYXQuilt
from .weeding import (
    weed_sparse_classification_training_pairs_2D,
    weed_sparse_classification_training_pairs_3D,
)

__all__ = [
    "LargeNCYXQuilt",
    "LargeNCZYXQuilt",
    "NCYXQuilt",
    "NCZYXQuilt",
    "weed_sparse_classification_training_pairs_2D",
    "weed_sparse_classification_training_pairs_3D",
]
