"""qlty 1.5.0's ``NCZYX25DQuilt``: z-slices around each plane turned into channels, so 2D
networks see 3D context, with qlty's signature, defaults, output shapes and channel order, on
fastquilt's gather (one kernel launch per conversion, any device; see ``zstack``).

Deviations from qlty (docs/qlty-compatibility.md): boundary modes act on the whole volume
(qlty applies them to the loaded chunk, so near the edges ``clamp`` and ``reflect`` can pick
the wrong plane); ``skip`` that would leave a plane with fewer channels raises a clear
``ValueError``; integer data with MEAN/STD raises ``TypeError``; the channel metadata follows
the data's channel order.
"""

from __future__ import annotations

import numpy as np
import torch

from .backends25d import TensorLike3D
from .plans25d import ExtractionPlan, PatchExtraction, StitchingPlan, build_extraction_plan
from .zspec import BOUNDARY_MODES, ZOperation, compute_channel_count, parse_channel_spec
from .zstack import Taps, plan_taps, stack_channels


def read_planes(source, planes: np.ndarray, n=slice(None), ys=slice(None), xs=slice(None)):
    """``(volume (N', C, Zl, Y', X'), zmap)``: the planes ``planes`` (sorted, unique) of a
    tensor or tensor-like source, and each whole-volume plane's index in ``volume``. A tensor
    is used in place; other sources read the range ``min..max`` when it is at most twice the
    planes needed, else plane by plane."""
    Z = source.shape[2]
    planes = planes if len(planes) else np.zeros(1, dtype=np.int64)
    key = (n, slice(None))
    if isinstance(source, torch.Tensor):
        vol = source[key + (slice(None), ys, xs)]
        return (vol.unsqueeze(0) if vol.dim() == 4 else vol), None
    lo, hi = int(planes[0]), int(planes[-1]) + 1
    zmap = np.full(Z, -1, dtype=np.int64)
    if hi - lo <= 2 * len(planes):
        vol = torch.as_tensor(source[key + (slice(lo, hi), ys, xs)])
        zmap[lo:hi] = np.arange(hi - lo)
    else:
        vol = torch.cat([torch.as_tensor(source[key + (slice(p, p + 1), ys, xs)])
                         for p in planes.tolist()], dim=-3)
        zmap[planes] = np.arange(len(planes))
    return (vol.unsqueeze(0) if vol.dim() == 4 else vol), zmap


