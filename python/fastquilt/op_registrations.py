"""The fake kernels and autograd of the compiled ops (``torch.ops.fastquilt.*``), registered
on import (:mod:`fastquilt.ops` imports this), and the small helpers they share with it.

* ``gather_windows`` and ``scatter_add_windows`` are each other's adjoint; each one's backward
  calls the other registered op, so double backward and ``torch.compile`` work.
* ``stitch_grid`` (full regular grid, fused mean) differentiates through the gather.
"""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (runs the TORCH_LIBRARY initialisers)
from .grid import axis_row_classes, build_grid_origins, grid_counts

_ops = torch.ops.fastquilt


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation dtype: float64 for float64 data, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def inverse_orientation(orientation: torch.Tensor) -> torch.Tensor:
    """The orientation rows ``(M, D)`` that undo ``orientation``'s: gathering an oriented
    patch with them gives back the plain window."""
    D = orientation.shape[1]
    axes = orientation.abs() - 1
    codes = torch.arange(1, D + 1, device=orientation.device).expand_as(orientation)
    return torch.empty_like(orientation).scatter_(1, axes, codes * orientation.sign())


MAX_CLASSES = 65535  # labels are uint8 up to 256 classes, uint16 up to this


def label_dtype(classes: int) -> torch.dtype:
    """The smallest unsigned integer dtype that holds the labels of ``classes`` classes."""
    return torch.uint8 if classes <= 256 else torch.uint16


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


@torch.library.register_fake("fastquilt::grid_inverse_rows")
def _grid_inverse_rows_fake(weight, spatial_size, step):
    sizes = [int(v) for v in spatial_size]
    torch._check(len(sizes) == weight.dim() == len(step) and len(sizes) in (2, 3))
    axes = zip(sizes[:-1], weight.shape[:-1], step[:-1])
    classes = 1
    for S, w, s in axes:
        classes *= axis_row_classes(S, int(w), int(s))
    return (weight.new_empty((classes, sizes[-1])),
            weight.new_empty(tuple(sizes[:-1]), dtype=torch.int64))


@torch.library.register_fake("fastquilt::scatter_add_grid_batch_")
def _scatter_grid_batch_fake(patches, origins, first, weight, acc, inverse_rows, row_class,
                             fill_value):
    return None


@torch.library.register_fake("fastquilt::class_epilogue")
def _class_epilogue_fake(acc, weight_sum, fill_value, probability, entropy):
    torch._check(acc.dim() >= 3 and 1 <= acc.shape[1] <= MAX_CLASSES)
    shape = (acc.shape[0], *acc.shape[2:])
    labels = acc.new_empty(shape, dtype=label_dtype(acc.shape[1]))
    return (labels, acc.new_empty(shape if probability else (0,)),
            acc.new_empty(shape if entropy else (0,)))


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
