"""Training batches at device speed: :class:`WindowSampler` draws ``B`` windows per step and
gathers them, flipped and rotated by the gather kernel's index math, straight from a volume in
GPU or CPU memory (or read window by window from a memmap, zarr or dask array), with the label
frame masked as :func:`unstitch_pair` does."""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .. import buffers, ops
from .._args import bool_arg, index_tensor
from ..arrays import read_box
from ..quilt import Quilt
from ..transfer import staged_to_device
from . import sampling
from .cleaning import select_windows, window_label_counts
from .labels import check_missing_label, label_has_channel_axis, torch_dtype


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


# numpy dtypes the gather kernels read in place
_IN_PLACE = {np.dtype(t) for t in (bool, np.uint8, np.int8, np.int16, np.int32, np.int64,
                                   np.float16, np.float32, np.float64)}


def _as_source(array):
    """A torch tensor stays as it is (any device; a strided one is read window by window); a
    C-contiguous numpy array or memmap of a dtype the kernels read becomes a tensor over the
    same memory (no copy: the gather reads it in place, and never writes it); other
    array-likes, strided views included (the kernels would copy them whole for every batch),
    are read window by window."""
    if (isinstance(array, np.ndarray) and array.dtype in _IN_PLACE
            and array.flags.c_contiguous):
        with warnings.catch_warnings():  # a read-only memmap: only ever read
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    return array


