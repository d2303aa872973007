"""qlty 1.5.0's random sampling of patch pairs, draw for draw: the same ``torch.randint`` /
``torch.rand`` draws from the same generator in the same order, so a seed (or the global RNG
state) gives qlty's displacements, positions and rotations exactly, and leaves the generator
where qlty leaves it. The patches are cut afterwards with one gather.

Per pair: a displacement by rejection (``dx, dy[, dz]`` uniform in ``[-m, m]``, ``m =
int(high) + 1``, until ``low <= |d| <= high``; after 1000 misses a rounded polar draw), up to
10 redraws while the pair does not fit, then the first window's start ``x, y[, z]`` uniform
in ``[max(0, -d), size - window - max(0, d))`` (qlty's half-open range), then a rotation index
when rotations other than 0 are allowed.

On a CPU generator (seeded or the global one) the scalar draws are not made one torch call at
a time: torch's CPU ``randint(lo, hi)`` of one element is ``lo + r % (hi - lo)`` for the next
32-bit output ``r`` of the generator's Mersenne Twister (ranges below 2**32), so the outputs
are read in blocks (``random_`` over the full 64-bit range: two outputs per element, the first
in the high half) and the draws are replayed in Python. The generator is then put back and
advanced by exactly the outputs used (one ``randint(0, 2)`` per output), so it ends where
qlty's calls leave it. The polar fallback (``torch.rand``) and other devices use torch calls.
"""

from __future__ import annotations

import math

import torch

_PI = 3.141592653589793
_BLOCK_MAX = 1 << 16


def _randint(lo: int, hi: int, gen, device) -> int:
    if gen is not None:
        return int(torch.randint(lo, hi, (1,), generator=gen, device=device)[0])
    return int(torch.randint(lo, hi, (1,), device=device)[0])


def _rand(gen, device) -> torch.Tensor:
    if gen is not None:
        return torch.rand(1, generator=gen, device=device)
    return torch.rand(1, device=device)


class _Draws:
    """Scalar draws in qlty's order: replayed from blocks of raw CPU generator outputs where
    that is exact, torch calls otherwise (``finish()`` must end a replayed run)."""

    def __init__(self, gen, device, expected: int, replay: bool = True):
        self.gen, self.device = gen, device
        self.raw: list[int] = []
        self.pos = 0
        self.used = 0
        cpu_gen = gen if gen is not None else torch.default_generator
        self.replay = (replay and torch.device(device).type == "cpu"
                       and cpu_gen.device.type == "cpu")
        if self.replay:
            self.cpu_gen = cpu_gen
            self.state = cpu_gen.get_state()
            self.next_block = max(64, min(_BLOCK_MAX, expected))

    def _refill(self) -> None:
        n = (self.next_block + 1) // 2
        self.next_block = min(_BLOCK_MAX, self.next_block * 2)
        v = torch.empty(n, dtype=torch.int64).random_(-(1 << 63), None, generator=self.cpu_gen)
        self.raw = torch.stack([(v >> 32) & 0xFFFFFFFF, v & 0xFFFFFFFF], 1).view(-1).tolist()
        self.pos = 0

    def sync(self) -> None:
        """Leave the generator exactly ``used`` outputs past where it started; stop replaying."""
        if not self.replay:
            return
        self.cpu_gen.set_state(self.state)
        if self.used:
            torch.empty(self.used, dtype=torch.int64).random_(0, 2, generator=self.cpu_gen)
        self.replay = False

    finish = sync

    def randint(self, lo: int, hi: int) -> int:
        if self.replay:
            span = hi - lo
            if 0 < span < (1 << 32):
                if self.pos == len(self.raw):
                    self._refill()
                r = self.raw[self.pos]
                self.pos += 1
                self.used += 1
                return lo + r % span
            self.sync()
        return _randint(lo, hi, self.gen, self.device)

    def rand(self) -> torch.Tensor:
        self.sync()
        return _rand(self.gen, self.device)


