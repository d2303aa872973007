"""``qlty.patch_pairs_2d`` -> fastquilt.compat (the metadata / zarr helpers stay qlty's)."""

import torch  # noqa: F401  (qlty's tests patch qlty.<module>.torch.randint)

from fastquilt.compat import extract_overlapping_pixels, extract_patch_pairs  # noqa: F401
from fastquilt.compat.pair_sampling import sample_displacement


def _sample_displacement_vector(low, high, generator=None, device=None):
    """qlty's private sampler, as fastquilt's (the same draws)."""
    return tuple(sample_displacement(2, low, high, generator, device))
