"""The calls of fastquilt's public API that tools/ab_compare.py runs on two builds.

``run_all(scratch)`` calls every area function below with fixed seeds and returns a flat dict
``"area/name" -> output`` (tensors, numpy arrays, ints, floats, strings). A call that raises is
recorded as the string ``"!raised <Type>: <message>"`` instead of aborting, so a call that
fails in one build only shows up as a difference. Only public paths are used (``fastquilt.*``,
``fastquilt.compat.*``, ``fastquilt.outofcore.sliding_window_zarr`` / ``progress_of``,
``fastquilt.distributed.ModelFactory``, ``python -m fastquilt``), so the file runs unchanged
on the builds before and after a refactor of the package's layout.

Shapes are small (2D 37x53, 3D 19x23x29, windows 8-16): the whole dump takes well under a
minute on 2 cores.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fastquilt as fq

S2 = (37, 53)
S3 = (19, 23, 29)
W2 = (12, 16)
W3 = (8, 10, 12)
ST2 = (7, 9)
ST3 = (5, 6, 8)
WEIGHT_KINDS = (None, "border", "flat", "gaussian", "hann", "linear")
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


# ---- recording ------------------------------------------------------------------------------
class Recorder:
    """Collects the outputs of one area under ``"<area>/<name>"`` keys, flattening tuples,
    lists, dicts and dataclasses, and writing the scratch folder as ``<scratch>`` in text."""

    def __init__(self, area: str, out: dict[str, Any], scratch: Path) -> None:
        self.area, self.out, self.scratch = area, out, scratch

    def put(self, name: str, value: Any) -> None:
        """Record ``value`` (flattened) under ``name``."""
        key = f"{self.area}/{name}"
        if isinstance(value, torch.Tensor):
            self.out[key] = value.detach().cpu().clone()
        elif isinstance(value, np.ndarray):
            self.out[key] = np.array(value)  # a plain copy (also of a memmap)
        elif isinstance(value, (bool, int, float, type(None))):
            self.out[key] = value
        elif isinstance(value, (str, torch.dtype, torch.device, torch.Size)):
            self.out[key] = self.text(str(value))
        elif isinstance(value, (np.generic,)):
            self.out[key] = value.item()
        elif isinstance(value, (tuple, list)) and all(map(_is_scalar, value)):
            self.out[key] = tuple(self.text(v) if isinstance(v, str) else v for v in value)
        elif isinstance(value, (tuple, list)):
            self.out[key + "#len"] = len(value)
            for i, v in enumerate(value):
                self.put(f"{name}[{i}]", v)
        elif isinstance(value, dict):
            self.out[key + "#keys"] = self.text(repr(sorted(map(str, value))))
            for k, v in value.items():
                self.put(f"{name}.{k}", v)
        elif type(value).__module__.split(".")[0] == "zarr":
            self.put(name, np.asarray(value[...]))  # (a zarr Array is also a dataclass)
            self.out[key + "#zarr"] = self.text(zarr_summary(value))
        elif hasattr(value, "shape") and hasattr(value, "dtype") and hasattr(value, "__getitem__"):
            self.put(name, np.asarray(value[...]))  # dask and other arrays: their contents
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            self.put(name, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
        elif type(value).__repr__ is object.__repr__:  # (its module path is layout, not API)
            self.out[key] = f"<{type(value).__name__} object>"
        else:
            self.out[key] = self.text(f"{type(value).__name__}: {value!r}")

    def text(self, s: str) -> str:
        """``s`` without the scratch folder's path and object addresses (both differ by run)."""
        return _ADDRESS.sub(" at 0x?", s.replace(str(self.scratch), "<scratch>"))

    def call(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Record ``fn(*args, **kwargs)``, or the exception it raises; return the result."""
        try:
            value = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (every failure is an output)
            self.out[f"{self.area}/{name}"] = self.error(e)
            return None
        self.put(name, value)
        return value

    def meth(self, name: str, obj: Any, attr: str, *args: Any, **kwargs: Any) -> Any:
        """Record ``obj.attr(*args, **kwargs)``; a missing attribute is recorded like any
        other exception (it does not stop the area)."""
        return self.call(name, lambda: getattr(obj, attr)(*args, **kwargs))

    def error(self, e: BaseException) -> str:
        """The recorded form of an exception."""
        return self.text(f"!raised {type(e).__name__}: {e}")


def zarr_summary(arr: Any) -> str:
    """A zarr array's layout and attributes as JSON (its contents are recorded apart)."""
    return json.dumps({"shape": arr.shape, "chunks": arr.chunks, "shards": arr.shards,
                       "dtype": str(arr.dtype), "fill_value": repr(arr.fill_value),
                       "attrs": dict(arr.attrs)}, sort_keys=True, default=str)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str, type(None)))


def rand(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, seed: int = 0):
    """A fixed pseudo-random tensor (ints in [-50, 50) for integer dtypes)."""
    g = torch.Generator().manual_seed(seed)
    if dtype.is_floating_point:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    lo = 0 if dtype in (torch.uint8, torch.bool) else -50
    return torch.randint(lo, 50, shape, generator=g).to(dtype)


