"""Window weights for stitching: qlty's border weight, Gaussian, Hann, linear taper, custom.

Every weight is strictly positive, so a stitched mean never divides by zero where a window
covers a voxel, and identity patches round-trip to the input exactly (up to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._args import per_axis, window_arg

WEIGHT_KINDS = ("border", "flat", "gaussian", "hann", "linear")


def normalize_border(border, ndim: int) -> tuple[int, ...] | None:
    """qlty's border normalisation: ``None``, ``0`` and all-zero tuples mean "no border"."""
    if border is None:
        return None
    b = per_axis(border, ndim, "border", minimum=0)
    return None if all(v == 0 for v in b) else b


def check_border(border: tuple[int, ...] | None, window: tuple[int, ...]) -> None:
    """A border must leave an interior: ``2 * border < window`` on every axis."""
    if border is None:
        return
    for d, (b, w) in enumerate(zip(border, window)):
        if 2 * b >= w:
            raise ValueError(
                f"border {border} is at least half the window {window} on axis {d} "
                f"({b} >= {w}/2), which leaves no interior; use border < {(w + 1) // 2}"
            )


def border_weight_value(border_weight: float) -> float:
    """qlty stores ``border_weight=0`` as 1e-8 so borders still count where nothing else does."""
    if isinstance(border_weight, bool) or not isinstance(border_weight, (int, float)):
        raise TypeError(f"border_weight must be a float in [0, 1], got {border_weight!r}")
    if not (0.0 <= float(border_weight) <= 1.0):
        raise ValueError(f"border_weight must be in [0, 1], got {border_weight}")
    return max(float(border_weight), 1e-8)


def border_weight(
    window: Sequence[int], border, border_weight: float = 0.1, dtype=torch.float32
) -> torch.Tensor:
    """qlty's flat border weight: ``border_weight`` in the border frame, 1 inside.

    A border of 0 on an axis means that axis has no frame. ``border=None`` gives all ones.
    """
    window = window_arg(window)
    b = normalize_border(border, len(window))
    check_border(b, window)
    if b is None:
        return torch.ones(window, dtype=dtype)
    # qlty builds this in float32; build it the same way, then cast.
    w = torch.full(window, border_weight_value(border_weight), dtype=torch.float32)
    w[tuple(slice(v, -v) if v > 0 else slice(None) for v in b)] = 1.0
    return w.to(dtype)


def border_mask(window: Sequence[int], border) -> torch.Tensor:
    """qlty's ``border_tensor``: 1.0 in the interior, 0.0 in the border frame."""
    window = window_arg(window)
    b = normalize_border(border, len(window))
    check_border(b, window)
    if b is None:
        return torch.ones(window)
    m = torch.zeros(window)
    m[tuple(slice(v, -v) if v > 0 else slice(None) for v in b)] = 1.0
    return m


def _separable(profiles: list[torch.Tensor]) -> torch.Tensor:
    out = profiles[0]
    for p in profiles[1:]:
        out = out.unsqueeze(-1) * p
    return out


def gaussian_weight(
    window: Sequence[int], sigma_scale: float = 0.125, min_value: float = 1e-3, dtype=torch.float32
) -> torch.Tensor:
    """Gaussian importance map (as MONAI): sigma = ``sigma_scale * window``, peak 1,
    values clamped below at ``min_value`` so window edges still count."""
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    if not 0 < min_value <= 1:  # a zero weight would leave window edges uncounted
        raise ValueError(f"min_value must be in (0, 1], got {min_value}")
    profiles = []
    for w in window_arg(window):
        sigma = max(sigma_scale * w, 1e-6)
        x = torch.arange(w, dtype=torch.float64) - (w - 1) / 2.0
        profiles.append(torch.exp(-0.5 * (x / sigma) ** 2))
    g = _separable(profiles)
    g = g / g.max()
    return g.clamp_min(min_value).to(dtype)


def hann_weight(window: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Hann window that is non-zero at the ends (TorchIO's choice): ``sin^2(pi (i+1) / (w+1))``."""
    profiles = [
        torch.sin(math.pi * (torch.arange(w, dtype=torch.float64) + 1) / (w + 1)) ** 2
        for w in window_arg(window)
    ]
    return _separable(profiles).to(dtype)


def linear_weight(window: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """Linear (tent) taper, 1 at the centre, ``1 / ceil(w / 2)`` at the ends (never 0)."""
    profiles = []
    for w in window_arg(window):
        half = (w + 1) // 2
        i = torch.arange(w, dtype=torch.float64)
        profiles.append(torch.minimum(i + 1, w - i) / half)
    return _separable(profiles).to(dtype)


# Range of a weight tensor's largest value (see make_weight).
_WEIGHT_MAX_RANGE = (2.0**-64, 2.0**64)


def make_weight(
    weight,
    window: Sequence[int],
    border=None,
    border_weight_: float = 0.1,
    dtype=torch.float32,
) -> torch.Tensor:
    """Resolve a weight spec to a tensor of shape ``window``.

    ``weight`` is ``None``/``"border"`` (qlty's border weight, all ones without a border),
    ``"flat"``, ``"gaussian"``, ``"hann"``, ``"linear"`` or a tensor of shape ``window`` with
    finite, non-negative values and a positive sum. ``border_weight_`` is checked even where
    no border uses it (a value outside [0, 1] is a mistake either way).
    """
    window = window_arg(window)
    border_weight_value(border_weight_)
    if isinstance(weight, torch.Tensor):
        if tuple(weight.shape) != window:
            raise ValueError(
                f"weight tensor must have the window's shape {window}, got {tuple(weight.shape)}"
            )
        if not weight.is_floating_point():
            raise TypeError(f"weight tensor must be floating point, got {weight.dtype}")
        if weight.device.type == "meta":
            raise TypeError("weight tensor must hold values (got a meta tensor)")
        # one pass (NaN comes out of both; a finite, non-negative weight sums to > 0 where
        # its largest value is > 0)
        low, top = (float(v) for v in torch.aminmax(weight.detach()))
        if not (math.isfinite(low) and math.isfinite(top)) or low < 0 or top <= 0:
            raise ValueError("weight tensor must be finite and >= 0 with a positive sum")
        if not _WEIGHT_MAX_RANGE[0] <= top <= _WEIGHT_MAX_RANGE[1]:
            # float32 sums of weight * value underflow (or overflow) far from 1; the mean does
            # not depend on the weights' scale, so rescaling loses nothing.
            raise ValueError(
                f"weight tensor's largest value {top:.3g} is outside [2**-64, 2**64], where "
                "float32 sums lose precision; pass weight / weight.max() (same weighted mean)"
            )
        return weight.to(dtype)
    if weight is not None and not isinstance(weight, str):
        raise TypeError(f"weight must be one of {WEIGHT_KINDS}, None or a torch.Tensor, got "
                        f"{type(weight).__name__}" + (" (use torch.from_numpy)" if hasattr(
                            weight, "__array__") else ""))
    if weight is None or weight == "border":
        return border_weight(window, border, border_weight_, dtype=dtype)
    if weight == "flat":
        return torch.ones(window, dtype=dtype)
    if weight == "gaussian":
        return gaussian_weight(window, dtype=dtype)
    if weight == "hann":
        return hann_weight(window, dtype=dtype)
    if weight == "linear":
        return linear_weight(window, dtype=dtype)
    raise ValueError(f"weight must be one of {WEIGHT_KINDS} or a tensor, got {weight!r}")
