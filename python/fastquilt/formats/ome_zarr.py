"""OME-Zarr (NGFF) 0.5 metadata: the axes and per-level coordinate transformations of an image
fastquilt writes, and an OME-Zarr image opened as input, at one of its levels, seen as
fastquilt's ``(N, C, *S)`` and keeping its metadata (axis names and units, voxel size and
offset) for the output.

NGFF orders axes time, channel, space (2 or 3 axes); fastquilt's ``N`` is the time axis and
``C`` the channel axis. An input without them gets length-1 axes in their place; the output
always has both (``t`` of length ``N``, ``c`` of length ``C_out``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

VERSION = "0.5"


@dataclass
class SpaceMeta:
    """The spatial axes of an image: names (``z, y, x`` or ``y, x``), unit (an NGFF unit name
    such as ``"micrometer"``, or None), voxel size and position of voxel 0's centre, per
    axis, at level 0."""

    names: tuple[str, ...]
    unit: str | None = None
    scale: tuple[float, ...] = ()
    translation: tuple[float, ...] = ()
    time_unit: str | None = None
    source: str | None = None  # the input image this was copied from

    def __post_init__(self) -> None:
        D = len(self.names)
        self.scale = tuple(float(v) for v in (self.scale or (1.0,) * D))
        self.translation = tuple(float(v) for v in (self.translation or (0.0,) * D))

    def describe(self) -> dict:
        """What a resumed run must ask for (stored with the output)."""
        return {"names": list(self.names), "unit": self.unit, "scale": list(self.scale),
                "translation": list(self.translation)}


def space_meta(D: int, voxel_size=None, unit: str | None = None) -> SpaceMeta:
    """:class:`SpaceMeta` for ``D`` spatial axes with ``voxel_size`` (one number, or one per
    axis; default 1) in ``unit``."""
    names = ("z", "y", "x")[3 - D:]
    if voxel_size is None:
        return SpaceMeta(names, unit)
    vs = [voxel_size] * D if np.ndim(voxel_size) == 0 else list(voxel_size)
    if len(vs) != D or not all(isinstance(v, (int, float, np.number)) and not
                               isinstance(v, bool) and np.isfinite(v) and v > 0 for v in vs):
        raise ValueError(f"voxel_size must be one positive number or {D} of them (one per "
                         f"spatial axis, {', '.join(names)}), got {voxel_size!r}")
    return SpaceMeta(names, unit, tuple(vs))


def multiscales(space: SpaceMeta, levels: int, name: str) -> dict:
    """The ``attributes.ome`` of an image group with levels ``0..levels`` at paths
    ``"0"...``, axes ``t, c, *space``: level ``l``'s voxels are ``2^l`` level-0 voxels wide,
    centred on the middle of those (a translation of ``(2^l - 1) / 2`` voxels)."""
    axes = [{"name": "t", "type": "time", **({"unit": space.time_unit}
                                               if space.time_unit else {})},
            {"name": "c", "type": "channel"}]
    axes += [{"name": n, "type": "space", **({"unit": space.unit} if space.unit else {})}
             for n in space.names]
    datasets = []
    for lv in range(levels + 1):
        f = 1 << lv
        scale = [1.0, 1.0, *(s * f for s in space.scale)]
        shift = [0.0, 0.0, *(t + s * (f - 1) / 2 for s, t in zip(space.scale,
                                                                  space.translation))]
        transforms = [{"type": "scale", "scale": scale}]
        if any(shift):
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": str(lv), "coordinateTransformations": transforms})
    return {"version": VERSION,
            "multiscales": [{"name": name, "axes": axes, "datasets": datasets}]}


def dimension_names(D: int) -> tuple[str, ...]:
    return ("t", "c", *("z", "y", "x")[3 - D:])


@dataclass
class OmeInput:
    """Level ``level`` of the OME-Zarr image at ``path``, read as ``(N, C, *S)``: reads are
    lazy, slices of the level's zarr array; ``space`` is its metadata (the level's own voxel
    size and offset, which become the output's level 0)."""

    path: str
    level: int
    arr: object
    insert: tuple[int, ...]  # axes of (N, C, *S) the image lacks (length 1)
    space: SpaceMeta
    shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        shape = list(self.arr.shape)
        for i in self.insert:
            shape.insert(i, 1)
        self.shape = tuple(shape)
        self.dtype = self.arr.dtype
        chunks = list(self.arr.chunks)
        for i in self.insert:
            chunks.insert(i, 1)
        self.chunks = tuple(chunks)
        self.store, self.array_path = self.arr.store, self.arr.path

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key):
        if key is Ellipsis:
            key = (slice(None),) * self.ndim
        key = tuple(key) + (slice(None),) * (self.ndim - len(key))
        inner = tuple(k for i, k in enumerate(key) if i not in self.insert)
        out = np.asarray(self.arr[inner])
        kept = [i for i, k in enumerate(key) if not isinstance(k, (int, np.integer))]
        for i in self.insert:  # (an int there picks its only element: no axis)
            if not isinstance(key[i], (int, np.integer)):
                out = np.expand_dims(out, kept.index(i))
        return out


