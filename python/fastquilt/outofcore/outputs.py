"""The arrays of an out-of-core output, by output name: the one place that maps a name to its
zarr array. A run whose only output is ``mean`` writes one array at the output path (as
always); any other set of outputs is a zarr group there with one array ``(N, c, *S)`` per
output, named after it (``mean``, ``std``, ``variance``, ``labels``, ``probability``,
``entropy``), and the run's metadata in the group's attributes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def is_group(outputs: Sequence[str]) -> bool:
    """Whether the outputs are written as a group (anything but the lone ``mean``)."""
    return tuple(outputs) != ("mean",)


def array_path(name: str) -> str:
    """The path of output ``name``'s array inside the group."""
    return name


def create_outputs(path: Path, specs: dict[str, tuple[int, str]], N: int,
                   spatial: tuple[int, ...], chunk: tuple[int, ...],
                   shards: tuple[int, ...] | None, compressors, fill_value: float,
                   attributes: dict):
    """Create the output at ``path`` for ``specs`` ``{name: (channels, dtype)}``; returns
    ``(root, {name: array})`` (root: the array, or the group holding the attributes)."""
    import zarr

    def geometry(c: int, dtype: str) -> dict:
        return {"shape": (N, c, *spatial), "chunks": (1, c, *chunk), "dtype": dtype,
                "shards": (1, c, *shards) if shards else None, "compressors": compressors,
                "fill_value": 0 if dtype.startswith("uint") else fill_value}

    if not is_group(specs):
        arr = zarr.create_array(str(path), attributes=attributes, **geometry(*specs["mean"]))
        return arr, {"mean": arr}
    group = zarr.open_group(str(path), mode="w-", attributes=attributes)
    return group, {name: group.create_array(array_path(name), **geometry(c, dtype))
                   for name, (c, dtype) in specs.items()}


def open_outputs(path: Path, outputs: Sequence[str], mode: str = "r+"):
    """Open the output at ``path`` made for ``outputs``: ``(root, {name: array})``. Raises
    ``ValueError`` when it holds something else."""
    import zarr

    if not is_group(outputs):
        arr = zarr.open_array(str(path), mode=mode)
        return arr, {"mean": arr}
    group = zarr.open_group(str(path), mode=mode)
    missing = [n for n in outputs if array_path(n) not in group]
    if missing:
        raise ValueError(f"output {path} has no arrays {missing}: it was made for other "
                         "outputs; use a new output path")
    return group, {n: group[array_path(n)] for n in outputs}