class NCZYX25DQuilt:
    """Converts ``(N, C, Z, Y, X)`` data to 2.5D: the planes ``z_slices`` with channels made
    from the z-slices at ``channel_spec``'s offsets.

    Args:
        data_source: an ``(N, C, Z, Y, X)`` tensor (any device) or a ``TensorLike3D``
            (memmap, zarr, HDF5; read on demand).
        channel_spec: ``{"identity": [-1, 0, 1], "mean": [[-2, -1]], "std": [[-1, 1]]}``
            (string or ``ZOperation`` keys).
        boundary_mode: ``"clamp"``, ``"zero"``, ``"reflect"`` or ``"skip"`` (leave the slice
            out of a MEAN/STD group) for offsets outside ``[0, Z)``.
        accumulation_mode: ``"2d"``: output ``(N * len(z_slices), C', Y, X)`` (image
            ``n * len(z_slices) + j``); ``"3d"``: ``(N, C', len(z_slices), Y, X)``.
        z_slices: the planes to convert: None (all), a slice, or a list of indices.
        group_by_operation: accepted for qlty compatibility; it does not change the output
            (as in qlty).

    ``C' = C * sum(channels per operation)``, ordered by operation, then input channel, then
    offset (group).
    """

    def __init__(self, data_source, channel_spec: dict, boundary_mode: str = "clamp",
                 accumulation_mode: str = "2d", z_slices=None,
                 group_by_operation: bool = False) -> None:
        if not isinstance(data_source, (torch.Tensor, TensorLike3D)):
            raise TypeError(
                f"data_source must be torch.Tensor or TensorLike3D, got {type(data_source)}; "
                "wrap arrays with from_zarr / from_hdf5 / from_memmap or TensorLike3D(backend)")
        shape = tuple(data_source.shape)
        if len(shape) != 5:
            raise ValueError(f"data_source must be 5D (N, C, Z, Y, X), got shape {shape}")
        if accumulation_mode not in ("2d", "3d"):
            raise ValueError(
                f"accumulation_mode must be '2d' or '3d', got '{accumulation_mode}'")
        if boundary_mode not in BOUNDARY_MODES:
            raise ValueError("boundary_mode must be 'clamp', 'zero', 'reflect', or 'skip', "
                             f"got '{boundary_mode}'")
        self.data_source = data_source
        self.boundary_mode = boundary_mode
        self.accumulation_mode = accumulation_mode
        self.group_by_operation = group_by_operation
        self.operations = parse_channel_spec(channel_spec)
        self.N, self.C, self.Z, self.Y, self.X = (int(s) for s in shape)
        self.z_indices = self._z_indices(z_slices)
        self.output_channels = compute_channel_count(self.operations, self.C)
        J = len(self.z_indices)
        if accumulation_mode == "2d":
            self.output_shape = (self.N * J, self.output_channels, self.Y, self.X)
        else:
            self.output_shape = (self.N, self.output_channels, J, self.Y, self.X)

    def _z_indices(self, z_slices) -> list[int]:
        if z_slices is None:
            out = list(range(self.Z))
        elif isinstance(z_slices, slice):
            out = list(range(self.Z)[z_slices])
        elif isinstance(z_slices, (list, tuple)):
            out = [int(z) for z in z_slices]
            for z in out:
                if z < 0 or z >= self.Z:
                    raise ValueError(f"z_slices contains invalid index {z} (Z={self.Z})")
        else:
            raise ValueError(f"z_slices must be slice, list, or None, got {type(z_slices)}")
        if not out:
            raise ValueError("z_slices results in empty list")
        return out

    def _taps(self, z_indices: list[int], mode: str) -> Taps:
        return plan_taps(self.operations, self.C, self.Z, z_indices, self.boundary_mode, mode)

    def _planes_of(self, z0: int) -> list[int]:
        return sorted(set(self._taps([z0], "2d").z.tolist()))

    def convert(self) -> torch.Tensor:
        """The converted data, in the source's dtype and on its device: ``(N * len(z_slices),
        C', Y, X)`` ("2d") or ``(N, C', len(z_slices), Y, X)`` ("3d")."""
        taps = self._taps(self.z_indices, self.accumulation_mode)
        planes = np.unique(taps.z)
        if len(planes) == 0:
            return torch.zeros(self.output_shape, dtype=self.data_source.dtype,
                               device=self.data_source.device)
        vol, zmap = read_planes(self.data_source, planes)
        out = stack_channels(vol, taps, zmap)
        return out.reshape(self.output_shape)

    def get_channel_metadata(self) -> list[dict]:
        """One dict per output channel, in the data's channel order: ``channel_index``,
        ``input_channel``, ``operation``, ``operation_type``, ``offsets``, ``z0`` (None)."""
        meta = []
        for op in self.operations:
            for c in range(self.C):
                for group in op.groups():
                    meta.append({"channel_index": len(meta), "input_channel": c,
                                 "operation": op.name or op.op_type.name.lower(),
                                 "operation_type": op.op_type.name, "offsets": group,
                                 "z0": None})
        return meta

    def validate_spec(self) -> tuple[bool, list[str]]:
        """``(is_valid, messages)``: errors for bad ``z_slices``, warnings for offsets larger
        than the volume's depth."""
        errors, warnings = [], []
        for op in self.operations:
            if op.op_type == ZOperation.STD:
                continue
            for offset in op.flat_offsets():
                if abs(offset) > self.Z:
                    warnings.append(f"{op.op_type.name} offset {offset} is larger than Z "
                                    f"dimension ({self.Z})")
        if max(self.z_indices) >= self.Z:
            errors.append(f"z_slices contains index >= Z ({self.Z})")
        if min(self.z_indices) < 0:
            errors.append("z_slices contains negative index")
        return not errors, errors + warnings

    def _require_2d(self, what: str) -> None:
        if self.accumulation_mode != "2d":
            raise ValueError(f"{what} requires accumulation_mode='2d'. "
                             f"Current mode: {self.accumulation_mode}")

    def to_ncyx_quilt(self, **quilt_kwargs):
        """An ``NCYXQuilt`` over the converted planes' ``(Y, X)`` (``window``, ``step``,
        ``border``, ... as for ``NCYXQuilt``)."""
        from .quilts import NCYXQuilt

        self._require_2d("to_ncyx_quilt")
        return NCYXQuilt(Y=self.Y, X=self.X, **quilt_kwargs)

    def extract_patch_pairs(self, window, num_patches, delta_range, random_seed=None,
                            rotation_choices=None):
        """``extract_patch_pairs`` on the converted ("2d") data."""
        from .patch_pairs import extract_patch_pairs

        self._require_2d("extract_patch_pairs")
        return extract_patch_pairs(self.convert(), window=window, num_patches=num_patches,
                                   delta_range=delta_range, random_seed=random_seed,
                                   rotation_choices=rotation_choices)

    def extract_overlapping_pixels(self, window, num_patches, delta_range, random_seed=None,
                                   rotation_choices=None):
        """``extract_overlapping_pixels`` of ``extract_patch_pairs`` on the converted data:
        ``(K, C')`` and ``(K, C')``."""
        from .patch_pairs import extract_overlapping_pixels

        self._require_2d("extract_overlapping_pixels")
        p1, p2, deltas, rotations = self.extract_patch_pairs(
            window, num_patches, delta_range, random_seed, rotation_choices)
        return extract_overlapping_pixels(p1, p2, deltas, rotations)

    def create_extraction_plan(self, color_y_mod=None, color_x_mod=None, window=None,
                               step=None) -> ExtractionPlan:
        """The patches to extract (per image, plane and, with ``window``/``step``, window),
        with colour groups for parallel work; ``required_z_indices``: the planes each reads."""
        return build_extraction_plan(self.N, self.Y, self.X, self.z_indices, self._planes_of,
                                     color_y_mod, color_x_mod, window, step)

    def create_non_overlapping_colored_plan(self, window, step=None) -> ExtractionPlan:
        """A plan whose windows of one colour never overlap (``step`` defaults to
        ``window``)."""
        step = window if step is None else step
        cy = max(1, -(-int(window[0]) // int(step[0])))
        cx = max(1, -(-int(window[1]) // int(step[1])))
        return self.create_extraction_plan(cy, cx, window, step)

    def extract_patch_from_plan(self, patch: PatchExtraction) -> torch.Tensor:
        """One patch of a plan, reading only its planes and window: ``(C', wy, wx)`` (or
        ``(C', Y, X)`` for a whole-plane patch)."""
        ys = xs = slice(None)
        if patch.y_start is not None and patch.x_start is not None:
            ys, xs = slice(patch.y_start, patch.y_stop), slice(patch.x_start, patch.x_stop)
        taps = self._taps([patch.z0], "2d")
        planes = np.unique(taps.z)
        vol, zmap = read_planes(self.data_source, planes, slice(patch.n, patch.n + 1), ys, xs)
        return stack_channels(vol, taps, zmap)[0]

    def create_stitching_plan(self, extraction_plan: ExtractionPlan | None = None,
                              window=None, step=None) -> StitchingPlan:
        """Where each patch of ``extraction_plan`` (default: a new one) goes in the output."""
        plan = extraction_plan or self.create_extraction_plan(window=window, step=step)
        mode3d = self.accumulation_mode == "3d"
        mappings = {
            p.patch_idx: {"n": p.n, "y_start": p.y_start, "y_stop": p.y_stop,
                          "x_start": p.x_start, "x_stop": p.x_stop,
                          "z_idx": self.z_indices.index(p.z0) if mode3d else None}
            for p in plan.patches}
        return StitchingPlan(self.output_shape, mappings, plan.color_groups)