def open_ome_zarr(path: str | os.PathLike, level: int = 0) -> OmeInput:
    """Open level ``level`` (0: full resolution) of the OME-Zarr 0.4/0.5 image at ``path`` as
    an ``(N, C, *S)`` input of :func:`fastquilt.sliding_window`, with its metadata."""
    import zarr

    path = os.path.abspath(path)  # dask workers start elsewhere
    try:
        group = zarr.open_group(path, mode="r")
    except Exception as e:
        raise ValueError(f"{path} is not an OME-Zarr image (no zarr group there: {e})") from None
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)  # 0.5 keeps it under "ome", 0.4 at the top
    ms = ome.get("multiscales")
    if not ms:
        hint = (" (it is a bioformats2raw container: give the image inside it, e.g. "
                f"{os.path.join(path, '0')})") if "bioformats2raw.layout" in ome else ""
        raise ValueError(f"{path} has no OME-Zarr multiscales metadata{hint}")
    image = ms[0]
    datasets = image["datasets"]
    if isinstance(level, bool) or not isinstance(level, int) or not \
            0 <= level < len(datasets):
        raise ValueError(f"level must be an int in 0..{len(datasets) - 1} (the levels of "
                         f"{path}), got {level!r}")
    axes = image.get("axes") or [{"name": n} for n in ("t", "c", "z", "y", "x")][
        5 - len(group[datasets[level]["path"]].shape):]
    axes = [{"name": a} if isinstance(a, str) else a for a in axes]  # (0.3 named them only)
    kinds = [a.get("type") or _kind_by_name(a["name"]) for a in axes]
    space = [i for i, k in enumerate(kinds) if k == "space"]
    others = [k for k in kinds if k != "space"]
    if not 2 <= len(space) <= 3 or space != list(range(len(kinds) - len(space), len(kinds))) \
            or others not in ([], ["time"], ["channel"], ["time", "channel"]):
        raise ValueError(f"{path} has axes {[a['name'] for a in axes]} (types {kinds}); "
                         "fastquilt reads images with axes [time] [channel] and 2 or 3 spatial "
                         "axes, in that order")
    insert = tuple(i for i, k in ((0, "time"), (1, "channel")) if k not in others)
    arr = group[datasets[level]["path"]]
    scale, shift = _transforms(image.get("coordinateTransformations"),
                               datasets[level].get("coordinateTransformations"), len(axes))
    t_unit = next((a.get("unit") for a, k in zip(axes, kinds) if k == "time"), None)
    units = {a.get("unit") for i, a in enumerate(axes) if i in space}
    meta = SpaceMeta(tuple(axes[i]["name"] for i in space),
                     units.pop() if len(units) == 1 else None,
                     tuple(scale[i] for i in space), tuple(shift[i] for i in space),
                     time_unit=t_unit, source=f"{path} level {level}")
    return OmeInput(path, level, arr, insert, meta)


def _kind_by_name(name: str) -> str:
    return {"t": "time", "c": "channel"}.get(name, "space")


def _transforms(outer, inner, n: int) -> tuple[list[float], list[float]]:
    """Scale and translation per axis of a dataset (its own transforms, then the
    multiscale's, which NGFF applies after them)."""
    scale, shift = [1.0] * n, [0.0] * n
    for group in (inner or [], outer or []):
        for t in group:
            if t.get("type") == "scale" and "scale" in t:
                scale = [a * b for a, b in zip(scale, t["scale"])]
                shift = [a * b for a, b in zip(shift, t["scale"])]
            elif t.get("type") == "translation" and "translation" in t:
                shift = [a + b for a, b in zip(shift, t["translation"])]
    return scale, shift


def is_ome_zarr(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zarr group with OME-Zarr multiscales metadata."""
    import json

    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        f = os.path.join(path, name)
        if os.path.isfile(f):
            try:
                with open(f) as fh:
                    meta = json.load(fh)
            except (OSError, ValueError):
                return False
            attrs = meta.get(key, {}) if key else meta
            return "multiscales" in attrs.get("ome", attrs) if isinstance(attrs, dict) \
                else False
    return False

