"""``qlty.cleanup`` -> fastquilt.compat."""

from fastquilt.compat import (  # noqa: F401
    weed_sparse_classification_training_pairs_2D,
    weed_sparse_classification_training_pairs_3D,
)
