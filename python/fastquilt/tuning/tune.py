"""``tune``: the searches in order within one time budget, and the settings they choose."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .._args import device_arg
from ..arrays import read_box
from ..outofcore import resolve_model
from ..quilt import Quilt
from .budget import Budget
from .disk import search_out_of_core
from .machine import machine_info
from .search import choose_step, crop_for, search_batch, search_step, search_variants

SHARES = {"batch size": 0.45, "step": 0.3, "variants": 0.1, "out of core": 0.25}


def _per_axis(v, ndim: int, name: str) -> tuple[int, ...]:
    v = tuple(v) if isinstance(v, Sequence) else (v,)
    if len(v) == 1:
        v = v * ndim
    if len(v) != ndim or not all(isinstance(i, int) and i > 0 for i in v):
        raise ValueError(f"{name} must be one positive int or {ndim} (one per spatial axis), "
                         f"got {v}")
    return v


def check_args(shape: Sequence[int], window, step, budget_seconds: float, max_batch: int,
               min_overlap: float) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """The window and step per axis; a ValueError naming the argument otherwise."""
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"the image's spatial shape must be 2 or 3 positive ints (Y X or "
                         f"Z Y X), got {tuple(shape)}")
    window = _per_axis(window, len(shape), "--window")
    if any(w > s for w, s in zip(window, shape)):
        raise ValueError(f"--window {window} is larger than the image {tuple(shape)}: use a "
                         "window that fits")
    if step is not None:
        step = _per_axis(step, len(shape), "--step")
        if any(s > w for s, w in zip(step, window)):
            raise ValueError(f"--step {step} is larger than --window {window}: windows would "
                             "leave gaps; use a step <= the window")
    if not budget_seconds > 0:
        raise ValueError(f"--budget-seconds must be > 0, got {budget_seconds}")
    if max_batch < 1:
        raise ValueError(f"--max-batch must be >= 1, got {max_batch}")
    if not 0 <= min_overlap < 1:
        raise ValueError(f"--min-overlap must be in [0, 1), got {min_overlap}")
    return window, step


def run_tune(model: Callable, *, window, step=None, x=None, shape: Sequence[int] | None = None,
             channels: int = 1, device: str | torch.device | None = None,
             budget_seconds: float = 60.0, max_batch: int = 1024, min_overlap: float = 0.25,
             weight: str = "gaussian", chunks: int | None = None,
             progress: bool = True) -> dict:
    """Measure ``model`` (a callable or :class:`~fastquilt.outofcore.ModelFactory`) on ``x``
    (an ``(N, C, *S)`` array; out-of-core settings too when it is chunked, e.g. zarr) or on
    random data of spatial ``shape`` with ``channels`` channels, within ``budget_seconds``.
    Returns the results with ``settings`` (``window``, ``step``, ``batch_size``) and, for a
    chunked input, ``out_of_core`` (``unit``, ``reader_threads``, ``writer_threads``)."""
    dev = device_arg(device) or torch.device("cpu")
    if (x is None) == (shape is None):
        raise ValueError("give exactly one of x (an array) and shape (spatial, for random data)")
    full = tuple(x.shape[2:]) if x is not None else tuple(shape)
    n_images = x.shape[0] if x is not None else 1
    window, step = check_args(full, window, step, budget_seconds, max_batch, min_overlap)
    work_step = step or tuple(max(1, w // 2) for w in window)
    extent = crop_for(full, window)
    if x is not None:
        image = read_box(x, (0, slice(None), *(slice(0, e) for e in extent)),
                         copy=True).unsqueeze(0).float()
    else:
        image = torch.randn(1, channels, *extent, generator=torch.Generator().manual_seed(0))
    model = resolve_model(model, dev)
    out_of_core = x is not None and getattr(x, "chunks", None) is not None
    shares = {k: v for k, v in SHARES.items() if (k != "variants" or dev.type == "cuda") and
              (k != "out of core" or out_of_core)}
    budget = Budget(budget_seconds, shares, progress)
    q = Quilt(extent, window, work_step, weight=weight)
    total = Quilt(full, window, work_step, weight=weight).num_windows * n_images
    res: dict = {"context": {"device": str(dev), "image_shape": [n_images, image.shape[1],
                                                                 *full],
                             "window": list(window), "budget_seconds": budget_seconds,
                             "machine": machine_info(dev)}}
    try:
        res["batch"] = search_batch(model, image, q, dev, budget, min(max_batch, total))
        batch = res["batch"]["chosen"]
        budget.phase("step")
        res["step"] = {"rows": search_step(model, image, window, full, batch, dev, budget,
                                           weight)}
        chosen_step = step or choose_step(window, full, min_overlap, weight)
        res["step"]["chosen"] = list(chosen_step)
        res["step"]["rule"] = ("given (--step)" if step else
                               f"fewest windows with overlap >= {min_overlap}")
        if dev.type == "cuda":
            budget.phase("variants")
        res["variants"] = search_variants(model, image, window, chosen_step, batch, dev,
                                          budget, weight)
        if out_of_core:
            res["out_of_core"] = search_out_of_core(model, x, window, chosen_step, batch, dev,
                                                    budget, weight, chunks)
    finally:
        budget.close()
    res["settings"] = {"window": list(window), "step": list(chosen_step), "batch_size": batch}
    ooc = res.get("out_of_core", {}).get("chosen")
    res["out_of_core_settings"] = {} if not ooc else {
        "unit": ooc["unit"], "chunks": ooc["chunks"],  # (units hold whole chunks of this size)
        "reader_threads": ooc["reader_threads"], "writer_threads": 2}
    res["skipped"] = budget.skipped
    res["elapsed_s"] = budget.elapsed()
    vox = math.prod(window)
    res["context"]["window_voxels"] = vox
    return res
