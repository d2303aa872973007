"""``sliding_window_zarr``: sliding-window inference from an array larger than RAM into a zarr
v3 array, in one process or on a dask cluster (the design: docs/out-of-core.md)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .._args import device_arg, per_axis, positive_int_arg
from ..arrays import with_absolute_paths
from ..ensemble import Predictor, models_arg
from ..formats.ome_writer import OmeWriter
from ..formats.ome_zarr import OmeInput, space_meta
from ..formats.pyramid import check_levels, default_levels
from ..reductions import outputs_arg
from ..sliding import check_model
from .budget import MemoryPlan, default_max_memory, memory_arg, plan_run
from .distributed import model_fingerprint_on_a_worker, run_distributed
from .fingerprints import input_fingerprint, model_fingerprint
from .job import Job, Layout
from .local import run_local
from .models import ModelFactory, resolve_model
from .outputs import is_group
from .reading import read_window
from .store import OutputStore, metadata_root, zarr_dtype


def sliding_window_zarr(
    model: Callable[[torch.Tensor], torch.Tensor] | Sequence,
    x,
    out: str | os.PathLike,
    window: int | Sequence[int],
    step: int | Sequence[int],
    batch_size: int = 8,
    weight: str | torch.Tensor | None = "gaussian",
    *,
    border: int | Sequence[int] | None = None,
    border_weight: float = 0.1,
    device: torch.device | str | None = None,
    chunks: int | Sequence[int] | None = None,
    unit: int | Sequence[int] | None = None,
    compressors="auto",
    shards: int | Sequence[int] | None = None,
    out_dtype: str | torch.dtype = "float32",
    fill_value: float = 0.0,
    allow_gaps: bool = False,
    progress: bool = False,
    client=None,
    reader_threads: int = 2,
    writer_threads: int = 2,
    outputs: str | Sequence[str] = "mean",
    tta: str = "none",
    activation: str | None = None,
    max_memory: int | str | None = None,
    ome_zarr: bool | None = None,
    levels: int | None = None,
    voxel_size: float | Sequence[float] | None = None,
    voxel_unit: str | None = None,
):
    """Apply ``model`` to every window of ``x`` ``(N, C, *S)`` (zarr array, numpy array or
    memmap, dask array, or tensor) and write the weighted mean to the zarr v3 array at ``out``
    ``(N, C_out, *S)``. Returns the opened output array.

    ``chunks`` (spatial) sets the output chunking (default 64 per axis in 3D, 256 in 2D);
    ``unit`` (spatial, a multiple of ``chunks``; default 2 chunks) is the block written at once;
    ``compressors`` and ``shards`` (spatial; then ``unit`` must hold whole shards) are passed
    to ``zarr.create_array``; ``out_dtype`` is float16, float32 (default) or float64 (zarr
    has no bfloat16); ``allow_gaps`` and ``fill_value`` as in memory. Each window runs exactly
    once; memory is
    about one plane of units plus a batch. Re-running the same call after a crash resumes:
    finished units are kept, only windows touching unfinished units run again. Resuming into an
    output made with another geometry, model-output channel count or dtype raises.

    With ``client`` (a ``dask.distributed.Client``) the same work runs as a static task graph
    on the cluster: one band of unit planes per worker thread, each run as in one process,
    and owners for the units two bands share: see :mod:`fastquilt.outofcore.distributed`.
    ``reader_threads`` and ``writer_threads`` (default 2 each) read input blocks and write
    finished units in a run in one process, and in each band task of a cluster run
    (``python -m fastquilt tune`` measures them).

    ``model`` may be a list of models (or factories), ``tta``, ``activation`` and ``outputs``
    as in :func:`fastquilt.sliding_window`: any set of outputs other than ``"mean"`` alone is
    written as a zarr group at ``out`` with one array per output (:mod:`.outputs`), each unit
    of every output written once before the unit's done-marker; a resumed run must ask for the
    same outputs, augmentations and activation.

    ``max_memory`` (bytes, or a size such as ``"4G"``) bounds fastquilt's buffers in a run in
    one process (:mod:`.budget`: the unit depth along axis 0, the queue depths and the units
    waiting to be written are chosen to fit, after running the model on one window to learn
    its channel count; where no plane-wide slab of sums fits, the units in flight are kept up
    to a cap and the rest spilled to a scratch file next to the output (:mod:`.spill`), with
    units of one chunk on every axis; a bound too small even for one batch is refused).
    Default: half the physical memory, checked once the model's first batch has run. On a
    cluster it bounds each band task (default: the worker's memory limit per thread), with the
    units given or the default ones. A resume keeps the units, chunks and shards
    the output was made with (those not given are taken from it; ``chunks`` or ``shards``
    other than its own are refused).

    OME-Zarr: with ``out`` ending in ``.ome.zarr`` (or ``ome_zarr=True``) the output is an
    NGFF 0.5 image group (axes ``t, c, [z,] y, x``; the returned array is its level 0) with
    ``levels`` pyramid levels (default: until the largest side fits a screen, 1024 voxels, as
    far as ``unit`` allows: ``unit`` must be a multiple of ``2^levels``), each written by the
    unit's owner as the unit finishes. The voxel size, unit and offset come from ``x`` when it
    is an OME-Zarr input (:func:`fastquilt.formats.open_ome_zarr`), or from ``voxel_size``
    (per spatial axis) in ``voxel_unit`` (an NGFF unit name, e.g. ``"micrometer"``). With
    several outputs the root image is ``mean`` (else the first float output asked for), other
    float outputs are image groups ``<name>/`` and ``labels`` the label image
    ``labels/labels/``, every level of every output written before the unit's marker
    (docs/formats.md); labels alone are refused (a label image needs a parent image).
    """
    budget = memory_arg(max_memory)
    names = outputs_arg(outputs)
    models = models_arg(model)
    if client is None:
        for m in models:
            if not isinstance(m, ModelFactory):
                check_model(m)
    predictor = Predictor(models, tta, activation, outputs=names, resolve=resolve_model)
    batch_size = positive_int_arg(batch_size, "batch_size")
    reader_threads = positive_int_arg(reader_threads, "reader_threads")
    writer_threads = positive_int_arg(writer_threads, "writer_threads")
    # On a cluster the device is the workers', which this machine may lack.
    device = device_arg(device, here=client is None) or torch.device("cpu")
    unit, chunks, shards = _resume_geometry(out, getattr(x, "shape", ()), unit, chunks,
                                            shards)
    layout = Layout(getattr(x, "shape", ()), window, step, weight, border, border_weight,
                    chunks=chunks, unit=unit, shards=shards, allow_gaps=allow_gaps)
    dtype = zarr_dtype(out_dtype)
    memory = None
    if client is None:
        if budget is not None:  # the units depend on the bound: plan them now
            plan = _plan(layout, x, predictor, names, batch_size, dtype, budget,
                         unit is not None, _channels(predictor, x, layout, device))
            if plan.unit != layout.unit:
                layout = Layout(getattr(x, "shape", ()), window, step, weight, border,
                                border_weight, chunks=chunks, unit=plan.unit, shards=shards,
                                allow_gaps=allow_gaps)
            memory = plan  # (known before the run: applied before its threads start)
        else:
            memory = lambda c: _plan(layout, x, predictor, names, batch_size,  # noqa: E731
                                     dtype, default_max_memory(), True, c)
    ome = _ome_writer(x, out, layout, names, ome_zarr, levels, voxel_size, voxel_unit,
                      compressors, fill_value)
    metadata = _metadata(layout.metadata(dtype, weight, border_weight), names, predictor)
    if ome is not None:  # (a resumed run must ask for the same levels and metadata)
        metadata["ome"] = ome.describe()
    store = OutputStore(out, layout.units, layout.chunk, layout.shards, out_dtype=dtype,
                        compressors=compressors, fill_value=fill_value, metadata=metadata,
                        outputs=names, ome=ome)
    # What made the output: a resume must not mix two models' (or inputs') results. A
    # factory's model is fingerprinted once built (here, or on a worker), so that a run with
    # the factory and one with the model it builds resume each other.
    fingerprints = []
    for i, m in enumerate(models):
        if client is None:
            models[i] = resolve_model(m, device)  # a ModelFactory is built here
            fingerprint = model_fingerprint(models[i])
        elif isinstance(m, ModelFactory):
            fingerprint = model_fingerprint_on_a_worker(client, m, device)
        else:
            fingerprint = model_fingerprint(m)
        if fingerprint is None and isinstance(m, ModelFactory) and isinstance(m.fn, str):
            fingerprint = model_fingerprint(m)  # (a compiled model has none: the file's)
        fingerprints.append(fingerprint)
    predictor.models = models
    store.sources = {"model": _ensemble_fingerprint(fingerprints, predictor),
                     "input": input_fingerprint(x)}
    store.lease.acquire()  # one run at a time writes an output
    try:
        store.open_existing()
        job = Job(with_absolute_paths(x), layout, store)
        if client is not None:
            return run_distributed(
                client, job, predictor, names, batch_size, device, fill_value, progress,
                max_memory=budget, reader_threads=reader_threads, writer_threads=writer_threads,
                sizes=_run_sizes(layout, x, predictor, names, batch_size, dtype, True))
        return run_local(job, predictor, names, batch_size, device, fill_value, progress,
                         reader_threads=reader_threads, writer_threads=writer_threads,
                         memory=memory)
    finally:
        store.lease.release()


class _Geometry(NamedTuple):
    unit: tuple[int, ...]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    spatial: tuple[int, ...]  # of the input it was made for


def _stored_geometry(out) -> _Geometry | None:
    """The geometry of an existing output made by fastquilt, else None."""
    import zarr

    path = Path(out)
    if not path.exists():
        return None
    try:
        root = metadata_root(path)
        meta = dict(root.attrs)["fastquilt"]
        arr = root if isinstance(root, zarr.Array) else next(a for _, a in root.arrays())
        D = len(meta["input_shape"]) - 2
        shards = getattr(arr, "shards", None)
        return _Geometry(tuple(meta["unit"]), tuple(arr.chunks[-D:]),
                         tuple(shards[-D:]) if shards is not None else None,
                         tuple(meta["input_shape"][2:]))
    except Exception:  # not ours, or unreadable: opening it for the run says why
        return None


def _resume_geometry(out, shape, unit, chunks, shards):
    """``unit``, ``chunks`` and ``shards`` for a run over an input of ``shape`` into ``out``:
    where the output exists (made for an input of that shape), those not given come from it
    (a memory bound may have chosen its units), and those given must be its own."""
    made = _stored_geometry(out)
    if made is None or made.spatial != tuple(shape)[2:]:
        return unit, chunks, shards  # (opening the output for the run says what differs)
    if shards is not None and made.shards is None:
        raise ValueError(f"output {out} was made without shards; resume without shards=, or "
                         "use a new output path")
    for name, given, own in (("chunks", chunks, made.chunks), ("shards", shards, made.shards)):
        if given is None or own is None:
            continue
        # (as the layout clips them to the image)
        want = tuple(min(v, S) for v, S in zip(per_axis(given, len(made.spatial), name,
                                                        minimum=1), made.spatial))
        if want != own:
            raise ValueError(
                f"output {out} was made with {name} {own}, not {want}; resume with "
                f"{name}={own} (or without {name}=), or use a new output path")
    return (made.unit if unit is None else unit, made.chunks if chunks is None else chunks,
            made.shards if shards is None else shards)


def _channels(predictor: Predictor, x, layout: Layout, device) -> int:
    """The models' output channels, from one window."""
    window = read_window(with_absolute_paths(x), layout, 0)
    predictor(window[None], layout.window, device)
    return int(predictor.channels)


def _plan(layout: Layout, x, predictor: Predictor, names, batch_size: int, out_dtype: str,
          budget: int, unit_given: bool, channels: int) -> MemoryPlan:
    """The memory plan of a run in one process with ``channels`` model outputs."""
    return plan_run(budget, channels,
                    **_run_sizes(layout, x, predictor, names, batch_size, out_dtype, unit_given))


def _run_sizes(layout: Layout, x, predictor: Predictor, names, batch_size: int,
               out_dtype: str, unit_given: bool) -> dict:
    """What :func:`~.budget.plan_run` needs of a run besides the bound and the channels."""
    in_itemsize = x.element_size() if isinstance(x, torch.Tensor) else np.dtype(x.dtype).itemsize
    chunks = getattr(x, "chunks", None)
    in_depth = int(chunks[2]) if isinstance(chunks, tuple) and len(chunks) > 2 and isinstance(
        chunks[2], int) else layout.window[0]
    # one model's output and its activation; an ensemble's sums and transforms take more
    single = predictor.members(layout.window) == 1 and not predictor.moments
    return dict(
        names=tuple(names), out_dtype=out_dtype, spatial=layout.spatial, window=layout.window,
        step=layout.q.step, chunk=layout.shards or layout.chunk, unit=layout.unit,
        unit_given=unit_given, temporaries=2 if single else 4, images=layout.N,
        c_in=layout.shape[1], in_itemsize=in_itemsize, in_depth=in_depth,
        batch_size=batch_size)


def _plain(names: tuple[str, ...], predictor: Predictor) -> bool:
    """One model's weighted mean, no augmentation or activation (the metadata and
    fingerprints of such runs stay as they always were)."""
    return (not is_group(names) and len(predictor.models) == 1 and predictor.tta == "none"
            and predictor.activation == "none")


def _metadata(base: dict, names: tuple[str, ...], predictor: Predictor) -> dict:
    """The stored metadata: the layout's, plus the outputs, augmentations, activation and
    member count of an ensemble run."""
    if _plain(names, predictor):
        return base
    return {**base, "outputs": list(names), "tta": predictor.tta,
            "activation": predictor.activation, "models": len(predictor.models)}


def _ensemble_fingerprint(fingerprints: list, predictor: Predictor) -> str | None:
    """One model's own fingerprint, or one over every member's (unknown if one is)."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    if any(f is None for f in fingerprints):
        return None
    h = hashlib.sha256(json.dumps(fingerprints).encode()).hexdigest()
    return f"ensemble:{len(fingerprints)}:{h}"


def _ome_writer(x, out, layout: Layout, names: tuple[str, ...], ome_zarr, levels, voxel_size,
                voxel_unit, compressors, fill_value) -> OmeWriter | None:
    """The OME-Zarr writer of an output ``out`` that is OME-Zarr (by ``ome_zarr``, or its
    ``.ome.zarr`` name), else None (and no OME-Zarr options may be given). Its root image is
    ``mean``, else the first float output of ``names``; labels alone are refused."""
    if ome_zarr is None:
        ome_zarr = str(out).rstrip("/").endswith(".ome.zarr")
    if not ome_zarr:
        given = [k for k, v in (("levels", levels), ("voxel_size", voxel_size),
                                ("voxel_unit", voxel_unit)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to an OME-Zarr output only: name the "
                             "output *.ome.zarr or pass ome_zarr=True")
        return None
    images = [n for n in names if n != "labels"]
    if not images:
        raise ValueError(
            f"outputs={names} cannot be written as OME-Zarr: an NGFF label image needs a parent "
            "image, and these outputs have none; add a float output (e.g. "
            "outputs=('probability', 'labels') or ('mean', 'labels')), or write a plain zarr "
            "group (an output path not ending in .ome.zarr, or ome_zarr=False)")
    D = len(layout.spatial)
    if isinstance(x, OmeInput):
        space = x.space
        if voxel_size is not None or voxel_unit is not None:  # the user's word wins
            given = space_meta(D, voxel_size, voxel_unit)
            space = replace(space, scale=given.scale if voxel_size is not None else space.scale,
                            unit=voxel_unit if voxel_unit is not None else space.unit)
    else:
        space = space_meta(D, voxel_size, voxel_unit)
    levels = (default_levels(layout.spatial, layout.unit) if levels is None
              else check_levels(levels, layout.spatial, layout.unit))
    return OmeWriter(out, space, levels, layout.spatial, layout.unit, layout.chunk,
                     layout.shards, compressors=compressors, fill_value=fill_value,
                     root="mean" if "mean" in names else images[0])