class WindowSampler(torch.utils.data.IterableDataset):
    """Batches ``(images (B, C, *window), labels (B, [C,] *window))`` of windows of ``volume``
    ``(N, C, *S)`` and ``labels`` (``(N, *S)`` / ``(N, C, *S)``), on the training device.

    Args:
        volume, labels: torch tensors on any device (gathered in place: a volume in GPU
            memory feeds the GPU at its memory bandwidth), numpy arrays / memmaps, or zarr /
            dask / h5py arrays (read window by window). ``labels`` may be None.
        quilt: the windows (``Quilt(S, window, step, border=...)``): their size, the grid the
            ``"grid"``, ``"labelled"`` and ``"balanced"`` modes draw from, and the label frame.
        missing_label: unlabelled value; written into every label patch's border frame.
        batch_size: windows per batch ``B``.
        where: ``"grid"`` every grid window (the kept ones when labels and ``missing_label``
            are given) exactly once per epoch, shuffled; ``"uniform"`` any position, uniformly;
            ``"labelled"`` grid windows with probability proportional to the labelled voxels in
            their interior; ``"balanced"`` slot ``i`` of a batch drawn in proportion to the
            voxels of class ``i mod K`` (every batch of ``B >= K`` holds each class).
        augment: per-window flips and axis permutations (90-degree rotations among axes of
            equal window size and border), done by the gather's index math, the same for
            image and labels.
        seed: batches are a pure function of (seed, epoch, step), drawn on the CPU: the same
            on every device and with any number of DataLoader workers.
        device: where batches are returned (default: the volume's device). A CPU source
            feeding a CUDA device goes through pinned memory with asynchronous copies.
        dtype: dtype of the image batches (converted on ``device``); labels keep theirs.
        steps_per_epoch: batches per epoch for the random modes (default: as many as the grid
            mode would have). drop_last: the grid mode drops a last partial batch.
        prefetch: prepare the next batch in a background thread while the current one is
            used (for sources not already on ``device``).

    Iterate it directly (``for x, y in sampler``), or hand it to
    ``DataLoader(sampler, batch_size=None)``; call :meth:`set_epoch` between epochs.
    """

    def __init__(self, volume, labels, quilt: Quilt, missing_label=None, *, batch_size: int,
                 where: str = "grid", augment: bool = True, seed: int = 0, device=None,
                 dtype: torch.dtype = torch.float32, steps_per_epoch: int | None = None,
                 drop_last: bool = False, prefetch: bool = True, **criteria) -> None:
        D, S = quilt.ndim, quilt.spatial_shape
        if len(volume.shape) != D + 2 or tuple(volume.shape[2:]) != S:
            raise ValueError(f"volume must have shape (N, C, {', '.join(map(str, S))}) for this "
                             f"quilt, got {tuple(volume.shape)}")
        self.batch_size = _positive_int(batch_size, "batch_size")
        if where not in sampling.WHERE:
            raise ValueError(f"where must be one of {sampling.WHERE}, got {where!r}")
        self.N, self.quilt, self.where = int(volume.shape[0]), quilt, where
        self.label_channel, self.missing_label = False, None
        if labels is not None:
            self.label_channel = label_has_channel_axis(labels.shape, S)
            if int(labels.shape[0]) != self.N:
                raise ValueError(f"labels have {int(labels.shape[0])} images but the volume "
                                 f"has {self.N}")
            self.missing_label = check_missing_label(missing_label, torch_dtype(labels.dtype))
        if where in ("labelled", "balanced") and self.missing_label is None:
            raise ValueError(f"where={where!r} needs labels and missing_label (the value of "
                             "unlabelled voxels, e.g. -1)")
        self.volume, self.labels = _as_source(volume), _as_source(labels)
        on = self.volume.device if isinstance(self.volume, torch.Tensor) else torch.device("cpu")
        self.device = torch.device(device) if device is not None else on
        self.dtype, self.seed = dtype, int(seed)
        self.augment = bool_arg(augment, "augment")
        self.prefetch = bool_arg(prefetch, "prefetch")
        self.origins = quilt.grid.origins(self.N)  # every grid window, (N * windows, 1 + D)
        self.indices = self._candidates(labels, criteria)
        if where == "grid":
            steps = sampling.steps_per_epoch(self.indices.numel(), self.batch_size, drop_last)
            if steps_per_epoch is not None:
                raise ValueError("steps_per_epoch is set by the grid in where='grid'")
        else:
            steps = steps_per_epoch if steps_per_epoch is not None else max(
                1, sampling.steps_per_epoch(self.indices.numel(), self.batch_size, drop_last))
        self.steps = _positive_int(steps, "steps_per_epoch") if steps else 0
        if where == "grid" and self.steps == 0:
            raise ValueError(f"{self.indices.numel()} grid windows make no batch of "
                             f"{self.batch_size} with drop_last=True")
        self.choices = sampling.orientation_choices(quilt.window, quilt.border) if augment \
            else torch.arange(1, D + 1).unsqueeze(0)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def _candidates(self, labels, criteria) -> torch.Tensor:
        """The grid windows the mode draws from; label counts for the label-aware modes."""
        where, total = self.where, self.N * self.quilt.num_windows
        if where in ("labelled", "balanced"):
            if criteria:
                raise TypeError(f"unexpected arguments {sorted(criteria)} for where={where!r}")
            counts, per_class = window_label_counts(self.quilt, labels, self.missing_label,
                                                    per_class=where == "balanced")
            self.counts = counts
            self.per_class = {k: c for k, c in per_class.items() if int(c.sum()) > 0}
            if int(counts.sum()) == 0 or (where == "balanced" and not self.per_class):
                raise ValueError("no window holds a labelled voxel in its interior: nothing to "
                                 "sample (check missing_label, the border, or the labels)")
            return torch.nonzero(counts).reshape(-1)
        if where == "grid" and labels is not None and self.missing_label is not None:
            kept, self.stats = select_windows(self.quilt, labels, self.missing_label, **criteria)
            if kept.numel() == 0:
                raise ValueError("no window holds a labelled voxel in its interior: nothing to "
                                 "sample (check missing_label, the border, or the labels)")
            return index_tensor(kept)
        if criteria:
            raise TypeError(f"unexpected arguments {sorted(criteria)}")
        return torch.arange(total)

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Draw another epoch's batches (DataLoader workers, persistent ones too, see it)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return self.steps

    def draw(self, step: int, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step``'s windows: origins ``(B, 1 + D)`` and orientations ``(B, D)``, int64
        on the CPU (the grid mode's last batch may be shorter)."""
        epoch = self.epoch if epoch is None else int(epoch)
        B, gen = self.batch_size, sampling.generator(self.seed, epoch, step)
        if self.where == "grid":
            order = getattr(self, "_order", None)
            if order is None or order[0] != epoch:
                self._order = order = (epoch, sampling.epoch_order(self.indices, self.seed, epoch))
            origins = self.origins[order[1][step * B:(step + 1) * B]]
        elif self.where == "uniform":
            origins = sampling.uniform_origins(self.quilt, self.N, B, gen)
        elif self.where == "labelled":
            origins = self.origins[sampling.weighted_windows(self.counts, B, gen)]
        else:
            origins = self.origins[sampling.balanced_windows(self.per_class, B, step * B, gen)]
        return origins, sampling.draw_orientations(self.choices, origins.shape[0], gen)

    def _gather(self, source, origins, orient, channel: bool) -> torch.Tensor:
        """Oriented windows of one source, on the source's device (CPU for array-likes), in a
        reused buffer once the caller has dropped an earlier batch (buffers.py: fresh CPU
        memory costs a page fault per 4 KiB)."""
        w = self.quilt.window
        # A strided tensor of more than 8 batches' voxels is read window by window, like
        # other array-likes: the kernels would copy it whole for every batch.
        if isinstance(source, torch.Tensor) and (
                source.is_contiguous() or source.shape[0] * math.prod(source.shape[-len(w):])
                <= 8 * origins.shape[0] * math.prod(w)):
            src = source.detach() if channel else source.detach().unsqueeze(1)
            dev = src.device
            out = buffers.empty((origins.shape[0], src.shape[1], *w), src.dtype, dev)
            return ops.gather_windows_oriented_into(src, origins.to(dev), orient.to(dev), out)
        boxes = []
        for o in origins.tolist():  # one read per window, then the same fused orientation
            sl = tuple(slice(a, a + k) for a, k in zip(o[1:], w))
            box = read_box(source, (o[0], slice(None), *sl) if channel else (o[0], *sl),
                           copy=True)  # (a view with negative strides is no tensor)
            boxes.append(box if channel else box.unsqueeze(0))
        stack = torch.stack(boxes)
        own = torch.zeros_like(origins)
        own[:, 0] = torch.arange(origins.shape[0])
        return ops.gather_windows_oriented(stack, own.to(stack.device), orient.to(stack.device),
                                           w)

    def _mask_frame(self, y: torch.Tensor) -> None:
        """``missing_label`` into the border frame of label patches ``(B, C, *window)``: two
        slabs per axis, filled in place (a broadcast boolean mask costs several times more)."""
        for d, (w, b) in enumerate(zip(self.quilt.window, self.quilt.border or ())):
            if b:
                y.narrow(2 + d, 0, b).fill_(self.missing_label)
                y.narrow(2 + d, w - b, b).fill_(self.missing_label)

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t if t.device == self.device else staged_to_device(t, self.device)

    def batch(self, step: int, epoch: int | None = None):
        """Batch ``step`` of ``epoch`` (default: the current one): ``(images, labels)``, or
        images alone without labels."""
        origins, orient = self.draw(step, epoch)
        x = self._to_device(self._gather(self.volume, origins, orient, True)).to(self.dtype)
        if self.labels is None:
            return x
        y = self._gather(self.labels, origins, orient, self.label_channel)
        if self.missing_label is not None:
            self._mask_frame(y)
        y = self._to_device(y)
        return x, (y if self.label_channel else y.squeeze(1))

    def _my_steps(self) -> range:
        info = torch.utils.data.get_worker_info()
        return range(self.steps) if info is None else range(info.id, self.steps,
                                                            info.num_workers)

    def __iter__(self):
        epoch, steps = self.epoch, self._my_steps()
        local = isinstance(self.volume, torch.Tensor) and self.volume.device == self.device
        if not self.prefetch or local or len(steps) < 2:
            for s in steps:
                yield self.batch(s, epoch)
            return
        with ThreadPoolExecutor(max_workers=1) as pool:  # one batch ahead
            ahead = pool.submit(self.batch, steps[0], epoch)
            for s in steps[1:]:
                current, ahead = ahead.result(), pool.submit(self.batch, s, epoch)
                yield current
            yield ahead.result()
