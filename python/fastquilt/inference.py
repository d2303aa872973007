"""``sliding_window``: the one entry point of sliding-window inference, in memory
(:mod:`fastquilt.sliding`) or out of core into zarr (:mod:`fastquilt.outofcore`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .ensemble_sliding import sliding_window_outputs
from .outofcore import sliding_window_zarr
from .sliding import sliding_window_tensor


def sliding_window(
    model: Callable[[torch.Tensor], torch.Tensor] | Sequence[Callable],
    x: torch.Tensor | Any,
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
    outputs: str | Sequence[str] = "mean",
    tta: str = "none",
    activation: str | None = None,
    out=None,
    **zarr_options,
) -> torch.Tensor | dict[str, torch.Tensor] | Any:
    """Apply ``model`` to every window of ``x`` ``(N, C, *S)`` and stitch a weighted mean.

    Only ``batch_size`` windows exist at a time: peak memory is O(batch + output), not
    O(all patches). The model runs on ``device`` (default: ``x``'s); predictions
    ``(B, C_out, *window)`` (``C_out`` may differ from ``C``) are accumulated in float32 on
    ``out_device`` (default: ``x``'s device). Returns ``(N, C_out, *S)`` in ``out_dtype`` (a
    floating dtype or its name; default: the model output's dtype). Runs under
    ``torch.no_grad()``.

    Out of core: with ``out=`` a path, or when ``x`` is a zarr / numpy memmap / dask array, the
    result is written to a zarr v3 array at ``out`` by
    :func:`fastquilt.outofcore.sliding_window_zarr` (bounded memory, resumable; extra keyword
    arguments such as ``chunks``, ``unit``, ``shards``, ``compressors``, ``max_memory`` and
    ``client`` (a ``dask.distributed.Client``) go there) and the opened zarr array is
    returned (a zarr group of one array per output when ``outputs`` is not just ``"mean"``).

    Ensembles and uncertainty: ``model`` may be a list of models (each window is gathered
    once and run through every one); ``tta`` (``"none"``, ``"flips"``, ``"all"``:
    :mod:`fastquilt.tta`) adds test-time augmentations, inverted on the predictions;
    ``activation`` (``None``/``"none"``, ``"softmax"`` over channels, ``"sigmoid"``) is applied
    to every prediction before averaging; ``outputs`` names what to return, any of ``mean``,
    ``std``, ``variance`` (over members, augmentations and overlapping windows, as defined in
    :mod:`fastquilt.reductions`), ``labels`` (argmax of the mean, uint8/uint16),
    ``probability`` (the mean of the chosen class) and ``entropy`` (need softmax). A name
    returns that tensor ``(N, c, *S)``, a list or tuple a dict ``{name: tensor}``; with
    only class outputs the C-channel mean is never materialised beyond the accumulator (in
    memory) or the units in flight (out of core).
    """
    if out is not None or not isinstance(x, torch.Tensor):
        if out is None:
            raise ValueError(
                "x is not a torch.Tensor: give out= (a path for the zarr v3 output) to run out "
                "of core, or pass a tensor")
        if out_dtype is not None:
            zarr_options["out_dtype"] = out_dtype
        if not _plain(model, outputs, tta, activation):
            zarr_options.update(outputs=outputs, tta=tta, activation=activation)
        return sliding_window_zarr(model, x, out, window, step, batch_size, weight,
                                   border=border, border_weight=border_weight, device=device,
                                   fill_value=fill_value, allow_gaps=allow_gaps,
                                   progress=progress, **zarr_options)
    if zarr_options:
        raise TypeError(f"unexpected arguments {sorted(zarr_options)} (only with out=)")
    if not _plain(model, outputs, tta, activation):
        result = sliding_window_outputs(
            model, x, window, step, batch_size, weight, outputs=outputs, tta=tta,
            activation=activation, border=border, border_weight=border_weight, device=device,
            out_device=out_device, out_dtype=out_dtype, progress=progress,
            fill_value=fill_value, allow_gaps=allow_gaps)
        return result[outputs] if isinstance(outputs, str) else result
    return sliding_window_tensor(model, x, window, step, batch_size, weight, border=border,
                                 border_weight=border_weight, device=device,
                                 out_device=out_device, out_dtype=out_dtype, progress=progress,
                                 fill_value=fill_value, allow_gaps=allow_gaps)


def _plain(model, outputs, tta, activation) -> bool:
    """One model, its weighted mean, no augmentation or activation: today's path."""
    return (not isinstance(model, (list, tuple)) and isinstance(outputs, str)
            and outputs == "mean" and tta == "none" and activation in (None, "none"))
