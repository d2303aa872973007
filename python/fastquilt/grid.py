"""qlty's step-back window grid: per-axis window counts, starts and window origins.

Along an axis of size ``S`` with window ``w`` and step ``s`` there are
``n = ceil((S - w) / s) + 1`` windows starting at ``min(i * s, S - w)``: the last one is stepped
back so that it ends exactly at ``S``. Windows are ordered image-major, then with the last axis
fastest (qlty's ``index = n * nY * nX + yy * nX + xx``).
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Sequence

import torch

from ._args import bool_arg, index_tensor, per_axis, spatial_shape_arg


def _check_axis(size: int, window: int, step: int) -> None:
    for name, v in (("size", size), ("window", window), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if window > size:
        raise ValueError(f"window {window} is larger than the axis size {size}")


def axis_count(size: int, window: int, step: int) -> int:
    """Number of windows along one axis (qlty's formula)."""
    _check_axis(size, window, step)
    if size <= window:
        return 1
    return -(-(size - window) // step) + 1


def axis_starts(size: int, window: int, step: int) -> list[int]:
    """Start of every window along one axis, with the last stepped back to ``size - window``."""
    return [min(i * step, size - window) for i in range(axis_count(size, window, step))]


def axis_row_classes(size: int, window: int, step: int) -> int:
    """How many classes the positions of one axis fall into, positions covered by windows at
    the same offsets forming one (the kernels' ``AxisClasses``): about ``step`` + a few."""
    starts = axis_starts(size, window, step)
    return len({tuple(p - s for s in starts if s <= p < s + window) for p in range(size)})


def grid_counts(
    spatial_shape: Sequence[int], window: Sequence[int], step: Sequence[int]
) -> tuple[int, ...]:
    """Windows per axis."""
    return tuple(axis_count(int(S), int(w), int(s)) for S, w, s in zip(spatial_shape, window, step))


def build_grid_origins(spatial, window, step, num_images: int, device=None) -> torch.Tensor:
    """Origins ``[n, start_0, ...]`` built from torch ops (traceable by torch.compile / AOT
    autograd); :func:`grid_origins` caches them."""
    axes = [torch.arange(num_images, dtype=torch.int64, device=device)]
    axes += [
        torch.tensor(axis_starts(S, w, s), dtype=torch.int64, device=device)
        for S, w, s in zip(spatial, window, step)
    ]
    mesh = torch.meshgrid(*axes, indexing="ij")  # image slowest, last axis fastest (qlty order)
    return torch.stack([m.reshape(-1) for m in mesh], dim=1).contiguous()


@functools.lru_cache(maxsize=64)
def _origins_cpu(spatial, window, step, num_images) -> torch.Tensor:
    # Validated on a cache miss only (a Grid's checks; gaps allowed), so hits cost nothing.
    g = Grid(spatial, window, step, allow_gaps=True)
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative int, got {num_images!r}")
    return build_grid_origins(g.spatial_shape, g.window, g.step, num_images)


def _hashable(v):
    return tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v


def grid_origins(
    spatial_shape: Sequence[int],
    window: Sequence[int],
    step: Sequence[int],
    num_images: int,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """int64 ``(num_images * n_windows, 1 + D)`` rows ``[n, start_0, ...]`` in qlty order.

    ``window`` and ``step`` are ints or one per axis, checked like :class:`Grid`'s (gaps
    allowed). The result may be a cached tensor: treat it as read-only.
    """
    t = _origins_cpu(_hashable(spatial_shape), _hashable(window), _hashable(step), num_images)
    return t.to(device) if device is not None else t


class Grid:
    """The window grid of one spatial shape.

    Args:
        spatial_shape: ``(Y, X)`` or ``(Z, Y, X)``.
        window: window size, an int or one per axis.
        step: step between window starts, an int or one per axis.
        allow_gaps: allow ``step > window``; voxels no window covers are then left out of
            every window (stitching gives them ``fill_value`` and weight 0).

    Raises:
        ValueError: window larger than the image, step < 1, or step > window without
            ``allow_gaps``.
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        window: int | Sequence[int],
        step: int | Sequence[int],
        *,
        allow_gaps: bool = False,
    ) -> None:
        self.spatial_shape = spatial_shape_arg(spatial_shape)
        D = len(self.spatial_shape)
        self.window = per_axis(window, D, "window", minimum=1)
        self.step = per_axis(step, D, "step", minimum=1)
        for d, (S, w) in enumerate(zip(self.spatial_shape, self.window)):
            if w > S:
                raise ValueError(
                    f"window {self.window} is larger than the image {self.spatial_shape} on "
                    f"axis {d} ({w} > {S}); pad the image to at least {w} on that axis "
                    "(e.g. torch.nn.functional.pad) or use a smaller window"
                )
        allow_gaps = bool_arg(allow_gaps, "allow_gaps")
        for d, (w, s) in enumerate(zip(self.window, self.step)):
            if s > w and not allow_gaps:
                raise ValueError(
                    f"step {self.step} is larger than window {self.window} on axis {d}, which "
                    "leaves voxels that no window covers; use step <= window, or pass "
                    "allow_gaps=True (uncovered voxels then get fill_value and weight 0)"
                )
        self.allow_gaps = allow_gaps
        self.counts = grid_counts(self.spatial_shape, self.window, self.step)
        self.starts = tuple(
            axis_starts(S, w, s) for S, w, s in zip(self.spatial_shape, self.window, self.step)
        )
        self.num_windows = 1
        for n in self.counts:
            self.num_windows *= n

    @property
    def ndim(self) -> int:
        """Number of spatial axes (2 or 3)."""
        return len(self.spatial_shape)

    def origins(
        self,
        num_images: int = 1,
        indices: torch.Tensor | Sequence[int] | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Window origins ``[n, start_0, ...]`` (int64, ``(M, 1 + D)``) in qlty order.

        ``indices`` selects windows by their global index ``n * num_windows + k``.
        """
        if not isinstance(num_images, int) or num_images < 0:
            raise ValueError(f"num_images must be a non-negative int, got {num_images!r}")
        full = grid_origins(self.spatial_shape, self.window, self.step, num_images)
        if indices is not None:
            idx = index_tensor(indices)
            total = full.shape[0]
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= total):
                raise ValueError(
                    f"window indices must lie in [0, {total}) for {num_images} image(s) of "
                    f"{self.num_windows} windows, got min {int(idx.min())}, max {int(idx.max())}"
                )
            full = full[idx]
        return full.to(device, copy=True) if device is not None else full.clone()

    def __repr__(self) -> str:
        return (
            f"Grid(spatial_shape={self.spatial_shape}, window={self.window}, step={self.step}, "
            f"counts={self.counts})"
        )
