"""The in-memory searches of ``tune`` with the user's model: batch size (throughput and peak
memory, doubling until out of memory, a plateau or the budget), step (time per output voxel
against overlap) and the stitching variant (deterministic or atomic scatter on CUDA)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from .. import ops
from ..quilt import Quilt
from ..sliding import check_model_output, sliding_window_tensor
from ..transfer import to_device
from .budget import Budget
from .memory import is_out_of_memory, peak_memory, release
from .timing import measure, single_call

PLATEAU = 1.05  # a batch size must beat the best throughput so far by 5% to keep doubling
TIE = 1.05  # the chosen batch: the smallest within 5% of the best throughput
STEP_FRACTIONS = (0.5, 0.625, 0.75, 0.875, 1.0)  # steps measured, as fractions of the window


def batch_call(model: Callable, image: torch.Tensor, q: Quilt, batch: int,
               device: torch.device) -> tuple[Callable[[], None], int]:
    """One batch of ``sliding_window``'s loop: gather ``batch`` windows of ``image`` (repeated
    when it has fewer), run the model on ``device``, add the weighted predictions into an
    accumulator. Returns the call and the bytes of its input and output."""
    image = image.contiguous()  # (the gather copies some strided images whole on every call)
    org = q.origins(image.shape[0], image.device)
    org = org[torch.arange(batch) % org.shape[0]]
    buf = torch.empty((batch, image.shape[1], *q.window), dtype=image.dtype,
                      device=image.device)
    state: dict = {}

    def call() -> None:
        with torch.no_grad():
            patches = ops.gather_windows_into(image, org, buf)
            y = model(to_device(patches, device))
            check_model_output(y, batch, q.window)
            if "acc" not in state:
                dt = ops.acc_dtype(y.dtype)
                state["acc"] = torch.zeros((image.shape[0], y.shape[1], *q.spatial_shape),
                                           dtype=dt, device=device)
                state["w"], state["org"] = q.weight_for(dt, device), org.to(device)
            ops.scatter_add_windows_(y.to(state["acc"].dtype), state["org"], state["acc"],
                                     None, weight=state["w"])

    return call, buf.numel() * buf.element_size()


def search_batch(model: Callable, image: torch.Tensor, q: Quilt, device: torch.device,
                 budget: Budget, max_batch: int) -> dict:
    """Throughput and peak memory at batch sizes 1, 2, 4, ... up to ``max_batch``: stops at
    an out-of-memory error (recovered: buffers freed, the CUDA cache emptied), when doubling
    no longer beats the best throughput by 5%, or when the next size does not fit the
    budget. Chooses the smallest batch within 5% of the best throughput."""
    budget.phase("batch size")
    vox = math.prod(q.window)
    rows, stop, best = [], "max batch", 0.0
    sizes = [1 << i for i in range(max(1, max_batch).bit_length()) if 1 << i <= max_batch]
    last_call = 0.0
    for i, b in enumerate(sizes):
        if i and not budget.affords(3 * 2 * last_call + budget.slice(len(sizes) - i),
                                    f"batch {b}"):
            stop = "budget"
            break
        try:
            call, nbytes = batch_call(model, image, q, b, device)
            last_call = single_call(call, device)  # the first call: allocations, warm-up
            mem, method = peak_memory(call, device, 2 * nbytes)
            t, _ = measure(call, min_run_time=budget.slice(len(sizes) - i),
                           label="tune", sub_label=f"batch {b}", description="batch")
        except Exception as e:  # noqa: BLE001 - anything but out of memory is raised again
            if not is_out_of_memory(e):
                raise
            del e
            call = None
            release(device)
            rows.append({"batch_size": b, "out_of_memory": True})
            stop = "out of memory"
            break
        finally:
            budget.tick()
        call = None
        release(device)
        thr = b / t.median
        rows.append({"batch_size": b, "seconds_per_batch": t.median, "iqr_s": t.iqr,
                     "windows_per_s": thr, "voxels_per_s": thr * vox, "peak_bytes": mem,
                     "memory_method": method})
        if thr < PLATEAU * best:
            stop = "plateau"
            break
        best = max(best, thr)
    ok = [r for r in rows if not r.get("out_of_memory")]
    if not ok:
        raise RuntimeError(f"the model ran out of memory at batch size 1 on {device} with "
                           f"window {q.window}: use a smaller window or another device")
    top = max(r["windows_per_s"] for r in ok)
    chosen = min(r["batch_size"] for r in ok if r["windows_per_s"] * TIE >= top)
    return {"rows": rows, "stopped": stop, "chosen": chosen}


def candidate_steps(window: Sequence[int]) -> list[tuple[int, ...]]:
    """Steps from window/2 to the window, the same fraction on every axis."""
    steps = {tuple(max(1, round(w * f)) for w in window) for f in STEP_FRACTIONS}
    return sorted(steps)


def crop_for(image_shape: Sequence[int], window: Sequence[int], windows: int = 3):
    """The spatial extent measured for the steps: ``windows`` windows per axis, or the image."""
    return tuple(min(s, windows * w) for s, w in zip(image_shape, window))


def search_step(model: Callable, image: torch.Tensor, window: tuple[int, ...],
                full_shape: Sequence[int], batch: int, device: torch.device, budget: Budget,
                weight: str) -> list[dict]:
    """Time per output voxel of a whole ``sliding_window`` run on ``image`` (a crop) at each
    candidate step, largest step first (the cheapest); steps that do not fit the budget are
    skipped. ``predicted_s``: the full image's time at that step (its windows times the
    measured time per window)."""
    rows, steps = [], candidate_steps(window)[::-1]
    voxels = math.prod(image.shape[2:])
    for i, step in enumerate(steps):
        q = Quilt(image.shape[2:], window, step, weight=weight)

        def run(q=q):
            sliding_window_tensor(model, image, window, q.step, batch, weight, device=device,
                                  out_device=device)

        first = single_call(run, device)
        budget.tick()
        if not budget.affords(3 * first, f"step {step}"):
            continue
        t, _ = measure(run, min_run_time=budget.slice(len(steps) - i), label="tune",
                       sub_label=f"step {step}", description="step")
        budget.tick()
        full = Quilt(tuple(full_shape), window, step, weight=weight)
        per_window = t.median / q.num_windows
        rows.append({"step": list(step), "overlap": 1 - step[0] / window[0],
                     "windows": q.num_windows, "seconds": t.median,
                     "seconds_per_output_voxel": t.median / voxels,
                     "predicted_s": per_window * full.num_windows * image.shape[0]})
    return sorted(rows, key=lambda r: r["overlap"])


def choose_step(window: Sequence[int], full_shape: Sequence[int], min_overlap: float,
                weight: str = "gaussian") -> tuple[int, ...]:
    """The candidate step with overlap at least ``min_overlap`` that needs the fewest windows
    on the full image (the time is the windows' time: the measured table shows it); of steps
    needing equally few, the smallest (more overlap at the same cost)."""
    ok = [s for s in candidate_steps(window) if 1 - s[0] / window[0] >= min_overlap - 1e-9]
    ok = ok or [candidate_steps(window)[0]]
    return min(ok, key=lambda s: (Quilt(tuple(full_shape), tuple(window), s,
                                        weight=weight).num_windows, s))


def search_variants(model: Callable, image: torch.Tensor, window: tuple[int, ...],
                    step: tuple[int, ...], batch: int, device: torch.device, budget: Budget,
                    weight: str) -> dict:
    """Atomic against deterministic scatter-add (``torch.use_deterministic_algorithms``) in
    a whole run: a choice on CUDA only (the CPU scatter is deterministic)."""
    if device.type != "cuda":
        return {"note": "CPU: the scatter-add is deterministic; no variant to choose"}
    out = {}
    for name, det in (("atomic", False), ("deterministic", True)):
        q = Quilt(image.shape[2:], window, step, weight=weight)

        def run(det=det, q=q):
            prev = torch.are_deterministic_algorithms_enabled()
            torch.use_deterministic_algorithms(det)
            try:
                sliding_window_tensor(model, image, window, q.step, batch, weight,
                                      device=device, out_device=device)
            finally:
                torch.use_deterministic_algorithms(prev)

        first = single_call(run, device)
        if not budget.affords(3 * first, f"{name} scatter"):
            continue
        t, _ = measure(run, min_run_time=budget.slice(2), label="tune", sub_label=name,
                       description="variant")
        out[name] = t.median
        budget.tick()
    if len(out) == 2:
        out["deterministic_overhead"] = out["deterministic"] / out["atomic"] - 1
    return out
