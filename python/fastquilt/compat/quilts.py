"""qlty 1.5.0's in-memory quilts ``NCYXQuilt`` and ``NCZYXQuilt`` with qlty's names,
signatures, defaults and return shapes, on fastquilt's quilt."""

from __future__ import annotations

import torch

from ..quilt import Quilt
from ..training.labels import unstitch_pair


class _QltyQuilt:
    """Shared body of the 2D and 3D qlty classes."""

    _ndim = 2

    def __init__(self, shape, window, step, border, border_weight) -> None:
        self._q = Quilt(shape, window, step, border=border, border_weight=border_weight)
        self.window = tuple(self._q.window)
        self.step = tuple(self._q.step)
        self.border = self._q.border
        self.border_weight = max(float(border_weight), 1e-8)
        self.weight = self._q.weight

    def border_tensor(self) -> torch.Tensor:
        """1.0 in the window interior, 0.0 in the border frame (qlty's ``border_tensor``)."""
        return self._q.border_mask()

    def get_times(self) -> tuple[int, ...]:
        """Windows per spatial axis."""
        return tuple(self._q.counts)

    def _positions(self, N: int, include_n_position: bool, device) -> torch.Tensor:
        return self._q.positions(N, include_n=include_n_position).to(device)

    def _positional_channels(self, patches, positions, normalize_positions, position_mode):
        M, D = patches.shape[0], self._ndim
        dt = patches.dtype if patches.is_floating_point() else torch.float32
        chans = []
        for d in range(D):
            size = self.window[d]
            coord = torch.arange(size, device=patches.device, dtype=dt)
            if position_mode == "absolute":
                coord = coord + positions[:, d:d + 1].to(dt)  # (M, size)
                if normalize_positions:
                    coord = coord / self._q.spatial_shape[d]
            elif position_mode == "relative":
                coord = coord.expand(M, size)
                if normalize_positions and size > 1:
                    coord = coord / (size - 1)
            else:
                raise ValueError(f"position_mode must be 'absolute' or 'relative', got "
                                 f"{position_mode!r}")
            shape = [M, 1] + [1] * D
            shape[2 + d] = size
            chans.append(coord.reshape(shape).expand(M, 1, *self.window))
        return torch.cat([patches.to(dt)] + chans, dim=1)

    def unstitch(
        self,
        tensor: torch.Tensor,
        return_positions: bool = False,
        include_n_position: bool = False,
        add_positional_channels: bool = False,
        normalize_positions: bool = True,
        position_mode: str = "absolute",
    ):
        """Patches ``(M, C, *window)`` in qlty's order (and positions / positional channels)."""
        patches = self._q.unstitch(tensor)
        positions = None
        if return_positions or add_positional_channels:
            positions = self._positions(tensor.shape[0], include_n_position, tensor.device)
        if add_positional_channels:
            spatial = positions[:, 1:] if include_n_position else positions
            patches = self._positional_channels(patches, spatial, normalize_positions,
                                                position_mode)
        return (patches, positions) if return_positions else patches

    def unstitch_data_pair(
        self,
        tensor_in: torch.Tensor,
        tensor_out: torch.Tensor,
        missing_label=None,
        return_positions: bool = False,
        include_n_position: bool = False,
        add_positional_channels: bool = False,
        normalize_positions: bool = True,
        position_mode: str = "absolute",
    ):
        """Input and label patches; ``missing_label`` fills each label patch's border frame."""
        _, lab = unstitch_pair(self._q, tensor_in, tensor_out, missing_label=missing_label)
        res = self.unstitch(tensor_in, return_positions, include_n_position,
                            add_positional_channels, normalize_positions, position_mode)
        if return_positions:
            return res[0], lab, res[1]
        return res, lab

    def stitch(self, ml_tensor: torch.Tensor, use_numba: bool = True):
        """``(mean (N, C, *S), norma (*S))``; ``use_numba`` is accepted and ignored (fastquilt's
        stitch is race-free and deterministic)."""
        mean, weight_sum = self._q.stitch(ml_tensor)
        return mean, weight_sum[0]


class NCYXQuilt(_QltyQuilt):
    """qlty's 2D quilt for ``(N, C, Y, X)`` tensors (``border_weight`` defaults to 1.0)."""

    _ndim = 2

    def __init__(self, Y, X, window, step, border, border_weight: float = 1.0) -> None:
        self.Y, self.X = int(Y), int(X)
        super().__init__((Y, X), window, step, border, border_weight)
        self.nY, self.nX = self._q.counts


class NCZYXQuilt(_QltyQuilt):
    """qlty's 3D quilt for ``(N, C, Z, Y, X)`` tensors (``border_weight`` defaults to 0.1),
    with the step-back grid qlty lacks in 3D."""

    _ndim = 3

    def __init__(self, Z, Y, X, window, step, border, border_weight: float = 0.1) -> None:
        self.Z, self.Y, self.X = int(Z), int(Y), int(X)
        super().__init__((Z, Y, X), window, step, border, border_weight)
        self.nZ, self.nY, self.nX = self._q.counts
