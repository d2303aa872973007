"""Where a training batch's windows lie and how each is turned: origins ``(B, 1 + D)`` drawn
on the grid (every window once per epoch, shuffled), uniformly anywhere, in proportion to the
labelled voxels in a window's interior, or class by class; and per-window orientations for
:func:`fastquilt.ops.gather_windows_oriented`. Every draw is a pure function of (seed, epoch,
step), made on the CPU, so any device and any number of workers see the same batches."""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ..quilt import Quilt

WHERE = ("grid", "uniform", "labelled", "balanced")


def generator(seed: int, *stream: int) -> torch.Generator:
    """A CPU generator for one (seed, epoch, step) stream: independent streams, reproducible
    on every machine (numpy's SeedSequence mixes the numbers)."""
    state = np.random.SeedSequence([int(seed), *map(int, stream)]).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]) & ((1 << 63) - 1))


def orientation_choices(window, border=None) -> torch.Tensor:
    """Every orientation that keeps a window's shape and its label frame: signed
    permutations ``(K, D)`` (gather_windows_oriented's codes) that only trade axes of equal
    window size and border. 48 for a cube in 3D, 8 for a square in 2D; flips only (``2^D``)
    when no two axes match."""
    D = len(window)
    border = tuple(border) if border is not None else (0,) * D
    out = []
    for perm in itertools.permutations(range(D)):
        if any((window[k], border[k]) != (window[d], border[d]) for d, k in enumerate(perm)):
            continue
        for signs in itertools.product((1, -1), repeat=D):
            out.append([s * (k + 1) for s, k in zip(signs, perm)])
    return torch.tensor(out, dtype=torch.int64)


def draw_orientations(choices: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` orientations drawn uniformly from ``choices`` ``(K, D)``: ``(count, D)``."""
    return choices[torch.randint(0, choices.shape[0], (count,), generator=gen)]


def epoch_order(indices: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """The grid windows ``indices`` in this epoch's shuffled order (each exactly once)."""
    return indices[torch.randperm(indices.numel(), generator=generator(seed, epoch))]


def uniform_origins(quilt: Quilt, num_images: int, count: int,
                    gen: torch.Generator) -> torch.Tensor:
    """``count`` origins ``[n, start...]`` anywhere in the images (every start in
    ``[0, S - w]`` equally likely, not only grid starts)."""
    cols = [torch.randint(0, num_images, (count,), generator=gen)]
    cols += [torch.randint(0, S - w + 1, (count,), generator=gen)
             for S, w in zip(quilt.spatial_shape, quilt.window)]
    return torch.stack(cols, 1)


def weighted_windows(weights: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` grid window indices drawn with replacement, window ``i`` with probability
    ``weights[i] / weights.sum()``."""
    return torch.multinomial(weights.double(), count, replacement=True, generator=gen)


def balanced_windows(per_class: dict, count: int, offset: int,
                     gen: torch.Generator) -> torch.Tensor:
    """``count`` grid window indices, slot ``i`` drawn in proportion to the voxels of class
    ``classes[(offset + i) % K]`` in a window's interior: every batch of at least K windows
    holds a window containing each class."""
    classes = sorted(per_class)
    slot_class = [(offset + i) % len(classes) for i in range(count)]
    out = torch.empty(count, dtype=torch.int64)
    for j, k in enumerate(classes):
        slots = torch.tensor([i for i, c in enumerate(slot_class) if c == j], dtype=torch.int64)
        if slots.numel():
            out[slots] = weighted_windows(per_class[k], slots.numel(), gen)
    return out


def steps_per_epoch(windows: int, batch_size: int, drop_last: bool) -> int:
    """Batches of an epoch over ``windows`` windows."""
    return windows // batch_size if drop_last else math.ceil(windows / batch_size)
