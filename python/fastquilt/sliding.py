"""Sliding-window inference in memory with bounded memory: gather ``batch_size`` windows at a
time, run the model, accumulate the weighted predictions and normalise them (on the CPU plane
by plane, each plane zeroed by the first batch that covers it and normalised by the last,
while it is in cache; the batches and the overlap of host and GPU: :mod:`.batches`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import buffers, ops
from ._args import device_arg, float_dtype_arg
from .batches import predictions
from .normalize import remembered_inverse_rows
from .quilt import Quilt


def check_model(model) -> None:
    """The model must be callable (a ``torch.nn.Module`` or a function)."""
    if not callable(model):
        raise TypeError("model must be callable (a torch.nn.Module or function)")


def check_model_output(y, batch: int, window: tuple[int, ...]) -> None:
    """A model's output for a batch of ``batch`` windows must be a floating tensor
    ``(batch, C_out, *window)``."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"model must return a tensor, got {type(y).__name__}")
    if y.dim() != len(window) + 2 or y.shape[0] != batch or tuple(y.shape[2:]) != window:
        raise ValueError(
            f"model output must have shape ({batch}, C_out, {', '.join(map(str, window))}) for "
            f"a batch of {batch} windows, got {tuple(y.shape)}; sliding-window inference needs "
            "a model that keeps the window size")
    if not y.is_floating_point():
        raise TypeError(f"model output must be floating point, got {y.dtype}")


def sliding_window_tensor(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    window: int | Sequence[int],
    step: int | Sequence[int],
    batch_size: int = 8,
    weight: str | torch.Tensor | None = "gaussian",
    *,
    border: int | Sequence[int] | None = None,
    border_weight: float = 0.1,
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    out_dtype: torch.dtype | None = None,
    progress: bool = False,
    fill_value: float = 0.0,
    allow_gaps: bool = False,
) -> torch.Tensor:
    """Apply ``model`` to every window of the tensor ``x`` ``(N, C, *S)`` and stitch a weighted
    mean ``(N, C_out, *S)``; see :func:`fastquilt.sliding_window` for the arguments."""
    check_model(model)
    check_input(x)
    q = Quilt(x.shape[2:], window, step, border=border, border_weight=border_weight,
              weight=weight, allow_gaps=allow_gaps, fill_value=fill_value)
    device = device_arg(device) or x.device
    out_device = device_arg(out_device, "out_device") or x.device
    out_dtype = float_dtype_arg(out_dtype)
    N = x.shape[0]
    mean = None
    out_dt = out_dtype

    def run(xb: torch.Tensor) -> torch.Tensor:
        y = model(xb)
        check_model_output(y, xb.shape[0], q.window)
        return y

    with torch.no_grad():
        for lo, _, y in predictions(run, x, q, batch_size, device, out_device, progress):
            if mean is None:
                dt = ops.acc_dtype(y.dtype)
                # (a dropped output of an earlier call is reused: no page faults)
                mean = GridMean(q, buffers.empty((N, y.shape[1], *q.spatial_shape), dt,
                                                 out_device), q.origins(N, out_device),
                                fill_value)
                out_dt = out_dt or y.dtype
            mean.add(lo, y if ops.acc_dtype(y.dtype) == dt else y.to(dt))
    acc = mean.finish()
    return acc if acc.dtype == out_dt else acc.to(out_dt)


class GridMean:
    """The weighted mean of a whole grid's windows in ``acc`` ``(N, C, *S)`` (any contents),
    added batch by batch in qlty order. Every window runs once, so the weight sum is the
    grid's (closed form): only the weighted windows are summed. On the CPU each plane is
    zeroed by the first batch that covers it and normalised by the last, while it is in cache
    (:func:`planewise_normalisation`); elsewhere ``acc`` is zeroed here and normalised by
    :meth:`finish`."""

    def __init__(self, q: Quilt, acc: torch.Tensor, origins: torch.Tensor,
                 fill_value: float) -> None:
        self.q, self.acc, self.origins, self.fill_value = q, acc, origins, fill_value
        self.weight = q.weight_for(acc.dtype, acc.device)
        self.planes = planewise_normalisation(q, acc)
        if self.planes is None:
            acc.zero_()

    def add(self, lo: int, y: torch.Tensor) -> None:
        """Add the predictions ``y`` ``(B, C, *window)`` of windows ``lo .. lo + B - 1``."""
        if self.planes is None:
            ops.scatter_add_windows_(y, self.origins[lo:lo + y.shape[0]], self.acc, None,
                                     weight=self.weight)
        else:
            ops.scatter_add_grid_batch_(y, self.origins, lo, self.acc, *self.planes,
                                        weight=self.weight, fill_value=self.fill_value)

    def finish(self) -> torch.Tensor:
        """``acc``, the mean (``fill_value`` where no weight covers a voxel), once every batch
        is added."""
        if self.planes is None:
            ops.grid_normalize_(self.acc, self.weight, self.q.step, self.fill_value)
        return self.acc


def planewise_normalisation(q: Quilt, acc: torch.Tensor):
    """``(inverse_rows, row_class)`` (:func:`ops.grid_inverse_rows`) where the accumulator
    ``acc`` is zeroed and normalised plane by plane as the batches are added (a CPU
    accumulator and windows that cover every plane along the first axis); else None: a pass
    to zero it and one to normalise it."""
    if acc.device.type != "cpu" or q.step[0] > q.window[0]:
        return None
    return remembered_inverse_rows(q.weight_for(acc.dtype, acc.device), q.spatial_shape, q.step)


def check_input(x) -> None:
    """``x`` must be a tensor ``(N, C, Y, X)`` or ``(N, C, Z, Y, X)`` with ``N >= 1``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (N, C, Y, X) or (N, C, Z, Y, X), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:  # the output's channel count comes from running the model
        raise ValueError("x has no images (N = 0): there is nothing to run the model on")
