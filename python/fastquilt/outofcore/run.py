"""``sliding_window_zarr``: sliding-window inference from an array larger than RAM into a zarr
v3 array, in one process or on a dask cluster (the design: docs/out-of-core.md)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from .._args import device_arg, positive_int_arg
from ..arrays import with_absolute_paths
from ..formats.ome_writer import OmeWriter
from ..formats.ome_zarr import OmeInput, space_meta
from ..formats.pyramid import check_levels, default_levels
from ..sliding import check_model
from .distributed import model_fingerprint_on_a_worker, run_distributed
from .fingerprints import input_fingerprint, model_fingerprint
from .job import Job, Layout
from .local import run_local
from .models import ModelFactory, resolve_model
from .store import OutputStore, zarr_dtype


def sliding_window_zarr(
    model: Callable[[torch.Tensor], torch.Tensor],
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
    of producers and owners on the cluster: see :mod:`fastquilt.outofcore.distributed`.
    ``reader_threads`` and ``writer_threads`` (default 2 each) read input blocks and write
    finished units in a run in one process (``python -m fastquilt tune`` measures them).

    OME-Zarr: with ``out`` ending in ``.ome.zarr`` (or ``ome_zarr=True``) the output is an
    NGFF 0.5 image group (axes ``t, c, [z,] y, x``; the returned array is its level 0) with
    ``levels`` pyramid levels (default: until the largest side fits a screen, 1024 voxels, as
    far as ``unit`` allows: ``unit`` must be a multiple of ``2^levels``), each written by the
    unit's owner as the unit finishes. The voxel size, unit and offset come from ``x`` when it
    is an OME-Zarr input (:func:`fastquilt.formats.open_ome_zarr`), or from ``voxel_size``
    (per spatial axis) in ``voxel_unit`` (an NGFF unit name, e.g. ``"micrometer"``).
    """
    if client is None and not isinstance(model, ModelFactory):
        check_model(model)
    batch_size = positive_int_arg(batch_size, "batch_size")
    reader_threads = positive_int_arg(reader_threads, "reader_threads")
    writer_threads = positive_int_arg(writer_threads, "writer_threads")
    # On a cluster the device is the workers', which this machine may lack.
    device = device_arg(device, here=client is None) or torch.device("cpu")
    layout = Layout(getattr(x, "shape", ()), window, step, weight, border, border_weight,
                    chunks=chunks, unit=unit, shards=shards, allow_gaps=allow_gaps)
    dtype = zarr_dtype(out_dtype)
    ome = _ome_writer(x, out, layout, ome_zarr, levels, voxel_size, voxel_unit, compressors,
                      fill_value)
    metadata = layout.metadata(dtype, weight, border_weight)
    if ome is not None:  # (a resumed run must ask for the same levels and metadata)
        metadata["ome"] = ome.describe()
    store = OutputStore(out, layout.units, layout.chunk, layout.shards, out_dtype=dtype,
                        compressors=compressors, fill_value=fill_value, metadata=metadata)
    store.ome = ome
    # What made the output: a resume must not mix two models' (or inputs') results. A
    # factory's model is fingerprinted once built (here, or on a worker), so that a run with
    # the factory and one with the model it builds resume each other.
    recipe = model
    if client is None:
        model = resolve_model(model, device)  # a ModelFactory is built here
        fingerprint = model_fingerprint(model)
    elif isinstance(model, ModelFactory):
        fingerprint = model_fingerprint_on_a_worker(client, model, device)
    else:
        fingerprint = model_fingerprint(model)
    if fingerprint is None and isinstance(recipe, ModelFactory) and isinstance(recipe.fn, str):
        fingerprint = model_fingerprint(recipe)  # (a compiled model has none: the file's)
    store.sources = {"model": fingerprint, "input": input_fingerprint(x)}
    store.lease.acquire()  # one run at a time writes an output
    try:
        store.open_existing()
        job = Job(with_absolute_paths(x), layout, store)
        if client is not None:
            return run_distributed(client, job, model, batch_size, device, fill_value,
                                   progress)
        return run_local(job, model, batch_size, device, fill_value, progress,
                         reader_threads=reader_threads, writer_threads=writer_threads)
    finally:
        store.lease.release()


def _ome_writer(x, out, layout: Layout, ome_zarr, levels, voxel_size, voxel_unit,
                compressors, fill_value) -> OmeWriter | None:
    """The OME-Zarr writer of an output ``out`` that is OME-Zarr (by ``ome_zarr``, or its
    ``.ome.zarr`` name), else None (and no OME-Zarr options may be given)."""
    if ome_zarr is None:
        ome_zarr = str(out).rstrip("/").endswith(".ome.zarr")
    if not ome_zarr:
        given = [k for k, v in (("levels", levels), ("voxel_size", voxel_size),
                                ("voxel_unit", voxel_unit)) if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to an OME-Zarr output only: name the "
                             "output *.ome.zarr or pass ome_zarr=True")
        return None
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
                     layout.shards, compressors=compressors, fill_value=fill_value)
