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


def output_path(name: str, level: int = 0, root: str = "mean") -> str:
    """Where level ``level`` of output ``name`` lives in an OME-Zarr output (docs/formats.md):
    the root image's levels at the top, other float outputs under ``<name>/``, the labels
    under ``labels/labels/``."""
    if name == root:
        return str(level)
    return f"labels/{name}/{level}" if name == "labels" else f"{name}/{level}"


def mode_levels(labels: np.ndarray, levels: int) -> list[np.ndarray]:
    """The numpy reference of a label pyramid ``(N, C, *S)``: each level the mode of the
    ``2^D`` voxels below it in the level before (ties: the smallest label)."""
    from tests.formats.test_pyramid import mode_reference

    out, cur = [], labels
    for _ in range(levels):
        cur = np.stack([mode_reference(a) for a in cur])
        out.append(cur)
    return out


def check_outputs(path, names, levels: int, want0: dict, root: str = "mean",
                  exact_floats: bool = False) -> None:
    """Every output of the OME-Zarr output at ``path``: valid (ome-zarr-models), read by
    ome-zarr-py, level 0 equal to ``want0[name]``, and every level equal to the numpy
    reference downsample of level 0 (the mean for floats, the mode for labels)."""
    validate(path)
    nodes = read_with_ome_zarr_py(path)
    assert len(nodes[0].data) == levels + 1
    for name in names:
        got = [zarr.open_array(f"{path}/{output_path(name, lv, root)}", mode="r")[...]
               for lv in range(levels + 1)]
        if name == "labels":
            validate(f"{path}/labels/labels", "labels")
            assert any(str(n.zarr.path).rstrip("/").endswith("labels/labels") for n in nodes)
            np.testing.assert_array_equal(got[0], want0[name])
            for lv, (g, w) in enumerate(zip(got[1:], mode_levels(got[0], levels)), 1):
                assert g.dtype == got[0].dtype, (name, lv)
                np.testing.assert_array_equal(g, w, err_msg=f"{name} level {lv}")
            continue
        if name != root:
            validate(f"{path}/{name}")
        if exact_floats:
            np.testing.assert_array_equal(got[0], want0[name], err_msg=name)
        else:
            np.testing.assert_allclose(got[0], want0[name], rtol=1e-5, atol=1e-6, err_msg=name)
        for lv, (g, w) in enumerate(zip(got[1:], reference_levels(got[0], levels)), 1):
            assert g.shape == w.shape, (name, lv)
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6, err_msg=f"{name} level {lv}")