def sparse_labels(shape: tuple[int, ...], seed: int, classes: int = 3, keep: float = 0.02,
                  dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Labels in ``[0, classes)`` on a ``keep`` fraction of voxels, -1 elsewhere."""
    g = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, classes, shape, generator=g)
    lab[torch.rand(shape, generator=g) >= keep] = -1
    return lab.to(dtype)


# ---- module-level models (picklable; fingerprinted by code) ---------------------------------
def model_affine(p: torch.Tensor) -> torch.Tensor:
    """Keeps shape and dtype."""
    return p * 2 - 1


def model_three_channels(p: torch.Tensor) -> torch.Tensor:
    """C channels -> 3 channels (sum, max, mean over the input channels)."""
    return torch.cat([p.sum(1, keepdim=True), p.amax(1, keepdim=True),
                      p.mean(1, keepdim=True)], 1)


def model_float32(p: torch.Tensor) -> torch.Tensor:
    """Predicts float32 from any input dtype."""
    return p.float().sin()


def build_conv_model() -> torch.nn.Module:
    """A fixed 2D convolution 1 -> 2 channels (for ModelFactory)."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(1, 2, 3, padding=1)
    return conv.eval()


def unstitch_pair(q):
    """``fq.unstitch_pair(q, ...)``, or the quilt method of builds that have no such function
    (the same call either way)."""
    if hasattr(fq, "unstitch_pair"):
        return lambda *a, **k: fq.unstitch_pair(q, *a, **k)
    return q.unstitch_pair


# ---- areas ----------------------------------------------------------------------------------
def area_api(r: Recorder) -> None:
    """The public names and the parameters (names, kinds, defaults) of every public callable
    and public method."""
    import fastquilt.compat as compat
    import fastquilt.distributed as distributed
    import fastquilt.outofcore as outofcore

    r.put("__all__", sorted(fq.__all__))
    r.put("__version__", fq.__version__)
    for name in sorted(fq.__all__):
        obj = getattr(fq, name)
        r.call(f"fq.{name}", signature_text, obj)
        if isinstance(obj, type):
            for meth in sorted(m for m in dir(obj) if not m.startswith("_")):
                r.call(f"fq.{name}.{meth}", signature_text, getattr(obj, meth))
    for mod, names in ((compat, ("NCYXQuilt", "NCZYXQuilt", "LargeNCYXQuilt", "LargeNCZYXQuilt",
                                 "weed_sparse_classification_training_pairs_2D",
                                 "weed_sparse_classification_training_pairs_3D")),
                       (outofcore, ("sliding_window_zarr", "progress_of")),
                       (distributed, ("ModelFactory",))):
        for name in names:
            r.call(f"{mod.__name__}.{name}", signature_text, getattr(mod, name))


def signature_text(obj: Any) -> str:
    """Parameters of a callable without annotations (a property: "property")."""
    import inspect

    if isinstance(obj, property):
        return "property"
    if not callable(obj):
        return f"attribute {type(obj).__name__}"
    params = inspect.signature(obj).parameters.values()
    return ", ".join(f"{p.kind.name}:{p.name}" + ("" if p.default is p.empty
                                                   else f"={p.default!r}") for p in params)


def area_grid(r: Recorder) -> None:
    """Grid geometry: axis counts and starts, origins, Grid with and without gaps."""
    for S, w, s in ((37, 12, 7), (53, 16, 9), (16, 16, 4), (20, 5, 7), (19, 8, 5)):
        r.meth(f"axis_count/{S}_{w}_{s}", fq, "axis_count", S, w, s)
        r.meth(f"axis_starts/{S}_{w}_{s}", fq, "axis_starts", S, w, s)
    r.meth("grid_origins/2d", fq, "grid_origins", S2, W2, ST2, 2)
    r.meth("grid_origins/3d", fq, "grid_origins", S3, W3, ST3, 1)
    r.meth("grid_origins/int_args", fq, "grid_origins", S2, 10, 6, 3)
    r.meth("grid_origins/gaps", fq, "grid_origins", S2, 8, 11, 1)
    for name, g in (("2d", fq.Grid(S2, W2, ST2)), ("3d", fq.Grid(S3, W3, ST3)),
                    ("gaps", fq.Grid(S3, 6, 9, allow_gaps=True))):
        r.put(f"Grid/{name}/attrs", (g.spatial_shape, g.window, g.step, g.counts, g.starts,
                                     g.num_windows, g.ndim, g.allow_gaps, repr(g)))
        r.meth(f"Grid/{name}/origins", g, "origins", 2)
        r.meth(f"Grid/{name}/origins_indices", g, "origins", 2, indices=[0, 3, g.num_windows + 1])


def area_weights(r: Recorder) -> None:
    """Window weights in 2D and 3D, several dtypes and parameters."""
    for win in (W2, W3, (9, 9)):
        tag = "x".join(map(str, win))
        r.meth(f"border_weight/{tag}/b2", fq, "border_weight", win, 2)
        r.meth(f"border_weight/{tag}/b2_w0", fq, "border_weight", win, 2, 0.0)
        r.meth(f"border_weight/{tag}/none", fq, "border_weight", win, None)
        r.meth(f"border_mask/{tag}", fq, "border_mask", win, (1,) * len(win))
        r.meth(f"gaussian/{tag}", fq, "gaussian_weight", win)
        r.meth(f"gaussian/{tag}/sigma_min", fq, "gaussian_weight", win, 0.3, 0.05)
        r.meth(f"hann/{tag}", fq, "hann_weight", win)
        r.meth(f"linear/{tag}", fq, "linear_weight", win)
        for dt in (torch.float64, torch.float16, torch.bfloat16):
            r.meth(f"gaussian/{tag}/{dt}", fq, "gaussian_weight", win, dtype=dt)
            r.meth(f"hann/{tag}/{dt}", fq, "hann_weight", win, dtype=dt)
            r.meth(f"linear/{tag}/{dt}", fq, "linear_weight", win, dtype=dt)
        for kind in WEIGHT_KINDS:
            r.meth(f"make_weight/{tag}/{kind}", fq, "make_weight", kind, win, 1, 0.25)
        r.meth(f"make_weight/{tag}/tensor", fq, "make_weight", rand(win, seed=1).abs() + 0.1, win)


def area_ops(r: Recorder) -> None:
    """The custom ops directly: gather, scatter-add, stitch_grid, weight sums, in all dtypes."""
    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        origins = fq.grid_origins(S, W, ST, 2)
        w32 = fq.gaussian_weight(W)
        for dt in (*FLOATS, torch.int32, torch.int64, torch.uint8):
            x = rand((2, 3, *S), dt, seed=10 + D)
            p = r.meth(f"{D}d/gather/{dt}", fq, "gather_windows", x, origins, W)
            if dt.is_floating_point:
                wd = w32.double() if dt == torch.float64 else w32
                r.meth(f"{D}d/gather_w/{dt}", fq, "gather_windows", x, origins, W, wd)
                r.meth(f"{D}d/scatter/{dt}", fq, "scatter_add_windows", p, origins, S, 2)
                r.meth(f"{D}d/scatter_w/{dt}", fq, "scatter_add_windows", p, origins, S, 2, wd)
                r.meth(f"{D}d/stitch/{dt}", fq, "stitch_grid", p, S, ST, wd)
                r.meth(f"{D}d/stitch_noweight/{dt}", fq, "stitch_grid", p, S, ST)
            buf = torch.empty((origins.shape[0], 3, *W), dtype=dt)
            r.meth(f"{D}d/gather_into/{dt}", fq, "gather_windows_into", x, origins, buf)
        p = rand((origins.shape[0], 2, *W), seed=20 + D)
        acc = torch.zeros((2, 2, *S))
        ws = torch.zeros((2, *S))
        half = origins.shape[0] // 2
        fq.scatter_add_windows_(p[:half], origins[:half], acc, ws, w32)
        r.call(f"{D}d/scatter_inplace_half", lambda a=acc, b=ws: (a, b))
        r.meth(f"{D}d/scatter_inplace_rest", fq, "scatter_add_windows_", p[half:], origins[half:],
               acc, ws, w32)
        r.put(f"{D}d/scatter_inplace_final", (acc, ws))
        r.meth(f"{D}d/grid_weight_sum", fq, "grid_weight_sum", w32, S, ST)
        r.meth(f"{D}d/grid_weight_sum_inv", fq, "grid_weight_sum", w32, S, ST, True)
        r.meth(f"{D}d/grid_weight_sum_f64", fq, "grid_weight_sum", w32.double(), S, ST)
        inv = fq.grid_weight_sum(w32, S, ST, inverse=True)
        r.meth(f"{D}d/stitch_hint", fq, "stitch_grid", p, S, ST, w32, 0.0, inv)
        out = torch.empty((2, 2, *S))
        r.meth(f"{D}d/stitch_into", fq, "stitch_grid_into", p, ST, out, w32)
        out = torch.empty((2, 2, *S))
        r.meth(f"{D}d/stitch_into_hint", fq, "stitch_grid_into", p, ST, out, w32, 0.0, inv)
        acc, _ = fq.scatter_add_windows(p, origins, S, 2, w32)
        r.meth(f"{D}d/grid_normalize", fq, "grid_normalize_", acc, w32, ST, -3.0)
        # gaps: step > window leaves voxels uncovered -> fill_value
        og = fq.grid_origins(S, 6, 9, 1)
        pg = rand((og.shape[0], 1, *(6,) * D), seed=30 + D)
        r.meth(f"{D}d/stitch_gaps_fill", fq, "stitch_grid", pg, S, (9,) * D, None, 7.5)
        r.meth(f"{D}d/stitch_gaps_nan", fq, "stitch_grid", pg, S, (9,) * D, None, float("nan"))
        r.meth(f"{D}d/grid_weight_sum_gaps", fq, "grid_weight_sum", torch.ones((6,) * D), S,
               (9,) * D, True)
        acc, _ = fq.scatter_add_windows(pg, og, S, 1)
        r.meth(f"{D}d/grid_normalize_gaps", fq, "grid_normalize_", acc, torch.ones((6,) * D),
               (9,) * D, 2.0)


def area_autograd(r: Recorder) -> None:
    """Gradients of gather, scatter-add, stitch_grid and Quilt.stitch (incl. a trainable
    weight) and a double backward."""
    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        origins = fq.grid_origins(S, W, ST, 2)
        w = fq.hann_weight(W)
        for dt in (torch.float32, torch.float64):
            wd = w.to(dt)
            x = rand((2, 2, *S), dt, seed=40 + D).requires_grad_()
            g = rand((origins.shape[0], 2, *W), dt, seed=41 + D)
            (fq.gather_windows(x, origins, W, wd) * g).sum().backward()
            r.put(f"{D}d/{dt}/gather_grad", x.grad)
            p = rand((origins.shape[0], 2, *W), dt, seed=42 + D).requires_grad_()
            acc, wsum = fq.scatter_add_windows(p, origins, S, 2, wd)
            (acc * rand(acc.shape, dt, seed=43)).sum().backward()
            r.put(f"{D}d/{dt}/scatter_grad", p.grad)
            p2 = p.detach().clone().requires_grad_()
            mean = fq.stitch_grid(p2, S, ST, wd)
            (mean * rand(mean.shape, dt, seed=44)).sum().backward()
            r.put(f"{D}d/{dt}/stitch_grad", p2.grad)
        x = rand((1, 1, *S), torch.float64, seed=45).requires_grad_()
        (gx,) = torch.autograd.grad(fq.gather_windows(x, origins[:5], W).square().sum(), x,
                                    create_graph=True)
        (ggx,) = torch.autograd.grad(gx.sum(), x)
        r.put(f"{D}d/double_backward", (gx, ggx))
        tw = (fq.gaussian_weight(W) + 0.5).requires_grad_()
        q = fq.Quilt(S, W, ST, weight=tw)
        p = rand((2 * q.num_windows, 2, *W), seed=46 + D).requires_grad_()
        mean, wsum = q.stitch(p)
        (mean * rand(mean.shape, seed=47)).sum().backward()
        r.put(f"{D}d/trainable/stitch", (mean, wsum, p.grad, tw.grad))
        r.meth(f"{D}d/trainable/weight_sum", q, "weight_sum", 2)
        xq = rand((1, 1, *S), seed=48 + D).requires_grad_()
        q.unstitch(xq).pow(3).sum().backward()
        r.put(f"{D}d/quilt_unstitch_grad", xq.grad)


def area_quilt(r: Recorder) -> None:
    """Quilt in 2D/3D with every weight kind and float dtype: unstitch, stitch, out=, pairs,
    cleaning, plan, accumulator."""
    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        for kind in (*WEIGHT_KINDS, "tensor"):
            weight = rand(W, seed=50).abs() + 0.2 if kind == "tensor" else kind
            q = fq.Quilt(S, W, ST, border=2, border_weight=0.3, weight=weight)
            r.put(f"{D}d/{kind}/attrs", (q.spatial_shape, q.window, q.step, q.ndim,
                                         q.num_windows, q.counts, q.border, repr(q)))
            r.put(f"{D}d/{kind}/weight", q.weight)
            for dt in FLOATS:
                x = rand((2, 2, *S), dt, seed=51 + D)
                p = r.meth(f"{D}d/{kind}/{dt}/unstitch", q, "unstitch", x)
                r.meth(f"{D}d/{kind}/{dt}/stitch", q, "stitch", p * 3 + 1)
        q = fq.Quilt(S, W, ST, border=1, weight="gaussian")
        x = rand((2, 2, *S), seed=52 + D)
        r.meth(f"{D}d/positions", q, "positions", 2)
        r.meth(f"{D}d/positions_no_n", q, "positions", 2, include_n=False)
        r.meth(f"{D}d/weight_sum", q, "weight_sum", 2)
        r.meth(f"{D}d/weight_sum_f64", q, "weight_sum", 1, torch.float64)
        r.meth(f"{D}d/border_mask", q, "border_mask")
        p = q.unstitch(x)
        r.meth(f"{D}d/unstitch_out", q, "unstitch", x, out=torch.empty_like(p))
        r.meth(f"{D}d/stitch_out", q, "stitch", p, out=torch.empty_like(x))
        r.meth(f"{D}d/stitch_int", q, "stitch", p.to(torch.int32))
        labels = sparse_labels((2, *S), seed=53 + D, keep=0.01)
        r.call(f"{D}d/unstitch_pair", unstitch_pair(q), x, labels, -1)
        r.call(f"{D}d/unstitch_pair_chan", unstitch_pair(q), x, labels[:, None], -1)
        r.meth(f"{D}d/clean_pairs", fq, "clean_pairs", q, x, labels, -1)
        r.meth(f"{D}d/clean_pairs_frac", fq, "clean_pairs", q, x, labels, -1, min_labelled=2,
               min_fraction=0.01)
        _, stats = r.meth(f"{D}d/plan", fq, "select_windows", q, labels, -1) or (None, None)
        r.call(f"{D}d/plan_table", lambda s=stats: s.table())
        r.call(f"{D}d/plan_str", lambda s=stats: str(s))
        r.call(f"{D}d/plan_rates", lambda s=stats: (s.duplication_rate, s.reduction_factor,
                                                    s.kept_fraction))
        r.meth(f"{D}d/plan_class_min", fq, "select_windows", q, labels, -1, class_min={1: 2})
        area_accumulator(r, q, x, f"{D}d")
        qg = fq.Quilt(S, 6, 9, weight="hann", allow_gaps=True, fill_value=-2.5)
        pg = qg.unstitch(x)
        r.call(f"{D}d/gaps/unstitch", lambda t=pg: t)
        r.meth(f"{D}d/gaps/stitch", qg, "stitch", pg)
        r.meth(f"{D}d/gaps/stitch_bf16", qg, "stitch", pg.bfloat16())


def area_accumulator(r: Recorder, q: fq.Quilt, x: torch.Tensor, tag: str) -> None:
    """StitchAccumulator: batches added in a shuffled order, float32/64 buffers, finalize."""
    p = q.unstitch(x)
    order = torch.randperm(p.shape[0], generator=torch.Generator().manual_seed(7))
    for dt in (torch.float32, torch.float64):
        acc = fq.StitchAccumulator(q, 2, 2, dtype=dt)
        for lo in range(0, order.numel() - 3, 5):
            acc.add(p[order[lo:lo + 5]], order[lo:lo + 5])
        r.meth(f"{tag}/acc/{dt}/partial", acc, "finalize")
        r.meth(f"{tag}/acc/{dt}/partial_fill", acc, "finalize", fill_value=9.0)
        acc.add(p[order[lo + 5:]].half(), order[lo + 5:].tolist())
        r.meth(f"{tag}/acc/{dt}/final", acc, "finalize")
        r.meth(f"{tag}/acc/{dt}/final_bf16", acc, "finalize", torch.bfloat16)
        r.put(f"{tag}/acc/{dt}/counts", (acc.num_images, acc.windows_added, acc.total_windows))
        r.meth(f"{tag}/acc/{dt}/again", acc, "add", p[:1], [0])
    acc = fq.StitchAccumulator(q, 2, 2)
    acc.add(p, torch.arange(p.shape[0])[:, None])
    r.meth(f"{tag}/acc/column_indices", acc, "finalize")
    via_quilt = r.meth(f"{tag}/acc/quilt_accumulator", q, "accumulator", 2, 2)
    if via_quilt is not None:
        via_quilt.add(p, range(p.shape[0]))
        r.meth(f"{tag}/acc/quilt_accumulator_mean", via_quilt, "finalize")


def area_sliding(r: Recorder) -> None:
    """In-memory sliding_window: weights, dtypes, channel changes, gaps, out_dtype, batches."""
    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        x = rand((2, 2, *S), seed=60 + D)
        for kind in (*WEIGHT_KINDS, "tensor"):
            weight = rand(W, seed=61).abs() + 0.2 if kind == "tensor" else kind
            r.meth(f"{D}d/{kind}", fq, "sliding_window", model_affine, x, W, ST, 5, weight,
                   border=2)
        for dt in FLOATS:
            r.meth(f"{D}d/dtype/{dt}", fq, "sliding_window", model_affine, x.to(dt), W, ST, 7)
        r.meth(f"{D}d/to_float32_from_f16", fq, "sliding_window", model_float32, x.half(), W, ST)
        r.meth(f"{D}d/three_channels", fq, "sliding_window", model_three_channels, x, W, ST, 3,
               "hann")
        r.meth(f"{D}d/out_dtype_f64", fq, "sliding_window", model_affine, x, W, ST,
               out_dtype=torch.float64)
        r.meth(f"{D}d/out_dtype_str", fq, "sliding_window", model_affine, x, W, ST,
               out_dtype="bfloat16")
        r.meth(f"{D}d/batch_1", fq, "sliding_window", model_affine, x[:1], W, ST, 1, "linear")
        r.meth(f"{D}d/batch_all", fq, "sliding_window", model_affine, x, W, ST, 10_000, "flat")
        r.meth(f"{D}d/gaps", fq, "sliding_window", model_affine, x, 6, 9, 4, "gaussian",
               allow_gaps=True, fill_value=-1.5)
        r.meth(f"{D}d/gaps_nan", fq, "sliding_window", model_affine, x, 6, 9, 4, "flat",
               allow_gaps=True, fill_value=float("nan"))


def area_outofcore(r: Recorder, scratch: Path) -> None:
    """sliding_window with out= (zarr) and sliding_window_zarr: inputs as tensor, numpy,
    memmap and zarr; dtypes; weights; fill_value/gaps; resume; progress_of; ModelFactory."""
    import zarr

    from fastquilt.distributed import ModelFactory
    from fastquilt.outofcore import progress_of, sliding_window_zarr

    d = scratch / "ooc"
    d.mkdir()
    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        x = rand((2, 2, *S), seed=70 + D)
        chunks = (8,) * D
        kw = {"chunks": chunks}
        for kind in ("gaussian", "border", "flat", "hann", "linear"):
            r.meth(f"{D}d/{kind}", fq, "sliding_window", model_affine, x, W, ST, 5, kind,
                   border=2 if kind == "border" else None, out=str(d / f"{D}{kind}.zarr"), **kw)
        r.meth(f"{D}d/tensor_weight", fq, "sliding_window", model_affine, x, W, ST, 5,
               rand(W, seed=71).abs() + 0.2, out=str(d / f"{D}tw.zarr"), **kw)
        for dt in FLOATS:
            r.meth(f"{D}d/in_{dt}", fq, "sliding_window", model_affine, x.to(dt), W, ST, 6,
                   out=str(d / f"{D}{str(dt)[6:]}.zarr"), **kw)
        for odt in ("float16", torch.float64):
            r.meth(f"{D}d/out_{odt}", fq, "sliding_window", model_affine, x, W, ST, 6,
                   out=str(d / f"{D}o{str(odt)[-2:]}.zarr"), out_dtype=odt, **kw)
        r.meth(f"{D}d/three_channels", fq, "sliding_window", model_three_channels, x, W, ST, 4,
               out=str(d / f"{D}c3.zarr"), **kw)
        r.meth(f"{D}d/fill_value", fq, "sliding_window", model_affine, x, W, ST, 4, "flat",
               out=str(d / f"{D}fill.zarr"), fill_value=3.25, **kw)
        r.meth(f"{D}d/gaps", fq, "sliding_window", model_affine, x, 6, 9, 4, "flat",
               out=str(d / f"{D}gaps.zarr"), allow_gaps=True, fill_value=-1.0, **kw)
        xn = x.numpy()
        r.meth(f"{D}d/numpy_in", fq, "sliding_window", model_affine, xn, W, ST,
               out=str(d / f"{D}np.zarr"), **kw)
        mm = np.lib.format.open_memmap(str(d / f"{D}in.npy"), "w+", np.float32, xn.shape)
        mm[...] = xn
        mm.flush()
        mm = np.load(str(d / f"{D}in.npy"), mmap_mode="r")
        r.meth(f"{D}d/memmap_in", fq, "sliding_window", model_affine, mm, W, ST,
               out=str(d / f"{D}mm.zarr"), **kw)
        zin = zarr.create_array(store=str(d / f"{D}in.zarr"), shape=xn.shape, dtype="float32",
                                chunks=(1, 2, *chunks))
        zin[...] = xn
        path = str(d / f"{D}z.zarr")
        r.call(f"{D}d/zarr_in", sliding_window_zarr, model_affine, zin, path, W, ST, 4,
               "hann", chunks=chunks, unit=tuple(2 * c for c in chunks))
        r.meth(f"{D}d/zarr_in_reopened", zarr, "open_array", path, mode="r")
        r.call(f"{D}d/progress_of", progress_of, path)
        r.call(f"{D}d/resume_same", sliding_window_zarr, model_affine, zin, path, W, ST, 4,
               "hann", chunks=chunks, unit=tuple(2 * c for c in chunks))
        r.call(f"{D}d/resume_other_model", sliding_window_zarr, model_float32, zin, path, W,
               ST, 4, "hann", chunks=chunks, unit=tuple(2 * c for c in chunks))
        r.call(f"{D}d/resume_other_step", sliding_window_zarr, model_affine, zin, path, W, 4,
               4, "hann", chunks=chunks, unit=tuple(2 * c for c in chunks))
    x = rand((1, 1, *S2), seed=72)
    factory = ModelFactory(build_conv_model)
    r.put("factory_key", factory.key)
    r.call("factory", sliding_window_zarr, factory, x, str(d / "factory.zarr"), W2, ST2, 4,
           chunks=16)  # refused without a client: a factory is not callable
    r.call("factory_built", sliding_window_zarr, factory.build("cpu"), x,
           str(d / "built.zarr"), W2, ST2, 4, chunks=16)
    r.call("factory_built_progress", progress_of, str(d / "built.zarr"))


def area_distributed(r: Recorder, scratch: Path) -> None:
    """One sliding_window run on an in-process dask cluster (1 worker, threads)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:
        r.put("skipped", r.error(e))
        return
    from fastquilt.distributed import ModelFactory

    x = rand((2, 1, *S2), seed=80)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        r.meth("factory", fq, "sliding_window", ModelFactory(build_conv_model), x, W2, ST2, 4,
               "gaussian", out=str(scratch / "dist.zarr"), chunks=16, client=client)
        r.meth("function", fq, "sliding_window", model_affine, x, W2, ST2, 4, "flat",
               out=str(scratch / "dist2.zarr"), chunks=16, client=client)


def area_cleaning(r: Recorder, scratch: Path) -> None:
    """clean_pairs / select_windows / CleaningStats on tensors, numpy, memmap, zarr labels."""
    import zarr

    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        q = fq.Quilt(S, W, ST, border=2)
        x = rand((2, 1, *S), seed=90 + D)
        lab = sparse_labels((2, *S), seed=91 + D, keep=0.004)
        r.meth(f"{D}d/clean_pairs", fq, "clean_pairs", q, x, lab, -1)
        r.meth(f"{D}d/clean_pairs_chan", fq, "clean_pairs", q, x, lab[:, None], -1)
        r.meth(f"{D}d/clean_pairs_min2", fq, "clean_pairs", q, x, lab, -1, min_labelled=2)
        r.meth(f"{D}d/clean_pairs_none_kept", fq, "clean_pairs", q, x, torch.full_like(lab, -1),
               -1)
        labf = lab.to(torch.float32)
        labf[labf < 0] = float("nan")
        r.meth(f"{D}d/clean_pairs_nan", fq, "clean_pairs", q, x, labf, float("nan"))
        r.meth(f"{D}d/select_uint8", fq, "select_windows", q, (lab + 1).to(torch.uint8), 0)
        r.meth(f"{D}d/select_class_min", fq, "select_windows", q, lab, -1,
               class_min={0: 1, 2: 1}, per_class_stats=False)
        r.meth(f"{D}d/select_fraction", fq, "select_windows", q, lab, -1, min_fraction=0.002)
        r.meth(f"{D}d/select_numpy", fq, "select_windows", q, lab.numpy(), -1)
        np.save(scratch / f"lab{D}.npy", lab.numpy())
        mm = np.load(scratch / f"lab{D}.npy", mmap_mode="r")
        r.meth(f"{D}d/select_memmap", fq, "select_windows", q, mm, -1)
        z = zarr.create_array(store=str(scratch / f"lab{D}.zarr"), shape=lab.shape,
                              dtype="int64", chunks=(1, *(7,) * D))
        z[...] = lab.numpy()
        kept, stats = r.meth(f"{D}d/select_zarr", fq, "select_windows", q, z, -1)
        r.meth(f"{D}d/stats_table", stats, "table")
        dense = sparse_labels((2, *S), seed=92 + D, keep=0.5)
        r.meth(f"{D}d/select_dense", fq, "select_windows", q, dense, -1)
        r.meth(f"{D}d/select_dense_numpy", fq, "select_windows", q, dense.numpy(), -1)
    r.put("CleaningStats/fields", [f.name for f in dataclasses.fields(fq.CleaningStats)])


def area_dataset(r: Recorder, scratch: Path) -> None:
    """PatchDataset items (augmented over epochs) from tensors, memmaps and zarr arrays."""
    import zarr

    for D, S, W, ST in ((2, S2, W2, ST2), (3, S3, W3, ST3)):
        q = fq.Quilt(S, (W[-1],) * D, ST, border=1)
        x = rand((2, 2, *S), seed=100 + D)
        lab = sparse_labels((2, *S), seed=101 + D, keep=0.01)
        np.save(scratch / f"ds_x{D}.npy", x.numpy())
        np.save(scratch / f"ds_y{D}.npy", lab.numpy())
        zx = zarr.create_array(store=str(scratch / f"ds_x{D}.zarr"), shape=x.shape,
                               dtype="float32", chunks=(1, 2, *(9,) * D))
        zx[...] = x.numpy()
        sources = {
            "tensor": (x, lab),
            "memmap": (np.load(scratch / f"ds_x{D}.npy", mmap_mode="r"),
                       np.load(scratch / f"ds_y{D}.npy", mmap_mode="r")),
            "zarr": (zx, lab.numpy()),
        }
        for name, (vol, labels) in sources.items():
            ds = r.meth(f"{D}d/{name}/init", fq, "PatchDataset", vol, labels, q, -1, augment=True,
                        seed=5)
            if ds is None:
                continue
            r.put(f"{D}d/{name}/len", len(ds))
            r.put(f"{D}d/{name}/indices", ds.indices)
            r.call(f"{D}d/{name}/stats", lambda s=ds: s.stats.table())
            for epoch in (0, 1, 3):
                ds.set_epoch(epoch)
                for i in (0, 1, len(ds) - 1):
                    item = r.meth(f"{D}d/{name}/e{epoch}/item{i}", ds, "__getitem__", i)
                    if i == 0 and item is not None:
                        r.meth(f"{D}d/{name}/e{epoch}/frac", ds, "labelled_fraction", item[1])
        ds = fq.PatchDataset(x, None, q, indices=[0, 4, 9], dtype=torch.float64)
        r.put(f"{D}d/nolabels", [ds[i] for i in range(len(ds))])
        ds = fq.PatchDataset(x, lab[:, None], q, -1, min_labelled=2)
        r.put(f"{D}d/channel_labels", (len(ds), ds[0], ds[len(ds) - 1]))
        r.meth(f"{D}d/out_of_range", ds, "__getitem__", len(ds))


def area_compat(r: Recorder) -> None:
    """qlty drop-ins (fastquilt.* and fastquilt.compat.*): NCYXQuilt / NCZYXQuilt, weeding."""
    import fastquilt.compat as compat

    for mod_name, mod in (("fq", fq), ("compat", compat)):
        q2 = mod.NCYXQuilt(S2[0], S2[1], W2, ST2, (2, 3), 0.2)
        q3 = mod.NCZYXQuilt(*S3, W3, ST3, 1)
        for D, q, S in ((2, q2, S2), (3, q3, S3)):
            t = f"{mod_name}/{D}d"
            x = rand((2, 2, *S), seed=110 + D)
            lab = sparse_labels((2, *S), seed=111 + D, keep=0.01)
            r.put(f"{t}/attrs", (q.window, q.step, q.border, q.border_weight, q.get_times()))
            r.meth(f"{t}/border_tensor", q, "border_tensor")
            p = r.meth(f"{t}/unstitch", q, "unstitch", x)
            r.meth(f"{t}/unstitch_pos", q, "unstitch", x, return_positions=True,
                   include_n_position=True)
            for mode in ("absolute", "relative"):
                for norm in (True, False):
                    r.meth(f"{t}/posch/{mode}/{norm}", q, "unstitch", x,
                           add_positional_channels=True, normalize_positions=norm,
                           position_mode=mode)
            r.meth(f"{t}/stitch", q, "stitch", p * 2)
            r.meth(f"{t}/stitch_f64", q, "stitch", p.double())
            pair = r.meth(f"{t}/pair", q, "unstitch_data_pair", x, lab, -1)
            r.meth(f"{t}/pair_pos", q, "unstitch_data_pair", x, lab, -1, return_positions=True)
            weed = getattr(mod, f"weed_sparse_classification_training_pairs_{D}D")
            r.call(f"{t}/weed", weed, pair[0], pair[1], -1, q.border_tensor())
            r.call(f"{t}/weed_none_kept", weed, pair[0], torch.full_like(pair[1], -1), -1,
                   q.border_tensor())


def area_compat_large(r: Recorder, scratch: Path) -> None:
    """LargeNCYXQuilt / LargeNCZYXQuilt: unstitch_next -> model -> stitch -> return_mean."""
    import fastquilt.compat as compat

    cases = (
        ("2d", S2, lambda m, f: m.LargeNCYXQuilt(f, 2, S2[0], S2[1], W2, ST2, (2, 2), 0.1)),
        ("3d", S3, lambda m, f: m.LargeNCZYXQuilt(f, 2, *S3, W3, ST3, 1, 0.2)),
    )
    for mod_name, mod in (("fq", fq), ("compat", compat)):
        for tag, S, make in cases:
            for variant in ("plain", "std", "renorm"):
                t = f"{mod_name}/{tag}/{variant}"
                q = make(mod, str(scratch / f"large_{mod_name}_{tag}_{variant}"))
                x = rand((2, 2, *S), seed=120)
                r.put(f"{t}/attrs", (q.get_times(), q.N_chunks, q.border_tensor()))
                r.call(f"{t}/loop", run_large_loop, q, x, variant)
        q = cases[0][2](mod, str(scratch / f"large_{mod_name}_pair"))
        x = rand((2, 1, *S2), seed=121)
        lab = sparse_labels((2, *S2), seed=122, keep=0.01)
        r.meth(f"{mod_name}/pair", q, "unstitch_and_clean_sparse_data_pair", x, lab, -1)
        r.meth(f"{mod_name}/unstitch_pos", q, "unstitch", x, 3, True, True)
        r.meth(f"{mod_name}/return_mean_empty", q, "return_mean")


def run_large_loop(q: Any, x: torch.Tensor, variant: str) -> tuple:
    """qlty's out-of-core loop; returns the zarr mean (and std) read back, and the errors of a
    double stitch and of running past the last window."""
    seen = []
    while True:
        try:
            i, patch = q.unstitch_next(x)
        except StopIteration as e:
            stop = str(e)
            break
        pred = model_three_channels(patch[None])
        var = pred.abs() * 0.5 if variant == "std" else None
        q.stitch(pred, i, patch_var=var)
        seen.append(i)
    try:
        q.stitch(pred, 0, patch_var=var)
        again = "no error"
    except ValueError as e:
        again = f"ValueError: {e}"
    if variant == "std":
        mean, std = q.return_mean(std=True)
        return seen, stop, again, np.asarray(mean[...]), np.asarray(std[...])
    if variant == "renorm":
        mean = q.return_mean(False, True)
        return seen, stop, again, np.asarray(mean[...])
    return seen, stop, again, np.asarray(q.return_mean()[...])


def area_cli(r: Recorder, scratch: Path) -> None:
    """``python -m fastquilt plan ...``: stdout, stderr and exit code."""
    np.save(scratch / "cli_lab.npy", sparse_labels(S3, seed=130, keep=0.01).numpy())
    runs = {
        "usage": [],
        "3d": ["plan", "--shape", *map(str, S3), "--window", "8", "--step", "5"],
        "2d_border": ["plan", "--shape", "37", "53", "--window", "12", "16", "--step", "7",
                      "9", "--border", "2"],
        "labels": ["plan", "--shape", *map(str, S3), "--window", "8", "--step", "6",
                   "--border", "1", "--labels", str(scratch / "cli_lab.npy")],
        "labels_min2": ["plan", "--shape", *map(str, S3), "--window", "8", "--step", "6",
                        "--labels", str(scratch / "cli_lab.npy"), "--min-labelled", "2"],
        "too_large": ["plan", "--shape", "10", "10", "--window", "12", "--step", "4"],
        "missing_labels": ["plan", "--shape", "10", "10", "--window", "4", "--step", "4",
                           "--labels", str(scratch / "nope.npy")],
    }
    for name, argv in runs.items():
        r.call(name, run_cli, argv)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``python -m fastquilt <argv>`` with this process's interpreter and sys.path."""
    boot = ("import sys, runpy; sys.path[:0] = " + repr([p for p in sys.path if p]) +
            "; sys.argv[0] = 'fastquilt'; runpy.run_module('fastquilt', run_name='__main__', "
            "alter_sys=True)")
    res = subprocess.run([sys.executable, "-S", "-c", boot, *argv], capture_output=True,
                         text=True, timeout=120)
    return res.returncode, res.stdout, res.stderr


def area_errors(r: Recorder) -> None:
    """Typical bad inputs: the exception type and message of each."""
    q = fq.Quilt(S2, W2, ST2, border=2)
    x = rand((1, 2, *S2))
    p = q.unstitch(x)
    origins = fq.grid_origins(S2, W2, ST2, 1)
    bad: dict[str, Callable[[], Any]] = {
        "window_too_large": lambda: fq.Quilt(S2, 40, 8),
        "window_too_large_3d": lambda: fq.Grid(S3, (8, 30, 8), 4),
        "step_0": lambda: fq.Quilt(S2, 8, 0),
        "step_gt_window": lambda: fq.Quilt(S2, 8, 9),
        "step_float": lambda: fq.Quilt(S2, 8, 4.0),
        "window_wrong_len": lambda: fq.Quilt(S2, (8, 8, 8), 4),
        "shape_1d": lambda: fq.Quilt((37,), 8, 4),
        "border_too_large": lambda: fq.Quilt(S2, 8, 4, border=4),
        "border_negative": lambda: fq.Quilt(S2, 8, 4, border=-1),
        "border_weight_range": lambda: fq.Quilt(S2, 8, 4, border=1, border_weight=1.5),
        "weight_unknown": lambda: fq.Quilt(S2, 8, 4, weight="cosine"),
        "weight_numpy": lambda: fq.Quilt(S2, 8, 4, weight=np.ones((8, 8))),
        "weight_shape": lambda: fq.Quilt(S2, 8, 4, weight=torch.ones(8, 9)),
        "weight_int": lambda: fq.Quilt(S2, 8, 4, weight=torch.ones(8, 8, dtype=torch.int32)),
        "weight_negative": lambda: fq.Quilt(S2, 8, 4, weight=-torch.ones(8, 8)),
        "weight_nan": lambda: fq.Quilt(S2, 8, 4, weight=torch.full((8, 8), float("nan"))),
        "weight_tiny": lambda: fq.Quilt(S2, 8, 4, weight=torch.full((8, 8), 1e-30)),
        "gaussian_sigma": lambda: fq.gaussian_weight((8, 8), 0.0),
        "unstitch_wrong_shape": lambda: q.unstitch(rand((1, 2, 36, 53))),
        "unstitch_3d_tensor": lambda: q.unstitch(rand((2, *S2))),
        "unstitch_out_shape": lambda: q.unstitch(x, out=torch.empty(3, 2, *W2)),
        "unstitch_out_dtype": lambda: q.unstitch(x, out=torch.empty_like(p, dtype=torch.float64)),
        "stitch_wrong_count": lambda: q.stitch(p[:-1]),
        "stitch_wrong_window": lambda: q.stitch(rand((p.shape[0], 2, 12, 15))),
        "stitch_out_shape": lambda: q.stitch(p, out=torch.empty(1, 3, *S2)),
        "stitch_out_requires_grad": lambda: q.stitch(p.requires_grad_(), out=torch.empty_like(x)),
        "gather_origins_float": lambda: fq.gather_windows(x, origins.float(), W2),
        "gather_origin_oob": lambda: fq.gather_windows(x, origins + 30, W2),
        "gather_window_float": lambda: fq.gather_windows(x, origins, (12.0, 16)),
        "gather_weight_dtype": lambda: fq.gather_windows(x, origins, W2, torch.ones(W2).double()),
        "scatter_int_patches": lambda: fq.scatter_add_windows(p.int(), origins, S2, 1),
        "scatter_num_images_float": lambda: fq.scatter_add_windows(p, origins, S2, 1.0),
        "stitch_grid_bad_step": lambda: fq.stitch_grid(p, S2, (0, 9)),
        "grid_weight_sum_int": lambda: fq.grid_weight_sum(torch.ones(W2, dtype=torch.int64),
                                                           S2, ST2),
        "accumulator_dtype": lambda: fq.StitchAccumulator(q, 1, 2, dtype=torch.float16),
        "accumulator_indices_float": lambda: fq.StitchAccumulator(q, 1, 2).add(p[:2],
                                                                               [0.0, 1.0]),
        "accumulator_indices_oob": lambda: fq.StitchAccumulator(q, 1, 2).add(p[:2], [0, 999]),
        "accumulator_indices_2d": lambda: fq.StitchAccumulator(q, 1, 2).add(
            p[:4], [[0, 1], [2, 3]]),
        "missing_label_unrepresentable": lambda: fq.clean_pairs(q,
            x, sparse_labels((1, *S2), 1).to(torch.uint8), -1),
        "missing_label_float_for_int": lambda: fq.clean_pairs(q,
            x, sparse_labels((1, *S2), 1), 0.5),
        "missing_label_none_select": lambda: fq.select_windows(q, sparse_labels((1, *S2), 1),
                                                               None),
        "labels_wrong_count": lambda: fq.clean_pairs(q, x, sparse_labels((2, *S2), 1), -1),
        "min_labelled_0": lambda: fq.select_windows(q, sparse_labels((1, *S2), 1), -1,
                                                    min_labelled=0),
        "sliding_model_not_callable": lambda: fq.sliding_window(3, x, W2, ST2),
        "sliding_changes_window": lambda: fq.sliding_window(lambda t: t[..., 1:], x, W2, ST2),
        "sliding_int_output": lambda: fq.sliding_window(lambda t: t.int(), x, W2, ST2),
        "sliding_batch_0": lambda: fq.sliding_window(model_affine, x, W2, ST2, 0),
        "sliding_numpy_no_out": lambda: fq.sliding_window(model_affine, x.numpy(), W2, ST2),
        "sliding_extra_kwarg": lambda: fq.sliding_window(model_affine, x, W2, ST2, chunks=8),
        "sliding_out_dtype": lambda: fq.sliding_window(model_affine, x, W2, ST2,
                                                       out_dtype=torch.int32),
        "sliding_device": lambda: fq.sliding_window(model_affine, x, W2, ST2, device="gpu"),
        "dataset_volume_shape": lambda: fq.PatchDataset(rand((1, 2, 30, 53)), None, q),
        "dataset_augment_str": lambda: fq.PatchDataset(x, None, q, augment="yes"),
        "ncyx_border_too_large": lambda: fq.NCYXQuilt(37, 53, 8, 4, 4),
        "weed_mismatch": lambda: fq.weed_sparse_classification_training_pairs_2D(
            p, torch.zeros(3, 12, 16), -1, torch.ones(W2)),
    }
    for name, fn in bad.items():
        r.call(name, fn)


def area_errors_outofcore(r: Recorder, scratch: Path) -> None:
    """Bad inputs of the out-of-core path (out= paths that exist, wrong shapes, chunks)."""
    from fastquilt.outofcore import sliding_window_zarr

    x = rand((1, 1, *S2))
    (scratch / "not_zarr").mkdir()
    (scratch / "not_zarr" / "file.txt").write_text("x")
    r.meth("out_not_zarr", fq, "sliding_window", model_affine, x, W2, ST2,
           out=str(scratch / "not_zarr"))
    r.meth("out_unit_not_multiple", fq, "sliding_window", model_affine, x, W2, ST2,
           out=str(scratch / "u.zarr"), chunks=8, unit=12)
    r.meth("out_dtype_bf16", fq, "sliding_window", model_affine, x, W2, ST2,
           out=str(scratch / "bf.zarr"), out_dtype=torch.bfloat16)
    r.call("x_3d_array", sliding_window_zarr, model_affine, x[0].numpy(),
           str(scratch / "a.zarr"), W2, ST2)
    r.call("x_empty", sliding_window_zarr, model_affine, x[:0].numpy(),
           str(scratch / "b.zarr"), W2, ST2)
    r.call("model_not_callable", sliding_window_zarr, None, x, str(scratch / "c.zarr"), W2, ST2)
    fq.sliding_window(model_affine, x, W2, ST2, out=str(scratch / "d.zarr"), chunks=16)
    r.meth("resume_other_channels", fq, "sliding_window", model_three_channels, x, W2, ST2,
           out=str(scratch / "d.zarr"), chunks=16)
    r.meth("resume_other_weight", fq, "sliding_window", model_affine, x, W2, ST2, 8, "flat",
           out=str(scratch / "d.zarr"), chunks=16)


AREAS: dict[str, Callable[..., None]] = {
    "api": area_api,
    "grid": area_grid,
    "weights": area_weights,
    "ops": area_ops,
    "autograd": area_autograd,
    "quilt": area_quilt,
    "sliding": area_sliding,
    "outofcore": area_outofcore,
    "distributed": area_distributed,
    "cleaning": area_cleaning,
    "dataset": area_dataset,
    "compat": area_compat,
    "compat_large": area_compat_large,
    "cli": area_cli,
    "errors": area_errors,
    "errors_outofcore": area_errors_outofcore,
}
_NEEDS_SCRATCH = {"outofcore", "distributed", "cleaning", "dataset", "compat_large", "cli",
                  "errors_outofcore"}


def run_all(scratch: Path, areas: list[str] | None = None) -> tuple[dict[str, Any], dict]:
    """Run the areas (all by default) into ``scratch``; return (outputs, seconds per area).

    An area that crashes part-way keeps what it recorded and adds ``"<area>/!crashed"``.
    """
    unknown = sorted(set(areas or ()) - set(AREAS))
    if unknown:
        raise ValueError(f"unknown areas {unknown}; the areas are {list(AREAS)}")
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    for name in areas or list(AREAS):
        area_dir = scratch / name
        area_dir.mkdir(parents=True)
        r = Recorder(name, out, scratch)
        torch.manual_seed(0)
        t0 = time.perf_counter()
        try:
            if name in _NEEDS_SCRATCH:
                AREAS[name](r, area_dir)
            else:
                AREAS[name](r)
        except Exception as e:  # noqa: BLE001  (a crash is an output too)
            out[f"{name}/!crashed"] = r.error(e)
        seconds[name] = time.perf_counter() - t0
    return out, seconds
