"""``qlty.patch_pairs_3d`` -> fastquilt.compat."""

import torch  # noqa: F401  (qlty's tests patch qlty.<module>.torch.randint)

from fastquilt.compat import extract_overlapping_pixels_3d, extract_patch_pairs_3d  # noqa: F401
from fastquilt.compat.pair_sampling import sample_displacement


def _sample_displacement_vector_3d(low, high, generator=None, device=None):
    """qlty's private sampler, as fastquilt's (the same draws)."""
    return tuple(sample_displacement(3, low, high, generator, device))
