"""Out-of-core sliding-window inference into zarr v3, in one process or on a dask cluster.

The output is cut into units (blocks of whole chunks); every window runs once, its weighted
prediction is summed in RAM into the units it touches, and a unit is normalised, written once
and marked done when its last window has run: no read-modify-write of storage, one writer
per chunk, resumable after a kill. The modules, in the order of a run: :mod:`.job` (layout),
:mod:`.store` (the zarr output and done-markers), :mod:`.fingerprints`, :mod:`.reading`,
:mod:`.model_files` / :mod:`.models`, :mod:`.slab` / :mod:`.unit_sums` (the sums), :mod:`.local` and
:mod:`.distributed` (the two ways to run), :mod:`.run` (the entry point).
"""

from .distributed import local_cluster, local_gpu_cluster
from .model_files import load_model_file
from .models import ModelFactory, resolve_model
from .run import sliding_window_zarr
from .store import progress_of

__all__ = [
    "ModelFactory",
    "load_model_file",
    "local_cluster",
    "local_gpu_cluster",
    "progress_of",
    "resolve_model",
    "sliding_window_zarr",
]
