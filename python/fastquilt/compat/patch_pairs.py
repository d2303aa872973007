"""qlty 1.5.0's patch pairs for self-supervised learning, with qlty's signatures, defaults,
return shapes and random numbers, on fastquilt's gather.

``extract_patch_pairs`` / ``extract_patch_pairs_3d``: per image, ``num_patches`` pairs of
windows at a sampled displacement (``pair_sampling``: qlty's draws), cut with one gather whose
origins rows are ``[n, *start]`` and ``[n, *(start + d)]``. ``extract_overlapping_pixels`` /
``extract_overlapping_pixels_3d``: the pixels two windows share, located by index math on the
displacements (no comparison of patch values), gathered in qlty's order (pair, then row-major
inside the overlap box).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..ops import gather_windows
from .pair_sampling import sample_pairs


def _check_tensor(tensor, ndim: int) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != ndim + 2:
        names = "(N, C, Y, X)" if ndim == 2 else "(N, C, Z, Y, X)"
        raise ValueError(f"Input tensor must be {ndim + 2}D {names}, got shape {tensor.shape}")


def _check_window(window, ndim: int) -> tuple[int, ...]:
    if not isinstance(window, Sequence) or len(window) != ndim:
        raise ValueError(f"window must be a tuple of {ndim} ints, got {window!r}")
    w = tuple(int(v) for v in window)
    if min(w) < 1:
        raise ValueError(f"window must be >= 1 on every axis, got {w}")
    return w


def _check_delta(delta_range, window: tuple[int, ...], sizes: tuple[int, ...]):
    low, high = delta_range
    quarter, three_quarters = max(window) // 4, 3 * max(window) // 4
    if low < quarter or high > three_quarters:
        raise ValueError(f"delta_range must satisfy: {quarter} <= low <= high <= "
                         f"{three_quarters}, got ({low}, {high})")
    if low > high:
        raise ValueError(f"delta_range low ({low}) must be <= high ({high})")
    need = tuple(w + int(high) for w in window)
    if any(n > s for n, s in zip(need, sizes)):
        what = "Image" if len(sizes) == 2 else "Volume"
        raise ValueError(f"{what} dimensions {sizes} are too small for window {window} and "
                         f"delta_range ({low}, {high}). Minimum required: {need}")
    return low, high


def _generator(random_seed, device):
    if random_seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed(random_seed)
    return gen


def _pairs(tensor, window, num_patches, delta_range, random_seed, rotations):
    """``(patches1, patches2, deltas (M, D) float32 [dx, dy(, dz)], rotations (M,) int64,
    starts1 (M, D) int64 and starts2, both axis order (z,) y, x)``."""
    D = len(window)
    N, sizes = tensor.shape[0], tuple(tensor.shape[2:])
    low, high = _check_delta(delta_range, window, sizes)
    num_patches = int(num_patches)
    if num_patches < 0:
        raise ValueError(f"num_patches must be >= 0, got {num_patches}")
    dev = tensor.device
    gen = _generator(random_seed, dev)
    drawn = sample_pairs(N, num_patches, sizes[::-1], window[::-1], low, high, gen, dev,
                         rotations)
    M = len(drawn)
    n = torch.tensor([p[0] for p in drawn], dtype=torch.int64).view(M, 1)
    start = torch.tensor([p[1][::-1] for p in drawn], dtype=torch.int64).view(M, D)
    d = torch.tensor([p[2] for p in drawn], dtype=torch.int64).view(M, D)
    rot = torch.tensor([p[3] for p in drawn], dtype=torch.int64).view(M)
    start2 = start + d.flip(1)
    origins = torch.cat([torch.cat([n, start], 1), torch.cat([n, start2], 1)]).to(dev)
    both = gather_windows(tensor, origins, window)
    p1, p2 = both[:M], both[M:]
    for r in (1, 2, 3):
        sel = (rot == r).nonzero().view(-1)
        if len(sel):
            sel = sel.to(dev)
            p2[sel] = torch.rot90(p2[sel], k=r, dims=(-2, -1))
    return p1, p2, d.to(dev, torch.float32), rot.to(dev), start.to(dev), start2.to(dev)


def _rotation_choices(rotation_choices, window) -> tuple[int, ...]:
    if rotation_choices is None:
        return (0,)
    choices = tuple(int(c) % 4 for c in rotation_choices) or (0,)
    if window[0] != window[1] and any(c % 2 for c in choices):
        raise ValueError(
            f"rotation_choices {tuple(rotation_choices)} include quarter turns, which need a "
            f"square window, got {window}; use rotation_choices (0, 2) or a square window")
    return choices


def extract_patch_pairs(tensor: torch.Tensor, window: tuple[int, int], num_patches: int,
                        delta_range: tuple[float, float], random_seed: int | None = None,
                        rotation_choices: Sequence[int] | None = None,
                        return_positions: bool = False, include_n_position: bool = False):
    """Pairs of windows at a random displacement, ``num_patches`` per image.

    Args:
        tensor: ``(N, C, Y, X)``, any device and dtype.
        window: ``(U, V)``.
        num_patches: pairs per image ``P``.
        delta_range: ``(low, high)``: ``low <= sqrt(dx**2 + dy**2) <= high``, with
            ``max(U, V) // 4 <= low <= high <= 3 * max(U, V) // 4``.
        random_seed: seeds a generator on ``tensor.device`` (None: the global RNG).
        rotation_choices: quarter turns of the second patch to choose from (None: none).
        return_positions / include_n_position: also return each patch's start ``[y, x]`` (or
            ``[n, y, x]``) as int64 ``(N * P, 2 | 3)``.

    Returns:
        ``patches1``, ``patches2`` ``(N * P, C, U, V)``, ``deltas`` float32 ``(N * P, 2)``
        ``[dx, dy]``, ``rotations`` int64 ``(N * P,)`` (and ``positions1``, ``positions2``).
    """
    _check_tensor(tensor, 2)
    window = _check_window(window, 2)
    choices = _rotation_choices(rotation_choices, window)
    p1, p2, d, rot, s1, s2 = _pairs(tensor, window, num_patches, delta_range, random_seed,
                                    choices)
    if not return_positions:
        return p1, p2, d, rot
    if include_n_position:
        n = torch.arange(tensor.shape[0], device=tensor.device).repeat_interleave(
            int(num_patches)).view(-1, 1)
        s1, s2 = torch.cat([n, s1], 1), torch.cat([n, s2], 1)
    return p1, p2, d, rot, s1, s2


def extract_patch_pairs_3d(tensor: torch.Tensor, window: tuple[int, int, int],
                           num_patches: int, delta_range: tuple[float, float],
                           random_seed: int | None = None):
    """3D pairs of windows: ``tensor`` ``(N, C, Z, Y, X)``, ``window`` ``(U, V, W)`` (z, y,
    x); ``max(window) // 4 <= low <= high <= 3 * max(window) // 4``.

    Returns ``patches1``, ``patches2`` ``(N * P, C, U, V, W)`` and ``deltas`` float32
    ``(N * P, 3)`` ``[dx, dy, dz]``.
    """
    _check_tensor(tensor, 3)
    window = _check_window(window, 3)
    p1, p2, d, _, _, _ = _pairs(tensor, window, num_patches, delta_range, random_seed, (0,))
    return p1, p2, d


def _rotated(coords2, rot: torch.Tensor, n: int):
    """Where pixel ``(a, b)`` of the unrotated second patch sits in the stored one
    (``torch.rot90(patch, k=r)``; square windows of side ``n``)."""
    a, b = coords2
    ra = torch.where(rot == 1, n - 1 - b, torch.where(rot == 2, n - 1 - a,
                                                      torch.where(rot == 3, b, a)))
    rb = torch.where(rot == 1, a, torch.where(rot == 2, n - 1 - b,
                                              torch.where(rot == 3, n - 1 - a, b)))
    return [ra, rb]


def _overlap_index(d: torch.Tensor, window: tuple[int, ...], C: int, rot):
    """Where the shared pixels sit, in qlty's order (pair, then row-major inside the overlap
    box): ``(t1, t2)``, each the flat index of a pixel's channel-0 value in the contiguous
    patches (``pair * C * prod(window) + spatial index``). Index math per row of the overlap
    boxes, then running sums per pixel (int32 where the patches allow it).

    ``d``: ``(M, D)`` int64 displacements (z,) y, x; ``rot``: ``(M,)`` quarter turns of the
    second patches (None: none)."""
    dev = d.device
    M, D = d.shape
    plane = 1
    for v in window:
        plane *= v
    itype = torch.int32 if M * C * plane < 2 ** 31 else torch.int64
    w = torch.tensor(window, dtype=torch.int64, device=dev)
    lo = d.clamp(min=0)
    ext = (torch.minimum(w, w + d) - lo).clamp(min=0)
    run = ext[:, -1]
    nrows = ext[:, :-1].prod(1) * (run > 0)
    row_pair = torch.repeat_interleave(torch.arange(M, device=dev), nrows)
    k = torch.arange(row_pair.numel(), device=dev) - (torch.cumsum(nrows, 0) - nrows)[row_pair]
    coords = []  # patch-1 coordinates of each row, axes 0 .. D-2
    for a in range(D - 2, -1, -1):
        e = ext[row_pair, a]
        coords.append(lo[row_pair, a] + k % e)
        k = torch.div(k, e, rounding_mode="floor")
    coords.reverse()
    x0 = lo[row_pair, -1]
    run_row = run[row_pair]
    stride = [1] * D
    for a in range(D - 2, -1, -1):
        stride[a] = stride[a + 1] * window[a + 1]
    start1 = x0.clone()
    start2 = x0 - d[row_pair, -1]
    for a, c in enumerate(coords):
        start1 += c * stride[a]
        start2 += (c - d[row_pair, a]) * stride[a]
    P = row_pair * (C * plane)
    if rot is None or not bool((rot != 0).any()):
        return _runs(P + start1, 1, run_row, itype), _runs(P + start2, 1, run_row, itype)
    n = window[-1]
    r = rot[row_pair]
    ra, rb = _rotated([coords[0] - d[row_pair, 0], x0 - d[row_pair, 1]], r, n)
    step = torch.tensor([1, -n, -1, n], dtype=torch.int64, device=dev)[r]
    return _runs(P + start1, 1, run_row, itype), _runs(P + ra * n + rb, step, run_row, itype)


def _runs(start: torch.Tensor, step, run: torch.Tensor, itype) -> torch.Tensor:
    """``start[i] + step[i] * j`` for ``j < run[i]``, row after row (every ``run`` >= 1), as
    running sums: ones (or the per-row step, itself a running sum of its changes) with each
    row's jump from the previous row's last value at the row's first element."""
    R = run.numel()
    K = int(run.sum()) if R else 0
    if K == 0:
        return torch.empty(0, dtype=itype, device=run.device)
    first = torch.cumsum(run, 0) - run
    if isinstance(step, int):
        prev_last = start[:-1] + step * (run[:-1] - 1)
        inc = torch.full((K,), step, dtype=itype, device=run.device)
    else:
        prev_last = start[:-1] + step[:-1] * (run[:-1] - 1)
        change = torch.zeros(K, dtype=itype, device=run.device)
        change[first] = torch.diff(step, prepend=step.new_zeros(1)).to(itype)
        inc = torch.cumsum(change, 0, dtype=itype)
    jump = start.clone()
    jump[1:] -= prev_last
    inc[first] = jump.to(itype)
    return torch.cumsum(inc, 0, dtype=itype)


