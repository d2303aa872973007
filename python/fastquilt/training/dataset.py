"""A lazy training dataset: reads only the windows it serves, from tensors, numpy memmaps or
zarr arrays, with optional flips / rot90 applied to image and labels together."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .._args import bool_arg, index_tensor
from ..arrays import read_box
from ..quilt import Quilt
from .cleaning import select_windows
from .labels import check_missing_label, is_missing, label_has_channel_axis, torch_dtype


def _read(array, n: int, channel: bool, sl: tuple) -> torch.Tensor:
    """One window of an (N, C, *S) / (N, *S) array-like, read with a single slice, in a
    buffer of its own (the caller writes the label frame into it)."""
    return read_box(array, (n, slice(None), *sl) if channel else (n, *sl), copy=True)


class PatchDataset(torch.utils.data.Dataset):
    """Windows of ``volume`` (``(N, C, *S)``) and ``labels`` (``(N, *S)`` or ``(N, C, *S)``)
    on the grid of ``quilt``, read lazily one window at a time.

    Args:
        volume, labels: torch tensors, numpy arrays / memmaps or zarr arrays (anything that
            slices); ``labels`` may be None (inference / self-supervision).
        quilt: the window grid (``Quilt(volume.shape[2:], window, step, border=...)``).
        missing_label: labels with this value are "unlabelled"; the border frame of every
            label patch is set to it (qlty semantics).
        indices: global window indices to serve. Default: the windows cleaning keeps (those
            with a label in their interior) when ``labels`` and ``missing_label`` are given,
            else all windows. Deciding that reads the labels once (box sums, O(volume)).
        augment: random flips along every axis and a rot90 in a plane of equal window sizes,
            applied identically to image and labels; deterministic in (seed, epoch, index),
            so any number of DataLoader workers gives the same samples.
        dtype: dtype of the image patches.

    Memory is O(one window) per item: nothing is materialised up front.
    """

    def __init__(
        self,
        volume,
        labels,
        quilt: Quilt,
        missing_label=None,
        *,
        indices: Sequence[int] | torch.Tensor | None = None,
        augment: bool = False,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        **criteria,
    ) -> None:
        D = quilt.ndim
        if len(volume.shape) != D + 2 or tuple(volume.shape[2:]) != quilt.spatial_shape:
            raise ValueError(
                f"volume must have shape (N, C, {', '.join(map(str, quilt.spatial_shape))}) "
                f"for this quilt, got {tuple(volume.shape)}"
            )
        self.volume, self.labels, self.quilt = volume, labels, quilt
        self.N = int(volume.shape[0])
        self.label_channel = False
        self.stats = None
        if labels is not None:
            self.label_channel = label_has_channel_axis(labels.shape, quilt.spatial_shape)
            if int(labels.shape[0]) != self.N:
                raise ValueError(f"labels have {int(labels.shape[0])} images but the volume has "
                                 f"{self.N}")
            self.missing_label = check_missing_label(missing_label, torch_dtype(labels.dtype))
        else:
            self.missing_label = None
        if indices is None and labels is not None and self.missing_label is not None:
            # an array-like is read slab by slab while sparse (select_windows)
            indices, self.stats = select_windows(quilt, labels, self.missing_label, **criteria)
        elif criteria:
            raise TypeError(f"unexpected arguments {sorted(criteria)}")
        if indices is None:
            indices = torch.arange(self.N * quilt.num_windows)
        self.indices = index_tensor(indices)
        self.origins = quilt.grid.origins(self.N, indices=self.indices)
        self.frame = quilt.border_mask() < 0.5
        self.augment, self.seed, self.dtype = bool_arg(augment, "augment"), int(seed), dtype
        # In shared memory: DataLoader workers (persistent ones too) hold copies of the
        # dataset, and must see the epoch the main process sets.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations (still deterministic) for another epoch; DataLoader workers,
        persistent ones included, see it."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return int(self.indices.numel())

    def _augment(self, tensors: list[torch.Tensor], index: int) -> list[torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        D, w = self.quilt.ndim, self.quilt.window
        flips = [d for d in range(D) if rng.random() < 0.5]
        planes = [(a, b) for a in range(D) for b in range(a + 1, D) if w[a] == w[b]]
        k = int(rng.integers(0, 4))
        plane = planes[int(rng.integers(0, len(planes)))] if planes else None
        out = []
        for t in tensors:
            off = t.dim() - D  # leading channel axis, if any
            if flips:
                t = torch.flip(t, [off + d for d in flips])
            if plane is not None and k:
                t = torch.rot90(t, k, (off + plane[0], off + plane[1]))
            out.append(t.contiguous())
        return out

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} windows")
        o = self.origins[i].tolist()
        sl = tuple(slice(a, a + w) for a, w in zip(o[1:], self.quilt.window))
        x = _read(self.volume, o[0], True, sl).to(self.dtype)
        if self.labels is None:
            return self._augment([x], int(self.indices[i]))[0] if self.augment else x
        y = _read(self.labels, o[0], self.label_channel, sl)
        if self.missing_label is not None:
            frame = self.frame if not self.label_channel else self.frame.expand(y.shape)
            y.masked_fill_(frame, self.missing_label)  # y is _read's own copy
        if self.augment:
            x, y = self._augment([x, y], int(self.indices[i]))
        return x, y

    def labelled_fraction(self, y: torch.Tensor) -> float:
        """Fraction of a served label patch that is labelled."""
        return float((~is_missing(y, self.missing_label)).float().mean())