def _rescale(d: list[int], low: float, high: float) -> list[int]:
    dist = math.sqrt(sum(v * v for v in d))
    if dist < low:
        return [round(v * (low / dist)) for v in d]
    if dist > high:
        return [round(v * (high / dist)) for v in d]
    return d


def _fallback(ndim: int, low: float, high: float, draws: _Draws) -> list[int]:
    """qlty's polar (2D) / spherical (3D) draw after 1000 rejected displacements."""
    if ndim == 2:
        angle = draws.rand() * 2 * _PI
        dist = float((low + (high - low) * draws.rand())[0])
        d = [round(dist * float(torch.cos(angle)[0])), round(dist * float(torch.sin(angle)[0]))]
    else:
        theta = draws.rand() * 2 * _PI
        phi = draws.rand() * _PI
        dist = float((low + (high - low) * draws.rand())[0])
        st, ct = float(torch.sin(theta)[0]), float(torch.cos(theta)[0])
        sp, cp = float(torch.sin(phi)[0]), float(torch.cos(phi)[0])
        d = [round(dist * sp * ct), round(dist * sp * st), round(dist * cp)]
    return _rescale(d, low, high)


def _displacement(ndim: int, low: float, high: float, draws: _Draws) -> list[int]:
    m = int(high) + 1
    for _ in range(1000):
        d = [draws.randint(-m, m + 1) for _ in range(ndim)]
        if low <= math.sqrt(sum(v * v for v in d)) <= high:
            return d
    return _fallback(ndim, low, high, draws)


def sample_displacement(ndim: int, low: float, high: float, gen, device) -> list[int]:
    """One displacement ``[dx, dy]`` / ``[dx, dy, dz]`` with ``low <= |d| <= high`` (torch
    calls, one per draw, like qlty's private sampler it stands in for)."""
    return _displacement(ndim, low, high, _Draws(gen, device, 0, replay=False))


def _ranges(d: list[int], sizes_xyz, window_xyz):
    return [(max(0, -v), min(s - w, s - w - v)) for v, s, w in zip(d, sizes_xyz, window_xyz)]


def _expected_draws(ndim: int, low: float, high: float, pairs: int, rot: bool) -> int:
    """About how many outputs ``pairs`` pairs use (the block size to read)."""
    m = int(high) + 1
    if ndim == 2:
        hit = math.pi * (high * high - low * low)
    else:
        hit = 4.0 / 3.0 * math.pi * (high ** 3 - low ** 3)
    p = min(1.0, max(hit / (2 * m + 1) ** ndim, 1e-3))
    return int(pairs * (ndim / p * 1.2 + ndim + rot)) + 16


def sample_pairs(num_images: int, num_patches: int, sizes_xyz, window_xyz, low: float,
                 high: float, gen, device, rotation_choices=(0,)):
    """Sample ``num_images * num_patches`` pairs, image by image, as qlty does.

    ``sizes_xyz`` / ``window_xyz``: the image and window sizes, x first. Returns lists of
    ``(n, start_xyz, d_xyz, rotation)``; raises ``ValueError`` (qlty's message) when no
    displacement fits after 10 redraws.
    """
    ndim = len(sizes_xyz)
    allow_rot = any(r != 0 for r in rotation_choices)
    n_rot = len(rotation_choices)
    draws = _Draws(gen, device,
                   _expected_draws(ndim, low, high, num_images * num_patches, allow_rot))
    out = []
    try:
        for n in range(num_images):
            for _ in range(num_patches):
                d = _displacement(ndim, low, high, draws)
                rng = _ranges(d, sizes_xyz, window_xyz)
                attempts = 0
                while any(lo >= hi for lo, hi in rng) and attempts < 10:
                    d = _displacement(ndim, low, high, draws)
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
                start = [draws.randint(lo, hi) for lo, hi in rng]
                rot = rotation_choices[draws.randint(0, n_rot)] if allow_rot else 0
                out.append((n, start, d, rot))
    finally:
        draws.finish()
    return out
