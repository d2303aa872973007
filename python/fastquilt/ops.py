"""The compiled ops (``torch.ops.fastquilt.*``) as Python functions, with their fake kernels
and autograd.

* ``gather_windows`` and ``scatter_add_windows`` are each other's adjoint; each one's backward
  calls the other registered op, so double backward and ``torch.compile`` work.
* ``stitch_grid`` (full regular grid, fused mean) differentiates through the gather.
* The ``*_into`` / trailing-underscore forms mutate caller buffers (no autograd).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import _C  # noqa: F401  (runs the TORCH_LIBRARY initialisers)
from ._args import int_arg, int_list_arg
from .grid import build_grid_origins, grid_counts

_ops = torch.ops.fastquilt


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 data, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _no_autograd(op: str, **tensors) -> None:
    """The out= and in-place forms record no autograd (like torch's out= arguments): with an
    input that requires grad, the result would silently carry no gradient."""
    if torch.is_grad_enabled():
        names = [n for n, t in tensors.items() if t is not None and t.requires_grad]
        if names:
            raise ValueError(
                f"{op} records no autograd, but {', '.join(names)} requires grad: use the "
                "out-of-place op to differentiate, or call it under torch.no_grad()")


def gather_windows(
    input: torch.Tensor,
    origins: torch.Tensor,
    window: Sequence[int],
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Gather windows: input ``(N, C, *S)`` -> patches ``(M, C, *window)``.

    ``origins`` is int64 ``(M, 1 + D)`` with rows ``[n, start_0, ..., start_{D-1}]``. When
    ``weight`` (shape ``window``, float32, or float64 for float64 input) is given, each patch is
    multiplied by it (this is the adjoint of the weighted scatter-add).
    """
    return _ops.gather_windows.default(input, origins, weight, int_list_arg(window, "window"))


def gather_windows_oriented(
    input: torch.Tensor,
    origins: torch.Tensor,
    orientation: torch.Tensor,
    window: Sequence[int],
) -> torch.Tensor:
    """Gather windows, each one's axes permuted and flipped by the kernel's index math:
    input ``(N, C, *S)`` -> patches ``(M, C, *window)``. ``orientation`` is int64 ``(M, D)``:
    for patch axis ``d``, ``+(k + 1)`` reads input axis ``k`` forwards, ``-(k + 1)``
    backwards, so patch ``m`` is ``plain[m].permute(0, 1 + k_0, ...).flip(backward axes)``;
    only axes of equal window size trade places. Differentiable in ``input``."""
    return _ops.gather_windows_oriented.default(input, origins, orientation,
                                                int_list_arg(window, "window"))


def gather_windows_oriented_into(
    input: torch.Tensor,
    origins: torch.Tensor,
    orientation: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """Like :func:`gather_windows_oriented`, writing into the contiguous buffer ``out``
    ``(M, C, *window)``; returns it. Records no autograd."""
    _no_autograd("gather_windows_oriented_into", input=input, out=out)
    _ops.gather_windows_oriented_into.default(input, origins, orientation, out)
    return out


def inverse_orientation(orientation: torch.Tensor) -> torch.Tensor:
    """The orientation rows ``(M, D)`` that undo ``orientation``'s: gathering an oriented
    patch with them gives back the plain window."""
    D = orientation.shape[1]
    axes = orientation.abs() - 1
    codes = torch.arange(1, D + 1, device=orientation.device).expand_as(orientation)
    return torch.empty_like(orientation).scatter_(1, axes, codes * orientation.sign())


def gather_windows_into(
    input: torch.Tensor,
    origins: torch.Tensor,
    out: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Like :func:`gather_windows`, writing into the contiguous buffer ``out``; returns it.
    Records no autograd: an input that requires grad is refused while grad mode is on."""
    _no_autograd("gather_windows_into", input=input, weight=weight, out=out)
    _ops.gather_windows_into.default(input, origins, weight, out)
    return out


def scatter_add_windows(
    patches: torch.Tensor,
    origins: torch.Tensor,
    spatial_size: Sequence[int],
    num_images: int,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted scatter-add: patches ``(M, C, *w)`` -> ``(acc (N, C, *S), weight_sum (N, *S))``.

    Accumulates in float32 (float64 for float64 patches). Deterministic on the CPU.
    """
    return _ops.scatter_add_windows.default(
        patches, origins, weight, int_list_arg(spatial_size, "spatial_size"),
        int_arg(num_images, "num_images"))


def scatter_add_windows_(
    patches: torch.Tensor,
    origins: torch.Tensor,
    acc: torch.Tensor,
    weight_sum: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> None:
    """Streaming form: add ``patches`` into existing ``acc`` (and ``weight_sum``) in place.
    Records no autograd: an input that requires grad is refused while grad mode is on."""
    _no_autograd("scatter_add_windows_", patches=patches, weight=weight, acc=acc,
                 weight_sum=weight_sum)
    _ops.scatter_add_windows_.default(patches, origins, weight, acc, weight_sum)


def stitch_grid(
    patches: torch.Tensor,
    spatial_size: Sequence[int],
    step: Sequence[int],
    weight: torch.Tensor | None = None,
    fill_value: float = 0.0,
    inv_weight_sum: torch.Tensor | None = None,
) -> torch.Tensor:
    """Weighted mean of all windows of a full step-back grid (qlty order) -> ``(N, C, *S)``.

    Output-centric and deterministic; returns the patches' dtype (computed in float32/64).
    ``inv_weight_sum`` (``(*S)``, ``1 / grid_weight_sum``, 0 where uncovered) is an optional
    precomputed hint; without it the kernels compute the same sums themselves (on the CPU one
    row per class of output rows, cheaper than reading the hint), bit for bit.
    """
    return _ops.stitch_grid.default(
        patches, weight, int_list_arg(spatial_size, "spatial_size"), int_list_arg(step, "step"),
        fill_value, inv_weight_sum)


def stitch_grid_into(
    patches: torch.Tensor,
    step: Sequence[int],
    out: torch.Tensor,
    weight: torch.Tensor | None = None,
    fill_value: float = 0.0,
    inv_weight_sum: torch.Tensor | None = None,
) -> torch.Tensor:
    """Like :func:`stitch_grid`, writing into the contiguous ``(N, C, *S)`` buffer ``out``.
    Records no autograd: an input that requires grad is refused while grad mode is on."""
    _no_autograd("stitch_grid_into", patches=patches, weight=weight, out=out,
                 inv_weight_sum=inv_weight_sum)
    _ops.stitch_grid_into.default(patches, weight, int_list_arg(step, "step"), fill_value, out,
                                  inv_weight_sum)
    return out


def grid_weight_sum(
    weight: torch.Tensor, spatial_size: Sequence[int], step: Sequence[int], inverse: bool = False
) -> torch.Tensor:
    """Weight sum ``(*S)`` of a full grid of windows weighted by ``weight`` (float32/64),
    computed per voxel in closed form: deterministic on every device.

    ``inverse=True`` returns ``1 / weight sum`` instead (the sum clamped to the smallest normal
    number; 0 where nothing covers a voxel), computed in the same pass: the normalisation of
    the weighted mean.
    """
    return _ops.grid_weight_sum.default(weight, int_list_arg(spatial_size, "spatial_size"),
                                        int_list_arg(step, "step"), bool(inverse))


def grid_normalize_(
    acc: torch.Tensor, weight: torch.Tensor, step: Sequence[int], fill_value: float = 0.0
) -> torch.Tensor:
    """Divide the accumulator ``acc`` ``(N, C, *S)`` of a full grid's weighted windows by the
    grid's weight sum in place (``fill_value`` where no weight covers a voxel); returns it.

    The same numbers as ``acc.mul_(grid_weight_sum(weight, S, step, inverse=True))`` then
    filling the uncovered voxels, in one pass over ``acc`` without a ``(*S)`` buffer (CPU and
    CUDA kernels; other devices run exactly those tensor ops).
    """
    _no_autograd("grid_normalize_", acc=acc, weight=weight)
    if acc.device != weight.device:
        raise ValueError(f"acc ({acc.device}) and weight ({weight.device}) must be on one device")
    if acc.device.type in ("cpu", "cuda"):
        _ops.grid_normalize_.default(acc, weight, int_list_arg(step, "step"), float(fill_value))
        return acc
    inv = grid_weight_sum(weight, acc.shape[2:], step, inverse=True)
    acc.mul_(inv)
    if fill_value != 0:  # gaps (allow_gaps) or a weight tensor with zeros
        uncovered = inv == 0
        if bool(uncovered.any()):
            acc.masked_fill_(uncovered, fill_value)
    return acc


# ---------------------------------------------------------------------------------------------
# Fake (meta) kernels: shapes only, so torch.compile / FakeTensor tracing work.


@torch.library.register_fake("fastquilt::gather_windows")
def _gather_fake(input, origins, weight, window):
    torch._check(origins.dim() == 2 and origins.shape[1] == 1 + len(window))
    return input.new_empty((origins.shape[0], input.shape[1], *window))


@torch.library.register_fake("fastquilt::gather_windows_oriented")
def _gather_oriented_fake(input, origins, orientation, window):
    torch._check(origins.dim() == 2 and origins.shape[1] == 1 + len(window))
    torch._check(orientation.dim() == 2 and orientation.shape[1] == len(window))
    return input.new_empty((origins.shape[0], input.shape[1], *window))


@torch.library.register_fake("fastquilt::gather_windows_oriented_into")
def _gather_oriented_into_fake(input, origins, orientation, out):
    return None


@torch.library.register_fake("fastquilt::gather_windows_into")
def _gather_into_fake(input, origins, weight, out):
    return None


@torch.library.register_fake("fastquilt::scatter_add_windows")
def _scatter_fake(patches, origins, weight, spatial_size, num_images):
    torch._check(origins.shape[0] == patches.shape[0])
    dt = acc_dtype(patches.dtype)
    acc = patches.new_empty((num_images, patches.shape[1], *spatial_size), dtype=dt)
    wsum = patches.new_empty((num_images, *spatial_size), dtype=dt)
    return acc, wsum


@torch.library.register_fake("fastquilt::scatter_add_windows_")
def _scatter_inplace_fake(patches, origins, weight, acc, weight_sum):
    return None


@torch.library.register_fake("fastquilt::stitch_grid")
def _stitch_grid_fake(patches, weight, spatial_size, step, fill_value, inv_weight_sum=None):
    per_image = 1
    for n in grid_counts(spatial_size, patches.shape[2:], step):
        per_image *= n
    return patches.new_empty((patches.shape[0] // per_image, patches.shape[1], *spatial_size))


@torch.library.register_fake("fastquilt::stitch_grid_into")
def _stitch_grid_into_fake(patches, weight, step, fill_value, out, inv_weight_sum=None):
    return None


@torch.library.register_fake("fastquilt::grid_weight_sum")
def _grid_weight_sum_fake(weight, spatial_size, step, inverse=False):
    return weight.new_empty(tuple(spatial_size))


@torch.library.register_fake("fastquilt::grid_normalize_")
def _grid_normalize_fake(acc, weight, step, fill_value):
    return None


# ---------------------------------------------------------------------------------------------
# Autograd: gather and scatter-add are adjoints.


def _gather_setup(ctx, inputs, output):
    input, origins, weight, window = inputs
    ctx.spatial = list(input.shape[2:])
    ctx.num_images = input.shape[0]
    ctx.in_dtype = input.dtype
    ctx.window = list(window)
    saved_input = input if (weight is not None and weight.requires_grad) else None
    ctx.save_for_backward(origins, weight, saved_input)


def _gather_backward(ctx, grad):
    origins, weight, input = ctx.saved_tensors
    grad_input = grad_weight = None
    if ctx.needs_input_grad[0]:
        acc, _ = _ops.scatter_add_windows.default(
            grad, origins, weight, ctx.spatial, ctx.num_images
        )
        grad_input = acc.to(ctx.in_dtype)
    if ctx.needs_input_grad[2]:
        plain = _ops.gather_windows.default(input, origins, None, ctx.window)
        grad_weight = (grad.to(weight.dtype) * plain.to(weight.dtype)).sum(dim=(0, 1))
    return grad_input, None, grad_weight, None


torch.library.register_autograd(
    "fastquilt::gather_windows", _gather_backward, setup_context=_gather_setup
)


def _gather_oriented_setup(ctx, inputs, output):
    input, origins, orientation, window = inputs
    ctx.spatial, ctx.num_images = list(input.shape[2:]), input.shape[0]
    ctx.in_dtype, ctx.window = input.dtype, list(window)
    ctx.save_for_backward(origins, orientation)


def _gather_oriented_backward(ctx, grad):
    """The adjoint: ``grad``'s patches turned back by the inverse orientation, scattered."""
    origins, orientation = ctx.saved_tensors
    M = grad.shape[0]
    own = torch.zeros((M, 1 + len(ctx.window)), dtype=torch.int64, device=grad.device)
    own[:, 0] = torch.arange(M, device=grad.device)
    plain = _ops.gather_windows_oriented.default(grad, own, inverse_orientation(orientation),
                                                 ctx.window)
    acc, _ = _ops.scatter_add_windows.default(plain, origins, None, ctx.spatial,
                                              ctx.num_images)
    return acc.to(ctx.in_dtype), None, None, None


torch.library.register_autograd(
    "fastquilt::gather_windows_oriented", _gather_oriented_backward,
    setup_context=_gather_oriented_setup
)


def _scatter_setup(ctx, inputs, output):
    patches, origins, weight, spatial_size, num_images = inputs
    ctx.window = list(patches.shape[2:])
    ctx.p_dtype = patches.dtype
    saved_patches = patches if (weight is not None and weight.requires_grad) else None
    ctx.save_for_backward(origins, weight, saved_patches)


def _scatter_backward(ctx, grad_acc, grad_wsum):
    origins, weight, patches = ctx.saved_tensors
    grad_patches = grad_weight = None
    if ctx.needs_input_grad[0] and grad_acc is not None:
        grad_patches = _ops.gather_windows.default(grad_acc, origins, weight, ctx.window)
        grad_patches = grad_patches.to(ctx.p_dtype)
    if ctx.needs_input_grad[2]:
        grad_weight = torch.zeros_like(weight)
        if grad_acc is not None:
            g = _ops.gather_windows.default(grad_acc, origins, None, ctx.window)
            grad_weight = grad_weight + (g * patches.to(g.dtype)).sum(dim=(0, 1))
        if grad_wsum is not None:
            g = _ops.gather_windows.default(grad_wsum.unsqueeze(1), origins, None, ctx.window)
            grad_weight = grad_weight + g.sum(dim=(0, 1))
    return grad_patches, None, grad_weight, None, None


torch.library.register_autograd(
    "fastquilt::scatter_add_windows", _scatter_backward, setup_context=_scatter_setup
)


def _stitch_grid_setup(ctx, inputs, output):
    patches, weight, spatial_size, step, fill_value, _inv = inputs
    ctx.spatial = list(spatial_size)
    ctx.step = list(step)
    ctx.window = list(patches.shape[2:])
    ctx.num_patches = patches.shape[0]
    ctx.p_dtype = patches.dtype
    ctx.save_for_backward(weight)


def _stitch_grid_backward(ctx, grad):
    (weight,) = ctx.saved_tensors
    if ctx.needs_input_grad[1]:
        raise RuntimeError(
            "fastquilt.stitch_grid: no gradient for `weight`; use scatter_add_windows "
            "(Quilt does this automatically when the weight requires grad)"
        )
    per_image = 1
    for n in grid_counts(ctx.spatial, ctx.window, ctx.step):
        per_image *= n
    n_img = ctx.num_patches // per_image
    origins = build_grid_origins(ctx.spatial, ctx.window, ctx.step, n_img, grad.device)
    dt = acc_dtype(ctx.p_dtype)
    w = weight if weight is not None else grad.new_ones(ctx.window, dtype=dt)
    # 1 / weight sum, deterministic. Uncovered voxels hold fill_value, which does not depend
    # on the patches: their inverse is 0.
    inv = _ops.grid_weight_sum.default(w, ctx.spatial, ctx.step, True)
    scaled = grad.to(dt) * inv
    grad_p = _ops.gather_windows.default(scaled, origins, weight, ctx.window)
    return grad_p.to(ctx.p_dtype), None, None, None, None, None


torch.library.register_autograd(
    "fastquilt::stitch_grid", _stitch_grid_backward, setup_context=_stitch_grid_setup
)
