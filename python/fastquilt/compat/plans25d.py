"""qlty 1.5.0's 2.5D extraction and stitching plans: ``PatchExtraction``, ``ExtractionPlan``,
``StitchingPlan`` (serialisable for distributed work) and ``build_extraction_plan``.

A plan lists, per image ``n`` and selected plane ``z0`` (and per window of a 2D step-back grid
when a window and step are given), what to extract; windows are coloured by ``(yy % cy,
xx % cx)`` so that windows of one colour do not overlap when ``c = ceil(window / step)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..grid import axis_starts


@dataclass
class PatchExtraction:
    """One patch: image ``n``, plane ``z0``, its window (None: the whole plane), colour and
    the planes it reads (``required_z_indices``)."""

    patch_idx: int
    n: int
    z0: int
    y_start: int | None = None
    y_stop: int | None = None
    x_start: int | None = None
    x_stop: int | None = None
    color_y_idx: int = 0
    color_x_idx: int = 0
    required_z_indices: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _groups_to_json(groups: dict) -> dict:
    return {f"{k[0]},{k[1]}": v for k, v in groups.items()}


def _groups_from_json(data: dict) -> dict:
    return {tuple(int(i) for i in k.split(",")): v for k, v in data.items()}


@dataclass
class ExtractionPlan:
    """The patches of a plan and their colour groups ``(color_y, color_x) -> [patch_idx]``."""

    patches: list[PatchExtraction]
    color_groups: dict[tuple[int, int], list[int]]
    total_patches: int

    def get_patches_for_color(self, color_y: int, color_x: int) -> list[PatchExtraction]:
        """The patches of one colour group (empty for a colour that has none)."""
        return [self.patches[i] for i in self.color_groups.get((color_y, color_x), [])]

    def serialize(self) -> dict:
        """A JSON-able dict (``deserialize`` reads it back)."""
        return {"patches": [p.to_dict() for p in self.patches],
                "color_groups": _groups_to_json(self.color_groups),
                "total_patches": self.total_patches}

    @classmethod
    def deserialize(cls, data: dict) -> ExtractionPlan:
        patches = [PatchExtraction(
            patch_idx=p["patch_idx"], n=p["n"], z0=p["z0"], y_start=p.get("y_start"),
            y_stop=p.get("y_stop"), x_start=p.get("x_start"), x_stop=p.get("x_stop"),
            color_y_idx=p["color_y_idx"], color_x_idx=p["color_x_idx"],
            required_z_indices=p["required_z_indices"]) for p in data["patches"]]
        return cls(patches, _groups_from_json(data["color_groups"]), data["total_patches"])


@dataclass
class StitchingPlan:
    """Where each patch goes: ``patch_idx -> {n, y_start, y_stop, x_start, x_stop, z_idx}``
    (``z_idx``: the plane's position in the output's Z axis in "3d" mode, None in "2d")."""

    output_shape: tuple[int, ...]
    patch_mappings: dict[int, dict]
    color_groups: dict[tuple[int, int], list[int]]

    def get_stitch_order(self, color_y: int, color_x: int) -> list[int]:
        """The patch indices of one colour group."""
        return self.color_groups.get((color_y, color_x), [])

    def serialize(self) -> dict:
        return {"output_shape": list(self.output_shape),
                "patch_mappings": self.patch_mappings,
                "color_groups": _groups_to_json(self.color_groups)}

    @classmethod
    def deserialize(cls, data: dict) -> StitchingPlan:
        return cls(tuple(data["output_shape"]), data["patch_mappings"],
                   _groups_from_json(data["color_groups"]))


def _colour_mod(mod, window: int, step: int, count: int) -> int:
    if mod is not None:
        if int(mod) < 1:
            raise ValueError(f"colour modulus must be >= 1, got {mod}")
        return int(mod)
    return max(1, min(math.ceil(window / step), count))


def build_extraction_plan(N: int, Y: int, X: int, z_indices: list[int], planes_of,
                          color_y_mod=None, color_x_mod=None, window=None,
                          step=None) -> ExtractionPlan:
    """The plan over images ``0..N-1`` and planes ``z_indices``; ``planes_of(z0)`` gives the
    planes a patch at ``z0`` reads. With ``window`` and ``step`` (both ``(y, x)``), one patch
    per window of the step-back grid, in qlty's order (``x`` fastest)."""
    if window is not None and step is None:
        raise ValueError("window was given without step: pass both (y, x) tuples, or "
                         "neither for whole planes")
    if window is not None:
        wy, wx = (int(v) for v in window)
        sy, sx = (int(v) for v in step)
        if sy < 1 or sx < 1:
            raise ValueError(f"step must be >= 1 on both axes, got {tuple(step)}")
        ys, xs = axis_starts(Y, wy, sy), axis_starts(X, wx, sx)
        cy = _colour_mod(color_y_mod, wy, sy, len(ys))
        cx = _colour_mod(color_x_mod, wx, sx, len(xs))
        boxes = [(yy, xx, y0, y0 + wy, x0, x0 + wx)
                 for yy, y0 in enumerate(ys) for xx, x0 in enumerate(xs)]
    else:
        cy, cx = color_y_mod or 1, color_x_mod or 1
        boxes = [(0, 0, None, None, None, None)]
    patches: list[PatchExtraction] = []
    groups: dict[tuple[int, int], list[int]] = {}
    for n in range(N):
        for z0 in z_indices:
            planes = planes_of(z0)
            for yy, xx, y0, y1, x0, x1 in boxes:
                idx = len(patches)
                colour = (yy % cy, xx % cx)
                patches.append(PatchExtraction(idx, n, z0, y0, y1, x0, x1, colour[0],
                                               colour[1], list(planes)))
                groups.setdefault(colour, []).append(idx)
    return ExtractionPlan(patches, groups, len(patches))
