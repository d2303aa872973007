"""The compiled ops (``torch.ops.fastquilt.*``) as Python functions (their fake kernels and
autograd: :mod:`fastquilt.op_registrations`).

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
from .op_registrations import (  # noqa: F401  (registers the fake kernels and autograd)
    MAX_CLASSES,
    acc_dtype,
    inverse_orientation,
    label_dtype,
)

_ops = torch.ops.fastquilt


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


def gather_reads_in_place(input: torch.Tensor) -> bool:
    """Whether :func:`gather_windows` / :func:`gather_windows_into` read ``input`` where it
    lies: a contiguous tensor, or a CPU tensor whose rows (last axis) are contiguous, such as a
    crop of a larger volume (unless its memory meets the ``out`` buffer's). Other layouts are
    copied whole on every call."""
    return input.is_contiguous() or (input.device.type == "cpu" and input.dim() > 0
                                     and input.stride(-1) == 1)


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


def grid_inverse_rows(
    weight: torch.Tensor, spatial_size: Sequence[int], step: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalisation of :func:`grid_normalize_` by classes of rows (CPU): ``(inverse_rows
    (K, S[-1]), row_class int64 (*S[:-1]))``. Output row ``r`` (a ``(z, y)`` pair in 3D, ``y``
    in 2D) of every image and channel is divided by the grid's weight sum by multiplying it by
    ``inverse_rows[row_class[r]]`` (0 where no weight covers a voxel). Rows covered by windows
    at the same offsets share a class: about ``(step + a few) ** (D - 1)`` rows however large
    ``S`` is. For :func:`scatter_add_grid_batch_`."""
    _cpu_only("grid_inverse_rows", weight.device, "grid_weight_sum(..., inverse=True)")
    return _ops.grid_inverse_rows.default(weight, int_list_arg(spatial_size, "spatial_size"),
                                          int_list_arg(step, "step"))


def _cpu_only(op: str, device: torch.device, instead: str) -> None:
    """The CPU-only ops name what to use on other devices (meta: traced, fine)."""
    if device.type not in ("cpu", "meta"):
        raise ValueError(f"{op} runs on the CPU; for tensors on {device} use {instead}")


def scatter_add_grid_batch_(
    patches: torch.Tensor,
    origins: torch.Tensor,
    first: int,
    acc: torch.Tensor,
    inverse_rows: torch.Tensor,
    row_class: torch.Tensor,
    weight: torch.Tensor | None = None,
    fill_value: float = 0.0,
) -> torch.Tensor:
    """Add one batch of a full grid's windows into ``acc`` ``(N, C, *S)`` (CPU), zeroing and
    normalising it plane by plane on the way; returns ``acc``.

    ``origins`` ``(M, 1 + D)`` are the whole grid's, sorted by ``(n, start_0)`` (qlty order
    is) with every plane ``(n, z)`` covered; ``patches`` ``(B, C, *window)`` are windows
    ``first .. first + B - 1``. A plane that no earlier window covers starts from zero (``acc``
    may hold anything there); a plane that no later window covers is then divided by the
    grid's weight sum (``inverse_rows``, ``row_class``: :func:`grid_inverse_rows`), with
    ``fill_value`` where no weight covers a voxel. Called for every batch in order, this gives
    the bits of ``acc.zero_()``, :func:`scatter_add_windows_` per batch and
    :func:`grid_normalize_`, without their two extra passes over ``acc``. Records no autograd.
    """
    _cpu_only("scatter_add_grid_batch_", acc.device, "acc.zero_(), scatter_add_windows_ per batch "
              "and grid_normalize_")
    _no_autograd("scatter_add_grid_batch_", patches=patches, weight=weight, acc=acc)
    _ops.scatter_add_grid_batch_.default(patches, origins, int(first), weight, acc,
                                         inverse_rows, row_class, float(fill_value))
    return acc


def class_epilogue(
    acc: torch.Tensor,
    weight_sum: torch.Tensor | None = None,
    fill_value: float = 0.0,
    probability: bool = False,
    entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per voxel of ``acc`` ``(N, C, *S)`` (float32/64 class scores): the mean ``acc /
    weight_sum`` (:mod:`fastquilt.normalize`'s rule, ``fill_value`` where ``weight_sum`` is 0;
    ``weight_sum`` None: ``acc`` is the mean already), then in the same pass ``labels`` ``(N,
    *S)``, the argmax over classes (ties and NaN as ``torch.argmax``; uint8 up to 256 classes,
    uint16 up to 65535), and when asked for the mean of the chosen class and the entropy
    ``-sum_c p_c log p_c`` of the mean (``(N, *S)``, ``acc``'s dtype; None otherwise).
    No autograd (labels are not differentiable)."""
    labels, prob, ent = _ops.class_epilogue.default(acc, weight_sum, float(fill_value),
                                                    bool(probability), bool(entropy))
    return labels, (prob if probability else None), (ent if entropy else None)
