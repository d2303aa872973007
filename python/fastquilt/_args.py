"""Argument normalisation with clear errors (shared by the public API)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence


def per_axis(value, ndim: int, name: str, *, minimum: int | None = None) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``ndim`` ints) as a tuple of ``ndim`` ints."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of {ndim} ints, got a bool")
    if isinstance(value, numbers.Integral):
        out = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != ndim:
            raise ValueError(
                f"{name} must have one entry per spatial axis ({ndim}), got {tuple(value)}"
            )
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must contain ints, got {tuple(value)}")
        out = tuple(int(v) for v in value)
    else:
        raise TypeError(
            f"{name} must be an int or a tuple of {ndim} ints, got {type(value).__name__}"
        )
    if minimum is not None and any(v < minimum for v in out):
        raise ValueError(f"{name} must be >= {minimum} on every axis, got {out}")
    return out


def spatial_shape_arg(shape) -> tuple[int, ...]:
    """A 2D or 3D spatial shape as a tuple of positive ints."""
    if isinstance(shape, numbers.Integral) or not isinstance(shape, Sequence):
        raise TypeError(f"spatial_shape must be a tuple of 2 or 3 ints, got {shape!r}")
    if len(shape) not in (2, 3):
        raise ValueError(
            f"spatial_shape must have 2 (Y, X) or 3 (Z, Y, X) sizes, got {tuple(shape)}; "
            "pass x.shape[2:] for an (N, C, *spatial) tensor"
        )
    return per_axis(tuple(shape), len(shape), "spatial_shape", minimum=1)