def _check_pairs(patches1, patches2, deltas, ndim: int):
    shape = "(N*P, C, U, V)" if ndim == 2 else "(N*P, C, U, V, W)"
    if patches1.dim() != ndim + 2 or patches2.dim() != ndim + 2:
        raise ValueError(f"Both patches1 and patches2 must be {ndim + 2}D tensors {shape}, "
                         f"got shapes {patches1.shape} and {patches2.shape}")
    if patches1.shape != patches2.shape:
        raise ValueError("patches1 and patches2 must have the same shape, got "
                         f"{patches1.shape} and {patches2.shape}")
    if deltas.dim() != 2 or deltas.shape[1] != ndim:
        raise ValueError(f"deltas must be 2D tensor of shape (N*P, {ndim}), got {deltas.shape}")
    if deltas.shape[0] != patches1.shape[0]:
        raise ValueError(f"Number of deltas ({deltas.shape[0]}) must match number of patch "
                         f"pairs ({patches1.shape[0]})")


def _overlap(patches1, patches2, deltas, rotations, ndim: int):
    _check_pairs(patches1, patches2, deltas, ndim)
    M, C = patches1.shape[:2]
    window = tuple(patches1.shape[2:])
    d = deltas.to(patches1.device).to(torch.int32).to(torch.int64).flip(1)  # (z,) y, x
    rot = None
    if rotations is not None:
        if rotations.shape[0] != M:
            raise ValueError(f"Number of rotations ({rotations.shape[0]}) must match number "
                             f"of patch pairs ({M})")
        rot = rotations.to(patches1.device).to(torch.int64) % 4
        if window[0] != window[1] and bool((rot % 2 == 1).any()):
            raise ValueError(f"rotations include quarter turns, which need square patches, "
                             f"got patches of {window}")
    t1, t2 = _overlap_index(d, window, C, rot)
    return _pixels(patches1, t1), _pixels(patches2, t2)


