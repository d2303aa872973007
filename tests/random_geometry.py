"""Random window grids for the property tests that draw one seed (see their comments)."""

import numpy as np


def random_grid(rng: np.random.Generator, max_2d: int, max_3d: int, *, min_size: int = 1,
                min_window: int = 1, gaps: int = 0):
    """``(spatial, window, step, border)``: 2D or 3D, sizes in ``[min_size, max]``, windows
    that fit, steps up to the window (``+ gaps``), a border that leaves an interior."""
    D = int(rng.integers(2, 4))
    S = tuple(int(rng.integers(min_size, (max_2d if D == 2 else max_3d) + 1)) for _ in range(D))
    W = tuple(int(rng.integers(min(min_window, s), s + 1)) for s in S)
    step = tuple(int(rng.integers(1, w + gaps + 1)) for w in W)
    border = int(rng.integers(0, (min(W) - 1) // 2 + 1))
    return S, W, step, border


def random_units(rng: np.random.Generator, spatial):
    """Output ``(chunks, units)`` for the out-of-core writer: units are 1-3 whole chunks."""
    chunk = tuple(int(rng.integers(1, s + 1)) for s in spatial)
    return chunk, tuple(c * int(rng.integers(1, 4)) for c in chunk)
