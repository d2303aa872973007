"""qlty 1.5.0's random sampling of patch pairs, draw for draw: the same ``torch.randint`` /
``torch.rand`` calls on the same generator in the same order, so a seed (or the global RNG
state) gives qlty's displacements, positions and rotations exactly. Only the sampling is
sequential (scalar draws, no tensor work); the patches are cut afterwards with one gather.

Per pair: a displacement by rejection (``dx, dy[, dz]`` uniform in ``[-m, m]``, ``m =
int(high) + 1``, until ``low <= |d| <= high``; after 1000 misses a rounded polar draw), up to
10 redraws while the pair does not fit, then the first window's start ``x, y[, z]`` uniform
in ``[max(0, -d), size - window - max(0, d))`` (qlty's half-open range), then a rotation index
when rotations other than 0 are allowed.
"""

from __future__ import annotations

import math

import torch

_PI = 3.141592653589793


def _randint(lo: int, hi: int, gen, device) -> int:
    if gen is not None:
        return int(torch.randint(lo, hi, (1,), generator=gen, device=device)[0])
    return int(torch.randint(lo, hi, (1,), device=device)[0])


def _rand(gen, device) -> torch.Tensor:
    if gen is not None:
        return torch.rand(1, generator=gen, device=device)
    return torch.rand(1, device=device)


def _rescale(d: list[int], low: float, high: float) -> list[int]:
    dist = math.sqrt(sum(v * v for v in d))
    if dist < low:
        return [round(v * (low / dist)) for v in d]
    if dist > high:
        return [round(v * (high / dist)) for v in d]
    return d


def _fallback(ndim: int, low: float, high: float, gen, device) -> list[int]:
    """qlty's polar (2D) / spherical (3D) draw after 1000 rejected displacements."""
    if ndim == 2:
        angle = _rand(gen, device) * 2 * _PI
        dist = float((low + (high - low) * _rand(gen, device))[0])
        d = [round(dist * float(torch.cos(angle)[0])), round(dist * float(torch.sin(angle)[0]))]
    else:
        theta = _rand(gen, device) * 2 * _PI
        phi = _rand(gen, device) * _PI
        dist = float((low + (high - low) * _rand(gen, device))[0])
        st, ct = float(torch.sin(theta)[0]), float(torch.cos(theta)[0])
        sp, cp = float(torch.sin(phi)[0]), float(torch.cos(phi)[0])
        d = [round(dist * sp * ct), round(dist * sp * st), round(dist * cp)]
    return _rescale(d, low, high)


def sample_displacement(ndim: int, low: float, high: float, gen, device) -> list[int]:
    """One displacement ``[dx, dy]`` / ``[dx, dy, dz]`` with ``low <= |d| <= high``."""
    m = int(high) + 1
    for _ in range(1000):
        d = [_randint(-m, m + 1, gen, device) for _ in range(ndim)]
        if low <= math.sqrt(sum(v * v for v in d)) <= high:
            return d
    return _fallback(ndim, low, high, gen, device)


def _ranges(d: list[int], sizes_xyz, window_xyz):
    return [(max(0, -v), min(s - w, s - w - v)) for v, s, w in zip(d, sizes_xyz, window_xyz)]


def sample_pairs(num_images: int, num_patches: int, sizes_xyz, window_xyz, low: float,
                 high: float, gen, device, rotation_choices=(0,)):
    """Sample ``num_images * num_patches`` pairs, image by image, as qlty does.

    ``sizes_xyz`` / ``window_xyz``: the image and window sizes, x first. Returns lists of
    ``(n, start_xyz, d_xyz, rotation)``; raises ``ValueError`` (qlty's message) when no
    displacement fits after 10 redraws.
    """
    ndim = len(sizes_xyz)
    allow_rot = any(r != 0 for r in rotation_choices)
    out = []
    for n in range(num_images):
        for _ in range(num_patches):
            d = sample_displacement(ndim, low, high, gen, device)
            rng = _ranges(d, sizes_xyz, window_xyz)
            attempts = 0
            while any(lo >= hi for lo, hi in rng) and attempts < 10:
                d = sample_displacement(ndim, low, high, gen, device)
                rng = _ranges(d, sizes_xyz, window_xyz)
                attempts += 1
            if any(lo >= hi for lo, hi in rng):
                size = tuple(reversed(sizes_xyz))
                win = tuple(reversed(window_xyz))
                what = "image" if ndim == 2 else "volume"
                raise ValueError(
                    f"Could not find valid patch locations for displacement {tuple(d)} in "
                    f"{what} of size {size} with window {win}; lower delta_range or use a "
                    "larger image")
            start = [_randint(lo, hi, gen, device) for lo, hi in rng]
            rot = 0
            if allow_rot:
                rot = rotation_choices[_randint(0, len(rotation_choices), gen, device)]
            out.append((n, start, d, rot))
    return out
