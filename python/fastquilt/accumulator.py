"""Streaming stitch: add batches of window predictions in any order, then finalise."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import ops
from ._args import device_arg, float_dtype_arg, index_tensor
from .normalize import weighted_mean
from .quilt import Quilt
from .transfer import to_device


class StitchAccumulator:
    """Weighted-sum and weight-sum buffers for ``num_images`` images of a :class:`Quilt`.

    Memory is ``(num_images, channels, *S)`` + ``(num_images, *S)`` in ``dtype`` (float32 or
    float64) on ``device``; patches may come from any device and are moved there. Each window
    may be added once: adding it again raises instead of counting it twice.
    """

    def __init__(
        self,
        quilt: Quilt,
        num_images: int,
        channels: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"accumulator dtype must be float32 or float64, got {dtype}")
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        self.quilt = quilt
        self.device = device_arg(device) or torch.device("cpu")
        self.dtype = dtype
        S = quilt.spatial_shape
        self.acc = torch.zeros((num_images, channels, *S), dtype=dtype, device=self.device)
        self.weight_sum = torch.zeros((num_images, *S), dtype=dtype, device=self.device)
        self._weight = quilt.weight_for(dtype, self.device)
        self._all_origins = quilt.origins(num_images, self.device)
        self._seen = torch.zeros(num_images * quilt.num_windows, dtype=torch.bool)

    @property
    def num_images(self) -> int:
        return self.acc.shape[0]

    @property
    def windows_added(self) -> int:
        return int(self._seen.sum())

    @property
    def total_windows(self) -> int:
        return self._seen.numel()

    def add(self, patches: torch.Tensor, indices: torch.Tensor | Sequence[int]) -> None:
        """Add predictions ``patches`` ``(B, C, *window)`` of the windows with global indices
        ``indices`` (``n * num_windows + k``, as ``Quilt.unstitch`` orders them)."""
        idx = index_tensor(indices)
        if not isinstance(patches, torch.Tensor):
            raise TypeError(f"patches must be a torch.Tensor, got {type(patches).__name__}")
        want = (idx.numel(), self.acc.shape[1], *self.quilt.window)
        if tuple(patches.shape) != want:
            raise ValueError(f"patches must have shape {want} for {idx.numel()} indices, "
                             f"got {tuple(patches.shape)}")
        if not patches.is_floating_point():
            raise TypeError(f"patches must be floating point, got {patches.dtype}")
        if idx.numel() == 0:
            return
        if int(idx.min()) < 0 or int(idx.max()) >= self.total_windows:
            raise ValueError(f"indices must lie in [0, {self.total_windows}), got "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        if bool(self._seen[idx].any()) or torch.unique(idx).numel() != idx.numel():
            dup = idx[self._seen[idx]].tolist()[:5] or "repeated within the batch"
            raise ValueError(f"windows already added (would be counted twice): {dup}")
        p = patches.detach()
        if ops.acc_dtype(p.dtype) != self.dtype:  # fp16/bf16 go in as they are
            p = p.to(self.dtype)
        p = to_device(p, self.device)
        origins = self._all_origins[idx.to(self.device)]
        ops.scatter_add_windows_(p, origins, self.acc, self.weight_sum, weight=self._weight)
        self._seen[idx] = True

    def finalize(
        self, dtype: torch.dtype | None = None, fill_value: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, weight_sum)``: ``acc / weight_sum`` by :mod:`fastquilt.normalize`'s rule,
        ``fill_value`` (default: the quilt's) where no window was added; ``mean`` cast to
        ``dtype`` (default: the accumulator's).
        The buffers are not modified, so ``finalize`` can be called again."""
        dtype = float_dtype_arg(dtype, "dtype")
        fill = self.quilt.fill_value if fill_value is None else float(fill_value)
        mean = weighted_mean(self.acc, self.weight_sum, fill)
        return (mean if dtype is None else mean.to(dtype)), self.weight_sum
