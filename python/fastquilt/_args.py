"""Argument normalisation with clear errors (shared by the public API)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch


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


def device_arg(device, name: str = "device", *, here: bool = True) -> torch.device | None:
    """``device`` (None, a str, an int or a ``torch.device``) as a ``torch.device``, or None.
    ``here``: it must exist on this machine (False for a device on dask workers)."""
    if device is None:
        return None
    if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
        raise TypeError(f"{name} must be a torch.device, a str like 'cuda:0' or None, got "
                        f"{type(device).__name__}")
    try:
        d = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{name}={device!r} is not a device ({e}); use e.g. 'cpu' or "
                         "'cuda:0'") from None
    if d.type == "cuda" and here:
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r} but CUDA is not available here "
                             "(torch.cuda.is_available() is False); use 'cpu'")
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r} but there are only "
                             f"{torch.cuda.device_count()} CUDA devices")
    return d


# A weighted mean in an integer type would be truncated: outputs are floating point.
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def float_dtype_arg(dtype, name: str = "out_dtype") -> torch.dtype | None:
    """``dtype`` (None, a floating ``torch.dtype``, its name like ``"float16"`` or a numpy
    float dtype) as a ``torch.dtype``, or None."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        d = dtype
    elif isinstance(dtype, str):
        d = getattr(torch, dtype, None)
    else:  # numpy dtypes and scalar types
        try:
            d = getattr(torch, np.dtype(dtype).name, None)
        except TypeError:
            d = None
    if not any(d is f for f in FLOAT_DTYPES):
        raise TypeError(f"{name} must be one of torch.float16, bfloat16, float32, float64 "
                        f"(a weighted mean), got {dtype!r}")
    return d


def index_tensor(indices, name: str = "indices") -> torch.Tensor:
    """Window indices (ints, a sequence or an integer tensor) as a flat int64 CPU tensor;
    floats or bools raise instead of being truncated."""
    t = torch.as_tensor(indices, device="cpu") if not isinstance(indices, torch.Tensor) \
        else indices.detach().cpu()
    if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"{name} must be integers (window indices), got {t.dtype}")
    # (K,), (K, 1) as torch.nonzero gives, (1, K): a list; more than one axis longer than 1
    # is e.g. positions() (rows [n, start_0, ...]), which would read as indices
    if sum(s > 1 for s in t.shape) > 1:
        raise ValueError(f"{name} must be one window index per window (n * num_windows + k), a "
                         f"1-D sequence, got shape {tuple(t.shape)}; window positions / origins "
                         "are not indices")
    return t.to(torch.int64).reshape(-1)


def window_arg(window, name: str = "window") -> tuple[int, ...]:
    """A window size: a non-empty sequence of positive ints, one per axis."""
    if isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or not window:
        raise TypeError(f"{name} must be a tuple of ints, one per axis, got {window!r}")
    return per_axis(tuple(window), len(window), name, minimum=1)


def int_arg(value, name: str):
    """An integer argument of an op schema: a Python or numpy int, a 0-d integer tensor or a
    SymInt; floats and bools are refused here (torch would raise a RuntimeError for a float,
    or truncate it)."""
    if isinstance(value, torch.SymInt):
        return value
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not (
            value.is_floating_point() or value.is_complex() or value.dtype == torch.bool):
        return int(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


def int_list_arg(values, name: str) -> list:
    """Integer sizes for an op schema (window, spatial_size, step): any sequence, numpy array
    or tensor of ints."""
    if isinstance(values, (str, bytes)) or isinstance(values, numbers.Number):
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}")
    try:
        items = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {values!r}") from None
    try:
        return [int_arg(v, name) for v in items]
    except TypeError:
        raise TypeError(f"{name} must contain ints, got {tuple(items)}") from None


def bool_arg(value, name: str) -> bool:
    """A flag: True or False (or 1 / 0); a string such as "no" is refused, not read as True."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral)
                                               and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def positive_int_arg(value, name: str) -> int:
    """A count such as ``batch_size``: an int >= 1 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)
