"""In-memory quilts: cut ``(N, C, *S)`` tensors into overlapping windows and stitch them back."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import buffers, ops
from .grid import Grid, build_grid_origins, grid_origins
from .normalize import weighted_mean
from .weights import border_mask, check_border, make_weight, normalize_border

# Methods that moved to the layers above the quilt (which the quilt does not import): where.
_MOVED = {
    "plan": "fastquilt.select_windows(quilt, labels, missing_label, ...)",
    "clean_pairs": "fastquilt.clean_pairs(quilt, x, labels, missing_label, ...)",
    "unstitch_pair": "fastquilt.unstitch_pair(quilt, x, labels, missing_label)",
    "accumulator": "fastquilt.StitchAccumulator(quilt, num_images, channels, device=...)",
}


def _records_autograd(t: torch.Tensor) -> bool:
    """Whether an op on ``t`` must be the out-of-place one: it records autograd (or is traced
    by torch.compile); otherwise outputs go into reusable buffers (buffers.py)."""
    return torch.compiler.is_compiling() or (torch.is_grad_enabled() and t.requires_grad)


def _reduced_axis(size: int, window: int, step: int) -> int:
    """An axis length with the same patterns of covering windows as ``size``: the start, whole
    periods of ``step`` in the middle and the same stepped-back end (the coverage of a voxel
    depends only on its offsets in the windows covering it)."""
    periods = -(-window // step) + 3
    if size <= window + periods * step:
        return size
    return window + periods * step + (size - window) % step


def _check_weighted_everywhere(weight: torch.Tensor, grid: Grid) -> None:
    """Every voxel lies in a window (no gaps); a weight with zeros must still give each one a
    positive weight sum, else it would silently get ``fill_value``. Checked on a reduced image
    with the same covering patterns, so the cost does not grow with the image."""
    if bool((weight.detach() > 0).all()):
        return
    w = weight.detach().to("cpu", torch.float64)
    reduced = tuple(_reduced_axis(S, k, s)
                    for S, k, s in zip(grid.spatial_shape, grid.window, grid.step))
    unweighted = int((ops.grid_weight_sum(w, reduced, grid.step) <= 0).sum())
    if unweighted:
        where = ("" if reduced == grid.spatial_shape else
                 f" of a {'x'.join(map(str, reduced))} part with the image's window pattern")
        raise ValueError(
            f"the weight tensor is 0 where no other window covers (e.g. the image border): "
            f"{unweighted} voxel(s){where} would get no weight, and fill_value, although "
            "windows cover them; use a weight that is > 0 at the window's edges (e.g. "
            "fastquilt.hann_weight, not 0 at the ends), pad the image, or pass "
            "allow_gaps=True to accept fill_value there")


class Quilt:
    """Overlapping windows on a 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` grid (qlty's step-back grid).

    Args:
        spatial_shape: spatial size of the images, e.g. ``x.shape[2:]``.
        window: window size (int or one per axis).
        step: step between windows (int or one per axis).
        border: qlty border (int, tuple or None): the frame that ``border_weight`` down-weights
            and that label masking blanks.
        border_weight: weight of the border frame in ``(0, 1]`` (0 is stored as 1e-8, as qlty).
        weight: ``None`` (qlty's border weight), ``"flat"``, ``"gaussian"``, ``"hann"``,
            ``"linear"`` or a tensor of shape ``window``.
        allow_gaps: allow ``step > window``; uncovered voxels get ``fill_value`` and weight 0.
        fill_value: value of voxels no window covers.

    ``unstitch(x)`` gives ``(N * num_windows, C, *window)`` patches in qlty's order;
    ``stitch(patches)`` gives the weighted mean ``(N, C, *S)`` (the patches' dtype, computed in
    float32 or float64) and the per-image weight sum ``(N, *S)``.
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        window: int | Sequence[int],
        step: int | Sequence[int],
        border: int | Sequence[int] | None = None,
        border_weight: float = 0.1,
        weight: str | torch.Tensor | None = None,
        *,
        allow_gaps: bool = False,
        fill_value: float = 0.0,
    ) -> None:
        self.grid = Grid(spatial_shape, window, step, allow_gaps=allow_gaps)
        self.border = normalize_border(border, self.grid.ndim)
        check_border(self.border, self.grid.window)
        self.weight = make_weight(weight, self.grid.window, self.border, border_weight)
        if not self.grid.allow_gaps:
            _check_weighted_everywhere(self.weight, self.grid)
        self.fill_value = float(fill_value)
        self._weights: dict = {}
        self._wsums: dict = {}

    # ---- geometry -------------------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.grid.spatial_shape

    @property
    def window(self) -> tuple[int, ...]:
        return self.grid.window

    @property
    def step(self) -> tuple[int, ...]:
        return self.grid.step

    @property
    def ndim(self) -> int:
        return self.grid.ndim

    @property
    def num_windows(self) -> int:
        """Windows per image."""
        return self.grid.num_windows

    @property
    def counts(self) -> tuple[int, ...]:
        """Windows per axis (qlty's ``get_times()``)."""
        return self.grid.counts

    def positions(self, num_images: int = 1, include_n: bool = True) -> torch.Tensor:
        """Window origins, int64 ``(num_images * num_windows, 1 + D)`` ``[n, start_0, ...]``
        (or without the ``n`` column)."""
        o = self.grid.origins(num_images)
        return o if include_n else o[:, 1:].contiguous()

    def weight_for(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The window weight in the accumulation dtype of ``dtype`` on ``device``, detached:
        the ops that take it record no autograd (a trainable weight's gradient path uses
        ``self.weight`` itself). Cached, unless the weight is trainable (it changes)."""
        key = (ops.acc_dtype(dtype), torch.device(device))
        if self.weight.requires_grad:
            return self.weight.detach().to(device=key[1], dtype=key[0]).contiguous()
        w = self._weights.get(key)
        if w is None:
            w = self.weight.to(device=key[1], dtype=key[0]).contiguous()
            self._weights[key] = w
        return w

    def origins(self, num_images: int, device: torch.device | str | None = None) -> torch.Tensor:
        """Window origins as the ops take them: int64 ``(num_images * num_windows, 1 + D)``
        rows ``[n, start_0, ...]`` in qlty order. A cached tensor: treat it as read-only
        (:meth:`positions` returns a copy). Built from torch ops while ``torch.compile``
        traces."""
        if torch.compiler.is_compiling():  # traced: built from torch ops inside the graph
            return build_grid_origins(self.spatial_shape, self.window, self.step, num_images,
                                      device)
        return grid_origins(self.spatial_shape, self.window, self.step, num_images, device)

    def weight_sum(self, num_images: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """Per-image weight sum ``(num_images, *S)``: the same for every image of a full grid,
        so it is computed once and returned expanded (read-only)."""
        key = (ops.acc_dtype(dtype), torch.device(device))
        ws = self._wsums.get(key)
        if ws is None:
            ws = ops.grid_weight_sum(self.weight_for(key[0], key[1]), self.spatial_shape,
                                      self.step)
            if not self.weight.requires_grad:  # a trainable weight changes: not cached
                self._wsums[key] = ws
        return ws.expand(num_images, *self.spatial_shape)

    # ---- checks -----------------------------------------------------------------------------
    def check_image(self, x: torch.Tensor, name: str = "x") -> None:
        """Raise unless ``x`` is a tensor ``(N, C, *spatial_shape)``."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        want = 2 + self.ndim
        if x.dim() != want or tuple(x.shape[2:]) != self.spatial_shape:
            raise ValueError(
                f"{name} must have shape (N, C, {', '.join(map(str, self.spatial_shape))}) "
                f"for this quilt, got {tuple(x.shape)}"
                + ("; add a channel axis with x.unsqueeze(1)" if x.dim() == want - 1 else "")
            )

    def _check_patches(self, patches: torch.Tensor) -> int:
        if not isinstance(patches, torch.Tensor):
            raise TypeError(f"patches must be a torch.Tensor, got {type(patches).__name__}")
        if patches.dim() != 2 + self.ndim or tuple(patches.shape[2:]) != self.window:
            raise ValueError(
                f"patches must have shape (M, C, {', '.join(map(str, self.window))}), got "
                f"{tuple(patches.shape)}"
            )
        if not patches.is_floating_point():
            raise TypeError(
                f"patches must be floating point to be averaged, got {patches.dtype}; "
                "cast with patches.float() (or use unstitch for labels)"
            )
        if patches.shape[0] % self.num_windows:
            raise ValueError(
                f"{patches.shape[0]} patches is not a whole number of images: this quilt has "
                f"{self.num_windows} windows per image"
            )
        return patches.shape[0] // self.num_windows

    @staticmethod
    def _check_out(out, shape: tuple[int, ...], like: torch.Tensor) -> None:
        # The ops take the window (or image) size from out's shape, and a copy into out would
        # broadcast: a wrong out must fail here, not give other windows or repeated images.
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
        if tuple(out.shape) != shape:
            raise ValueError(f"out must have shape {shape} for these inputs, got "
                             f"{tuple(out.shape)}")
        if out.dtype != like.dtype or out.device != like.device:
            raise TypeError(f"out must be {like.dtype} on {like.device} like the input, got "
                            f"{out.dtype} on {out.device}")
        if torch.is_grad_enabled() and (out.requires_grad or like.requires_grad):
            # like torch's out= arguments: the result would silently carry no gradient
            raise ValueError("out= records no autograd, but the input (or out) requires grad: "
                             "drop out= to differentiate, or call under torch.no_grad()")

    # ---- the two directions ----------------------------------------------------------------
    def unstitch(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Cut ``x`` ``(N, C, *S)`` into patches ``(N * num_windows, C, *window)``, qlty order.

        Any dtype; differentiable for floating ``x``. ``out`` (contiguous, right shape and dtype)
        receives the patches without allocating.
        """
        self.check_image(x)
        origins = self.origins(x.shape[0], x.device)
        shape = (origins.shape[0], x.shape[1], *self.window)
        if out is not None:
            self._check_out(out, shape, x)
            return ops.gather_windows_into(x, origins, out)
        if _records_autograd(x):
            return ops.gather_windows(x, origins, self.window)
        return ops.gather_windows_into(x, origins, buffers.empty(shape, x.dtype, x.device))

    def stitch(
        self, patches: torch.Tensor, out: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted mean of the patches of ``N`` whole images -> ``(mean, weight_sum)``.

        ``mean`` is ``(N, C, *S)`` in the patches' dtype (accumulated in float32, float64 for
        float64); voxels no window covers hold ``fill_value``. ``weight_sum`` is ``(N, *S)``.
        Deterministic; differentiable in the patches (and in a weight tensor that requires grad).
        """
        N = self._check_patches(patches)
        if out is not None:
            self._check_out(out, (N, patches.shape[1], *self.spatial_shape), patches)
        dev = patches.device
        if self.weight.requires_grad:
            return self._stitch_scatter(patches, N, out)
        w = self.weight_for(patches.dtype, dev)
        if out is None and not _records_autograd(patches):
            out = buffers.empty((N, patches.shape[1], *self.spatial_shape), patches.dtype, dev)
        if out is not None:
            mean = ops.stitch_grid_into(patches, self.step, out, w, self.fill_value)
        else:
            mean = ops.stitch_grid(patches, self.spatial_shape, self.step, w, self.fill_value)
        return mean, self.weight_sum(N, patches.dtype, dev)

    def _stitch_scatter(self, patches, N, out):
        # Path with a gradient for a trainable weight tensor.
        dt = ops.acc_dtype(patches.dtype)
        w = self.weight.to(device=patches.device, dtype=dt)
        acc, wsum = ops.scatter_add_windows(
            patches, self.origins(N, patches.device), self.spatial_shape, N, weight=w
        )
        mean = weighted_mean(acc, wsum, self.fill_value).to(patches.dtype)
        if out is not None:
            out.copy_(mean)
            mean = out
        return mean, wsum

    def border_mask(self) -> torch.Tensor:
        """qlty's ``border_tensor()``: 1.0 in the window interior, 0.0 in the border frame."""
        return border_mask(self.window, self.border)

    def __getattr__(self, name: str):
        if name in _MOVED:
            raise AttributeError(f"Quilt.{name} is {_MOVED[name]} (the training and streaming "
                                 "layers build on the quilt, not the other way round)")
        raise AttributeError(f"'Quilt' object has no attribute {name!r}")

    def __repr__(self) -> str:
        return (
            f"Quilt(spatial_shape={self.spatial_shape}, window={self.window}, step={self.step}, "
            f"border={self.border}, num_windows={self.num_windows})"
        )