def _pixels(patches: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(K, C)``: the pixels whose channel-0 values sit at flat index ``t`` of the contiguous
    ``patches`` (channel ``c`` ``c`` planes further): one gather from the flat patches."""
    M, C = patches.shape[:2]
    if t.numel() == 0 or patches.numel() == 0:
        return patches.new_empty((0, C))
    plane = patches[0, 0].numel()
    off = torch.arange(0, C * plane, plane, dtype=t.dtype, device=t.device)
    return patches.reshape(-1).index_select(0, (t.view(-1, 1) + off).view(-1)).view(-1, C)


def extract_overlapping_pixels(patches1: torch.Tensor, patches2: torch.Tensor,
                               deltas: torch.Tensor, rotations: torch.Tensor | None = None
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixels two patches of each pair share: ``(K, C)`` from ``patches1`` and the same
    ``K`` pixels from ``patches2`` (``rotations``: the quarter turns applied to ``patches2``,
    undone by index). ``patches*``: ``(M, C, U, V)``; ``deltas``: ``(M, 2)`` ``[dx, dy]``."""
    return _overlap(patches1, patches2, deltas, rotations, 2)


def extract_overlapping_pixels_3d(patches1: torch.Tensor, patches2: torch.Tensor,
                                  deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """3D form: ``patches*`` ``(M, C, U, V, W)``, ``deltas`` ``(M, 3)`` ``[dx, dy, dz]`` ->
    ``(K, C)``, ``(K, C)``."""
    return _overlap(patches1, patches2, deltas, None, 3)
