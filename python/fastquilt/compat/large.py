"""qlty 1.5.0's ``LargeNCYXQuilt`` / ``LargeNCZYXQuilt`` loop, on the out-of-core unit design.

Same signatures and loop (``unstitch_next`` -> model -> ``stitch(patch, index)`` ->
``return_mean()``), but no per-window zarr ``+=``: partial sums live in RAM per output unit
(a block of whole chunks, :mod:`fastquilt.outofcore.units`), added in any order
(:class:`~fastquilt.outofcore.unit_sums.UnitSums`, as a cluster run's owners do); a unit is
normalised (:mod:`fastquilt.normalize`) and written once, when the last window touching it has
been stitched. Fixed qlty bugs: the weight sum is per image (stitching only image 1 gives
right values), a window stitched twice raises instead of counting twice, ``return_mean`` returns
the zarr array (out of core) and can be called again, ``renormalize_channels`` (3D) /
``normalize`` (2D) divide by the sum over channels. ``unstitch_next`` after the last window
raises ``StopIteration`` (as qlty), so ``for`` loops over ``range(quilt.N_chunks)`` and
``while``/``try`` loops both work.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..outofcore.job import Layout
from ..outofcore.unit_sums import UnitSums
from ..training.cleaning import clean_pairs


class _LargeQuilt:
    _default_chunk = 64

    def __init__(self, filename: str, N: int, spatial: Sequence[int], window, step, border,
                 border_weight: float) -> None:
        self.filename = str(filename)
        self.N = int(N)
        # the out-of-core run's geometry: the grid, its chunks and units, the window origins
        # and how many windows touch each unit
        self._layout = Layout((self.N, 1, *spatial), window, step, None, border, border_weight,
                              chunks=self._default_chunk, unit=None, shards=None)
        self._q = self._layout.q
        self.window, self.step = self._q.window, self._q.step
        self.border = self._q.border
        self.border_weight = max(float(border_weight), 1e-8)
        self.weight = self._q.weight.double()
        self.N_chunks = self.N * self._q.num_windows
        self._next = 0
        self._chunk = self._layout.chunk
        self._units, self._origins = self._layout.units, self._layout.origins
        self._w = self._layout.weight
        self._remaining = self._layout.plan(set())[1]
        self._seen = np.zeros(self.N_chunks, bool)
        self._sums: UnitSums | None = None  # channels: the prediction's, then patch_var's
        self.mean = self.std = None
        self._with_std = False

    # ---- qlty's API -------------------------------------------------------------------------
    def border_tensor(self) -> np.ndarray:
        """1.0 in the window interior, 0.0 in the border frame (float64, as qlty)."""
        return self._q.border_mask().double().numpy()

    def get_times(self) -> tuple[int, ...]:
        return tuple(self._q.counts)

    def unstitch(self, tensor, index: int, return_positions: bool = False,
                 include_n_position: bool = False):
        """Window ``index`` of ``tensor`` ``(N, C, *S)`` as ``(C, *window)``; with
        ``return_positions`` also its start, int64 ``[start...]`` (``[n, start...]`` with
        ``include_n_position``), on the tensor's device (qlty 2D's options)."""
        if not 0 <= int(index) < self.N_chunks:
            raise IndexError(f"index {index} outside [0, {self.N_chunks})")
        o = self._origins[int(index)].tolist()
        sl = tuple(slice(s, s + w) for s, w in zip(o[1:], self.window))
        patch = tensor[(o[0], slice(None), *sl)]
        if not return_positions:
            return patch
        pos = o if include_n_position else o[1:]
        return patch, torch.tensor(pos, dtype=torch.int64, device=tensor.device)

    def unstitch_next(self, tensor, return_positions: bool = False,
                      include_n_position: bool = False):
        """``(index, window)`` of the next window (``(index, window, position)`` with
        ``return_positions``); ``StopIteration`` after the last one."""
        if self._next >= self.N_chunks:
            raise StopIteration(f"all {self.N_chunks} windows have been returned")
        i = self._next
        self._next += 1
        if return_positions:
            return (i, *self.unstitch(tensor, i, True, include_n_position))
        return i, self.unstitch(tensor, i)

    def unstitch_and_clean_sparse_data_pair(self, tensor_in, tensor_out, missing_label):
        """Input and label windows that hold a label in their interior (label borders blanked)."""
        xp, lp, _, _ = clean_pairs(self._q, tensor_in, tensor_out, missing_label)
        return xp, lp

    def _create(self, C: int, with_std: bool) -> None:
        import zarr

        shape = (self.N, C, *self._q.spatial_shape)
        chunks = (1, C, *self._chunk)
        self.mean = zarr.create_array(store=self.filename + "_mean.zarr", shape=shape,
                                      chunks=chunks, dtype="float32", fill_value=0.0,
                                      overwrite=True)
        if with_std:
            self.std = zarr.create_array(store=self.filename + "_std.zarr", shape=shape,
                                         chunks=chunks, dtype="float32", fill_value=0.0,
                                         overwrite=True)
        self._with_std = with_std
        self._C = C
        self._sums = UnitSums(self._units, 2 * C if with_std else C)

    def stitch(self, patch, index_flat: int, patch_var=None) -> None:
        """Add the prediction ``patch`` ``(1, C, *window)`` (or ``(C, *window)``) of window
        ``index_flat``; ``patch_var`` (the patch's shape, or one that broadcasts to it, as in
        qlty) is averaged likewise for ``std``."""
        k = int(index_flat)
        if not 0 <= k < self.N_chunks:
            raise IndexError(f"index_flat {k} outside [0, {self.N_chunks})")
        if self._seen[k]:
            raise ValueError(f"window {k} was already stitched (it would be counted twice)")
        p = torch.as_tensor(patch).detach().to("cpu", torch.float32)
        if p.dim() == len(self.window) + 2:
            p = p[0]
        if tuple(p.shape[1:]) != self.window:
            raise ValueError(f"patch must be (1, C, {', '.join(map(str, self.window))}), got "
                             f"{tuple(torch.as_tensor(patch).shape)}")
        if self.mean is None:
            self._create(p.shape[0], patch_var is not None)
        if self._with_std:
            if patch_var is None:
                raise ValueError("patch_var was given for earlier windows; give it every time")
            pv = torch.as_tensor(patch_var).detach().to("cpu", torch.float32)
            if pv.dim() == len(self.window) + 2:
                pv = pv[0]
            try:  # qlty broadcasts it (one channel for all, say)
                pv = pv.expand(p.shape[:p.dim() - pv.dim()] + pv.shape).expand(p.shape)
            except RuntimeError:
                raise ValueError(f"patch_var {tuple(torch.as_tensor(patch_var).shape)} does "
                                 f"not broadcast to the patch {tuple(p.shape)}") from None
            p = torch.cat([p, pv])  # averaged as extra channels
        pw = p * self._w
        o = self._origins[k].tolist()
        for uid in self._units.touched(o, self.window):
            src, dst = self._units.clip(uid, o[1:], self.window)
            self._sums.add(uid, dst, pw[(slice(None), *src)], self._w[src])
            self._remaining[uid] -= 1
            if self._remaining[uid] == 0:
                self._write(uid)
        self._seen[k] = True

    def _write(self, uid: int) -> None:
        mean = self._sums.pop_mean(uid).numpy()  # 0 where no window covers a voxel (qlty)
        n, box = self._units.box(uid)
        self.mean[(n, slice(None), *box)] = mean[:self._C]
        if self._with_std:
            self.std[(n, slice(None), *box)] = np.sqrt(np.abs(mean[self._C:]))

    def _return_mean(self, std: bool, renormalize_channels: bool):
        """The stitched mean as a zarr array ``(N, C, *S)`` on disk (``<filename>_mean.zarr``),
        and the std array when ``std``. Units some windows never reached are written with what
        they got (voxels no stitched window covers are 0). Can be called again.
        ``renormalize_channels``: divide by the sum over channels (qlty sums over images).
        qlty's ``eps`` (added to the weight sum) is accepted and not needed: units are written
        as soon as they are complete, where a voxel's weight sum is 0 only if no window covers
        it (then 0, as qlty's 0 / eps)."""
        if self.mean is None:
            raise ValueError("nothing was stitched yet")
        for uid in list(self._sums.buffers):
            self._write(uid)
        if std and self.std is None:
            raise ValueError("std=True needs patch_var in every stitch() call")
        if renormalize_channels and not getattr(self, "_renormalized", False):
            for uid in range(self._units.total()):
                n, box = self._units.box(uid)
                m = self.mean[(n, slice(None), *box)]
                norm = m.sum(axis=0, keepdims=True)
                norm = np.where(norm == 0, 1.0, norm)
                self.mean[(n, slice(None), *box)] = m / norm
                if std:
                    self.std[(n, slice(None), *box)] = self.std[(n, slice(None), *box)] / norm
            self._renormalized = True
        return (self.mean, self.std) if std else self.mean


class LargeNCYXQuilt(_LargeQuilt):
    """qlty's ``LargeNCYXQuilt(filename, N, Y, X, window, step, border, border_weight=0.1)``."""

    _default_chunk = 256

    def __init__(self, filename, N, Y, X, window, step, border, border_weight=0.1) -> None:
        self.Y, self.X = int(Y), int(X)
        super().__init__(filename, N, (Y, X), window, step, border, border_weight)
        self.nY, self.nX = self._q.counts

    def return_mean(self, std: bool = False, normalize: bool = False, eps: float = 1e-8):
        """qlty 2D's ``return_mean``; ``normalize`` makes the channels sum to 1 (see
        ``_return_mean``)."""
        return self._return_mean(std, normalize)


class LargeNCZYXQuilt(_LargeQuilt):
    """qlty's ``LargeNCZYXQuilt(filename, N, Z, Y, X, window, step, border=None,
    border_weight=0.1)``."""

    def __init__(self, filename, N, Z, Y, X, window, step, border=None,
                 border_weight=0.1) -> None:
        self.Z, self.Y, self.X = int(Z), int(Y), int(X)
        super().__init__(filename, N, (Z, Y, X), window, step, border, border_weight)
        self.nZ, self.nY, self.nX = self._q.counts

    def return_mean(self, std: bool = False, renormalize_channels: bool = False,
                    eps: float = 1e-8):
        """qlty 3D's ``return_mean`` (see ``_return_mean``)."""
        return self._return_mean(std, renormalize_channels)
