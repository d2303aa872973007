"""What one out-of-core run is: its layout (the window grid, the weight, the output's chunks,
shards and units, the window origins), the input array and the output store. The local loop
and the dask tasks share it; it pickles (dask ships it to the workers)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._args import per_axis
from ..arrays import MemmapArray
from ..quilt import Quilt
from .store import FORMAT_VERSION, OutputStore, weight_desc
from .units import Units


class Layout:
    """The geometry of a run over an input of ``shape`` ``(N, C, *S)``: the quilt (grid and
    weight), the output chunks, shards and units, and the origins of every window."""

    def __init__(self, shape: Sequence[int], window, step, weight, border, border_weight, *,
                 chunks, unit, shards, allow_gaps: bool = False) -> None:
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (4, 5):
            raise ValueError(
                f"x must be an (N, C, Y, X) or (N, C, Z, Y, X) array, got shape {self.shape}")
        self.N, self.spatial = self.shape[0], self.shape[2:]
        if self.N == 0:  # the output's channel count comes from running the model
            raise ValueError("x has no images (N = 0): there is nothing to run the model on")
        D = len(self.spatial)
        self.q = Quilt(self.spatial, window, step, border=border, border_weight=border_weight,
                       weight=weight, allow_gaps=allow_gaps)
        chunk = per_axis(chunks if chunks is not None else (64 if D == 3 else 256), D, "chunks",
                         minimum=1)
        self.chunk = tuple(min(c, S) for c, S in zip(chunk, self.spatial))
        # With sharding the shard is zarr's write unit: units must hold whole shards.
        self.shards = (tuple(min(v, S) for v, S in zip(per_axis(shards, D, "shards", minimum=1),
                                                        self.spatial))
                       if shards is not None else None)
        block = self.shards or self.chunk
        if self.shards is not None:
            for d in range(D):
                if self.shards[d] % self.chunk[d] and self.shards[d] < self.spatial[d]:
                    raise ValueError(f"shards {self.shards} must be a multiple of chunks "
                                     f"{self.chunk} on every axis (axis {d})")
        self.unit = (per_axis(unit, D, "unit", minimum=1) if unit is not None
                     else tuple(min(2 * c, S) for c, S in zip(block, self.spatial)))
        for d in range(D):
            if self.unit[d] % block[d] and self.unit[d] < self.spatial[d]:
                name = "shards" if self.shards else "chunks"
                raise ValueError(
                    f"unit {self.unit} must be a multiple of {name} {block} on every axis "
                    f"(axis {d}), so that no two units share a {name[:-1]}")
        self.units = Units(self.N, self.spatial, self.unit)
        self.origins = self.q.grid.origins(self.N)
        self.weight = self.q.weight.detach().to("cpu", torch.float32).contiguous()

    @property
    def window(self) -> tuple[int, ...]:
        return self.q.window

    def weight_on(self, device: torch.device | str) -> torch.Tensor:
        """The window weight (float32) on ``device``."""
        return self.q.weight_for(torch.float32, torch.device(device))

    def metadata(self, out_dtype: str, weight, border_weight: float) -> dict:
        """What the output is made with (without the model's channel count): a resumed run
        must ask for exactly this."""
        q = self.q
        return {
            "format": FORMAT_VERSION,
            "input_shape": list(self.shape),
            "window": list(q.window),
            "step": list(q.step),
            "border": list(q.border) if q.border is not None else None,
            "weight": weight_desc(weight, border_weight),
            "unit": list(self.unit),
            "dtype": str(np.dtype(out_dtype)),
        }

    def plan(self, done: set[int]) -> tuple[list[int], dict[int, int]]:
        """Windows to run (those touching an unfinished unit) and, per unfinished unit, how
        many of them touch it."""
        todo, remaining = [], {}
        for k in range(self.origins.shape[0]):
            undone = [u for u in self.units.touched(self.origins[k].tolist(), self.window)
                      if u not in done]
            if undone:
                todo.append(k)
                for u in undone:
                    remaining[u] = remaining.get(u, 0) + 1
        return todo, remaining


class Job:
    """One run: its :class:`Layout`, the input array ``x`` and the :class:`OutputStore`."""

    def __init__(self, x, layout: Layout, store: OutputStore) -> None:
        self.x = MemmapArray(x) if isinstance(x, np.memmap) else x
        self.layout, self.store = layout, store
