"""The out-of-core output store's bookkeeping: the units it is written in (blocks of whole
chunks), the done-marker per finished unit that a resumed run skips, and the metadata that
refuses to resume into an output made differently."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._args import float_dtype_arg

if TYPE_CHECKING:
    from .quilt import Quilt

FORMAT_VERSION = 1


class Units:
    """The output cut into units of whole chunks: ids, boxes and the units a window touches."""

    def __init__(self, N: int, spatial: tuple[int, ...], unit: tuple[int, ...]) -> None:
        self.N, self.spatial, self.unit = N, spatial, unit
        self.counts = tuple(math.ceil(S / u) for S, u in zip(spatial, unit))
        self.per_image = int(np.prod(self.counts))

    def total(self) -> int:
        return self.N * self.per_image

    def id(self, n: int, idx: Sequence[int]) -> int:
        return n * self.per_image + int(np.ravel_multi_index(tuple(idx), self.counts))

    def box(self, uid: int) -> tuple[int, tuple[slice, ...]]:
        n, rest = divmod(uid, self.per_image)
        idx = np.unravel_index(rest, self.counts)
        return n, tuple(slice(i * u, min((i + 1) * u, S))
                        for i, u, S in zip(idx, self.unit, self.spatial))

    def touched(self, origin: Sequence[int], window: Sequence[int]) -> list[int]:
        """Units that the window at ``origin`` ``[n, start...]`` overlaps."""
        n, starts = origin[0], origin[1:]
        ranges = [range(s // u, (s + w - 1) // u + 1) for s, w, u in zip(starts, window, self.unit)]
        return [self.id(n, idx) for idx in itertools.product(*ranges)]


def store_metadata(x_shape, q: Quilt, unit, out_channels: int, out_dtype: str,
                   weight: object) -> dict:
    """What an output was made with; a resumed run must ask for exactly this."""
    return json.loads(json.dumps({
        "format": FORMAT_VERSION,
        "input_shape": list(x_shape),
        "window": list(q.window),
        "step": list(q.step),
        "border": list(q.border) if q.border is not None else None,
        "weight": weight,
        "unit": list(unit),
        "out_channels": int(out_channels),
        "dtype": str(np.dtype(out_dtype)),
    }))


def zarr_dtype(out_dtype) -> str:
    """The numpy name of a floating ``out_dtype`` that zarr can store (not bfloat16)."""
    d = float_dtype_arg(out_dtype) or torch.float32
    if d is torch.bfloat16:
        raise TypeError("out_dtype bfloat16 cannot be stored in zarr (numpy has no bfloat16); "
                        "use float16 or float32")
    return str(d).replace("torch.", "")


def weight_desc(weight, border_weight: float) -> object:
    """The weight as stored in the metadata (a tensor by its hash)."""
    if isinstance(weight, torch.Tensor):
        w = weight.detach().double().cpu().numpy()
        return {"tensor_sha256": hashlib.sha256(w.tobytes()).hexdigest(), "shape": list(w.shape)}
    return {"kind": weight or "border", "border_weight": float(border_weight)}


class Progress:
    """Done-markers, one small file per finished unit, beside the output store."""

    def __init__(self, out_path: Path) -> None:
        self.dir = out_path.parent / (out_path.name + ".fastquilt-progress")

    def done(self) -> set[int]:
        if not self.dir.exists():
            return set()
        return {int(p.name[1:]) for p in self.dir.iterdir() if p.name.startswith("u")}

    def clear(self) -> None:
        """Remove the markers (and their folder): they belong to an output that is gone."""
        if not self.dir.exists():
            return
        for p in self.dir.iterdir():
            if p.name.startswith(("u", ".tmp-")):
                p.unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:  # something else lives there: leave the folder
            pass

    def mark(self, uid: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".tmp-{uid}-{threading.get_ident()}"
        tmp.write_text("done")
        os.replace(tmp, self.dir / f"u{uid}")  # atomic: a marker exists only once written


def progress_of(out: str | os.PathLike) -> dict:
    """Units done / total of an output made by :func:`sliding_window_zarr` (for monitoring)."""
    import zarr

    out_path = Path(out)
    arr = zarr.open_array(str(out_path), mode="r")
    meta = dict(arr.attrs)["fastquilt"]
    units = Units(arr.shape[0], tuple(arr.shape[2:]), tuple(meta["unit"]))
    return {"done": len(Progress(out_path).done()), "total": units.total(),
            "metadata": dict(meta)}
