"""An OME-Zarr 0.5 output written unit by unit: one NGFF image group whose levels ``0..L``
are zarr v3 arrays ``(N, C, *S_l)`` with ``dimension_names``, and integer outputs as NGFF label
images under ``labels/``. The owner of a unit writes the unit's block of every level (the
units are aligned to the pyramid, :mod:`.pyramid`), so no level is read back, and nothing
needs a second pass.

The layout for several outputs (docs/formats.md): float outputs are images (the root
image is ``mean``, else the first float output; each other float output, e.g. ``std``, is
the image group ``<name>/`` beside the levels, listed in the root's ``fastquilt_outputs``
attribute), and integer outputs (``labels``) are label images ``labels/<name>/`` with
``image-label`` metadata, downsampled by the mode.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from .ome_zarr import VERSION, SpaceMeta, dimension_names, multiscales
from .pyramid import downsample_mode, level_box, level_chunks, level_shape, mean_levels

MEAN = "mean"  # the root image: fastquilt's weighted mean (else the first float output)


def output_kind(name: str) -> str:
    """``"labels"`` (an NGFF label image, integer, mode-downsampled) for the ``labels``
    output, else ``"image"`` (float, mean-downsampled)."""
    return "labels" if name == "labels" else "image"


class OmeWriter:
    """The OME-Zarr output at ``path`` of images ``(N, C, *spatial)`` written in units of
    ``unit`` voxels, with ``levels`` pyramid levels besides level 0."""

    def __init__(self, path: str | os.PathLike, space: SpaceMeta, levels: int,
                 spatial: Sequence[int], unit: Sequence[int], chunk: Sequence[int],
                 shards: Sequence[int] | None, *, compressors="auto",
                 fill_value: float = 0.0, root: str = MEAN) -> None:
        self.path = os.path.abspath(path)
        self.root = root  # the output that is the root image
        self.space, self.levels = space, levels
        self.spatial, self.unit, self.chunk = tuple(spatial), tuple(unit), tuple(chunk)
        self.shards = tuple(shards) if shards else None
        self.compressors, self.fill_value = compressors, fill_value
        self.arrays: dict[str, list] = {}  # output name -> its level arrays
        self.kinds: dict[str, str] = {}  # output name -> "image" or "labels"

    def describe(self) -> dict:
        """What a resumed run must ask for (stored with the output)."""
        return {"version": VERSION, "levels": self.levels, "space": self.space.describe()}

    def _group_path(self, name: str, kind: str) -> str:
        if name == self.root:
            return ""
        return f"labels/{name}" if kind == "labels" else name

    def create(self, name: str, kind: str, N: int, C: int, dtype, attributes: dict):
        """Create output ``name`` (``kind`` ``"image"``: float, mean-downsampled;
        ``"labels"``: integer, mode-downsampled) with ``C`` channels; level 0's array holds
        ``attributes``. Returns the level-0 array."""
        import zarr

        root = zarr.open_group(self.path, mode="a", zarr_format=3)
        gpath = self._group_path(name, kind)
        group = root.require_group(gpath) if gpath else root
        D = len(self.spatial)
        arrays = []
        for lv in range(self.levels + 1):
            shape = level_shape(self.spatial, lv)
            chunks = self.chunk if lv == 0 else level_chunks(self.chunk, self.unit,
                                                             self.spatial, lv)
            shards = self.shards if lv == 0 else None
            arrays.append(group.create_array(
                str(lv), shape=(N, C, *shape), chunks=(1, C, *chunks),
                shards=(1, C, *shards) if shards else None, dtype=dtype,
                compressors=self.compressors,
                fill_value=self.fill_value if kind == "image" else 0,
                dimension_names=dimension_names(D),
                attributes=attributes if lv == 0 else {}))
        ome = multiscales(self.space, self.levels, name)
        if kind == "labels":
            # (the image it labels: the root image, two groups up)
            ome["image-label"] = {"version": VERSION, "source": {"image": "../../"}}
            labels = root.require_group("labels")
            names = list(dict(labels.attrs).get("ome", {}).get("labels", []))
            labels.attrs["ome"] = {"version": VERSION, "labels": sorted({*names, name})}
        group.attrs["ome"] = ome
        if name != self.root and kind == "image":
            outputs = dict(root.attrs).get("fastquilt_outputs", [])
            root.attrs["fastquilt_outputs"] = sorted({*outputs, name})
        self.arrays[name], self.kinds[name] = arrays, kind
        return arrays[0]

    def open(self, name: str | None = None, kind: str = "image"):
        """Open the existing output ``name`` for writing; returns its level-0 array. A
        ``ValueError`` where ``path`` is not an OME-Zarr image with these levels."""
        import zarr

        name = self.root if name is None else name
        gpath = self._group_path(name, kind)
        try:
            # (through the root: every array's path is then relative to the one store whose
            # keys block_keys lists)
            root = zarr.open_group(self.path, mode="r+")
            group = root[gpath] if gpath else root
            ms = dict(group.attrs)["ome"]["multiscales"][0]
            arrays = [group[d["path"]] for d in ms["datasets"]]
        except Exception as e:
            raise ValueError(f"output {self.path} exists and is not an OME-Zarr image that "
                             f"fastquilt wrote ({type(e).__name__}: {e}); choose a new path or "
                             "remove it") from None
        if len(arrays) != self.levels + 1:
            raise ValueError(f"output {self.path} has {len(arrays) - 1} pyramid levels, this "
                             f"run asks for {self.levels}; cannot resume into it (use a new "
                             "output path, or the same levels)")
        self.arrays[name], self.kinds[name] = arrays, kind
        return arrays[0]

    def writable(self, config: dict) -> None:
        """Give every level array of every output zarr ``config`` (e.g. write_empty_chunks)."""
        for name, arrays in self.arrays.items():
            self.arrays[name] = [a.with_config(config) for a in arrays]

    def write_levels(self, name: str, n: int, box: Sequence[slice], block: torch.Tensor,
                     dtype) -> None:
        """Write levels ``1..L`` of output ``name`` below the level-0 ``box`` of image ``n``,
        from that box's level-0 data ``block`` ``(C, *box)`` (already written at level 0)."""
        if self.levels == 0:
            return
        arrays = self.arrays[name]
        if self.kinds[name] == "labels":
            blocks = downsample_mode(block, self.levels)
        else:
            data = block if block.is_floating_point() else block.float()
            blocks = mean_levels(data, self.levels)
        for lv, b in zip(range(1, self.levels + 1), blocks):
            arrays[lv][(n, slice(None), *level_box(box, lv))] = \
                b.numpy().astype(dtype, copy=False)

    def level_keys(self, name: str, n: int, box: Sequence[slice]) -> list[str]:
        """The storage keys (chunks, or shards at level 0) of levels ``1..L`` of output
        ``name`` below the level-0 ``box`` of image ``n``."""
        keys = []
        for lv in range(1, self.levels + 1):
            arr = self.arrays[name][lv]
            chunks = arr.metadata.chunk_grid.chunk_shape[2:]
            lbox = level_box(box, lv)
            ranges = [range(b.start // c, math.ceil(b.stop / c)) for b, c in zip(lbox, chunks)]
            prefix = f"{arr.path}/" if arr.path else ""
            encode = arr.metadata.encode_chunk_key
            keys += [prefix + encode((n, 0, *idx)) for idx in itertools.product(*ranges)]
        return keys


def level0_array(path: str | os.PathLike):
    """The full-resolution array of the OME-Zarr image at ``path`` (for reading)."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return group[dict(group.attrs)["ome"]["multiscales"][0]["datasets"][0]["path"]]


def label_dtype(n_classes: int) -> np.dtype:
    """The smallest unsigned integer dtype that holds labels ``0..n_classes - 1``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if n_classes - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def add_label_image(path: str | os.PathLike, name: str, labels, *, chunks: int = 64,
                    colors: dict[int, Sequence[int]] | None = None) -> None:
    """Write ``labels`` ``(N, 1, *S)`` (integers, in memory) as the NGFF label image
    ``labels/<name>`` of the OME-Zarr image at ``path``, with the image's levels and
    transforms (mode-downsampled); ``colors`` maps label values to RGBA (0..255)."""
    import zarr

    from .ome_zarr import open_ome_zarr

    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim not in (4, 5) or labels.shape[1] != 1:
        raise ValueError(f"labels must be an integer (N, 1, *S) array, got {labels.dtype} "
                         f"{labels.shape}")
    image = open_ome_zarr(path)
    n_levels = len(dict(zarr.open_group(str(path), mode="r").attrs)["ome"]["multiscales"][0][
        "datasets"]) - 1
    spatial = labels.shape[2:]
    writer = OmeWriter(path, image.space, n_levels, spatial, spatial,
                       tuple(min(chunks, S) for S in spatial), None)
    level0 = writer.create(name, "labels", labels.shape[0], 1, labels.dtype, {})
    level0[...] = labels
    box = tuple(slice(0, S) for S in spatial)
    for n in range(labels.shape[0]):
        writer.write_levels(name, n, box, torch.from_numpy(labels[n].astype(np.int64)),
                            labels.dtype)
    if colors:
        set_label_colors(writer.path, name, colors)


def set_label_colors(path: str | os.PathLike, name: str,
                     colors: dict[int, Sequence[int]]) -> None:
    """Give the label image ``labels/<name>`` of the OME-Zarr image at ``path`` display
    colours ``{label value: RGBA (0..255)}`` (NGFF ``image-label`` ``colors``)."""
    import zarr

    try:
        group = zarr.open_group(os.path.join(os.fspath(path), "labels", name), mode="r+")
        ome = dict(group.attrs)["ome"]
        ome["image-label"]
    except Exception as e:
        raise ValueError(f"{path} has no label image labels/{name} ({type(e).__name__}); "
                         "name one of its label images") from None
    ome["image-label"]["colors"] = [{"label-value": int(k), "rgba": [int(c) for c in v]}
                                    for k, v in sorted(colors.items())]
    group.attrs["ome"] = ome
