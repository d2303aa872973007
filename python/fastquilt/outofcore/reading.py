"""Reading the input windows of a run: in rows, each input block read once and ahead of time
(the pipeline of a run in one process, and of each band of a cluster run), or one window (a
cluster run's probe of the model)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future

import torch

from ..arrays import read_box
from .job import Layout


def read_region(x, n: int, lo, hi) -> torch.Tensor:
    """The region ``[lo, hi)`` (spatial) of image ``n`` of ``x``, all channels: ``(C, *box)``."""
    return read_box(x, (n, slice(None), *(slice(a, b) for a, b in zip(lo, hi))))


def read_window(x, layout: Layout, k: int) -> torch.Tensor:
    """Window ``k`` of ``x``: ``(C, *window)``."""
    o = layout.origins[k].tolist()
    return read_region(x, o[0], o[1:], [s + w for s, w in zip(o[1:], layout.window)])


def windows_by_row(x, layout: Layout, todo: list[int], reader: Executor,
                   read_ahead: Callable[[], bool] = lambda: True
                   ) -> Iterator[tuple[int, list[tuple[int, torch.Tensor]]]]:
    """Yield ``(k, pieces)`` for the windows ``todo`` (in raster order): window ``k`` as views
    ``(a, piece (C, b - a, *window[1:]))`` of its planes ``[a, b)`` along axis 0, one per
    input block it spans (copied into a batch by the caller: no copy of a row of windows is
    made). The input is read in blocks of whole input-chunk planes along axis 0, each read
    once, the next one ahead of time on ``reader`` (while ``read_ahead()``: a tight memory
    bound may stop it): rows of windows overlap, so reading window by window (or row by row)
    would read most voxels two or more times."""
    chunks = getattr(x, "chunks", None)
    depth = int(chunks[2]) if isinstance(chunks, tuple) and len(chunks) > 2 and isinstance(
        chunks[2], int) else layout.window[0]
    S0, w0 = layout.spatial[0], layout.window[0]
    rest = [slice(None)] * (len(layout.spatial) - 1)

    def read_block(n: int, j: int) -> torch.Tensor:
        return read_box(x, (n, slice(None), slice(j * depth, min((j + 1) * depth, S0)), *rest))

    blocks: dict[tuple[int, int], Future] = {}

    def need(n: int, j: int) -> Future | None:
        if (n, j) not in blocks and j * depth < S0:
            blocks[(n, j)] = reader.submit(read_block, n, j)
        return blocks.get((n, j))

    row_key, row = None, []
    for k in todo:
        o = layout.origins[k].tolist()
        n, s0 = o[0], o[1]
        if (n, s0) != row_key:  # a new row of windows: the planes of its blocks it spans
            j0, j1 = s0 // depth, (s0 + w0 - 1) // depth
            for key in [key for key in blocks if key[0] != n or key[1] < j0]:
                del blocks[key]  # planes no later window needs
            row = []
            for j in range(j0, j1 + 1):
                part = need(n, j).result()
                a = max(s0, j * depth) - j * depth
                b = min(s0 + w0, j * depth + part.shape[1]) - j * depth
                row.append((j * depth + a - s0, part[:, a:b]))
            if read_ahead():
                need(n, j1 + 1)
            row_key = (n, s0)
        sl = tuple(slice(a, a + w) for a, w in zip(o[2:], layout.window[1:]))
        yield k, [(a, part[(slice(None), slice(None), *sl)]) for a, part in row]
