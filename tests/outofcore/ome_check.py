"""Reading an OME-Zarr output back with the ecosystem's tools (ome-zarr-py reads it, and
ome-zarr-models validates its metadata), and the float64 reference of its pyramid."""

import numpy as np
import zarr


def read_with_ome_zarr_py(path) -> list:
    """The nodes ome-zarr-py's reader finds at ``path`` (image first, then labels)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    return list(Reader(parse_url(str(path)))())


def validate(path, kind: str = "image"):
    """The ome-zarr-models model of the group at ``path`` (raises when the metadata is
    not valid OME-Zarr 0.5)."""
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    model = Image if kind == "image" else ImageLabel
    return model.from_zarr(zarr.open_group(str(path), mode="r"))


def reference_levels(level0: np.ndarray, levels: int) -> list[np.ndarray]:
    """float64 means of each 2^l cube of the full level 0 (N, C, *S), for l = 1..levels."""
    out = []
    for lv in range(1, levels + 1):
        f = 1 << lv
        a = level0.astype(np.float64)
        spatial = a.shape[2:]
        pad = [(0, 0), (0, 0)] + [(0, (-n) % f) for n in spatial]
        ones = np.pad(np.ones(spatial), pad[2:])
        a = np.pad(a, pad)
        shape = list(a.shape[:2])
        for n in a.shape[2:]:
            shape += [n // f, f]
        axes = tuple(range(3, len(shape), 2))
        sums = a.reshape(shape).sum(axes)
        cshape = []
        for n in ones.shape:
            cshape += [n // f, f]
        counts = ones.reshape(cshape).sum(tuple(range(1, len(cshape), 2)))
        out.append(sums / counts)
    return out
