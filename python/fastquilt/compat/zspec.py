"""qlty 1.5.0's 2.5D channel specification: ``ZOperation``, ``ChannelOperation``,
``parse_channel_spec``, ``apply_boundary_mode`` and ``compute_channel_count``, with qlty's names,
signatures and error messages.

A specification maps an operation to z offsets around each plane ``z0``:
``{"identity": [-1, 0, 1], "mean": [[-2, -1], [1, 2]], "std": [[-1, 1]]}`` (string or
``ZOperation`` keys). IDENTITY makes one channel per offset, MEAN and STD one channel per group
of offsets (STD is the population standard deviation).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

BOUNDARY_MODES = ("clamp", "zero", "reflect", "skip")


class ZOperation(Enum):
    """How a channel is made from the z-slices at its offsets."""

    IDENTITY = 1
    MEAN = 3
    STD = 4


_BY_NAME = {"identity": ZOperation.IDENTITY, "mean": ZOperation.MEAN, "std": ZOperation.STD}


@dataclass
class ChannelOperation:
    """One operation of a specification: ``offsets`` is a tuple of ints (IDENTITY) or a tuple
    of offset groups (MEAN, STD); ``output_channels`` channels per input channel."""

    op_type: ZOperation
    offsets: tuple[int, ...] | tuple[tuple[int, ...], ...]
    output_channels: int
    name: str | None = None

    def flat_offsets(self) -> list[int]:
        """Every offset of the operation, groups flattened."""
        out: list[int] = []
        for o in self.offsets:
            out.extend(o if isinstance(o, (list, tuple)) else (o,))
        return out

    def groups(self) -> list[tuple[int, ...]]:
        """The offsets of each output channel: one offset per IDENTITY channel, one group per
        MEAN / STD channel."""
        if self.op_type == ZOperation.IDENTITY:
            return [(int(o),) for o in self.flat_offsets()]
        return [tuple(g) for g in self.offsets]

    def get_required_z_range(self, z0: int) -> tuple[int, int]:
        """``(z_min, z_max)`` (``z_max`` exclusive) of the planes this operation reads at
        ``z0``, before any boundary handling."""
        offs = self.flat_offsets()
        if not offs:
            return (z0, z0 + 1)
        return (z0 + min(offs), z0 + max(offs) + 1)


def _int_offsets(values, what: str) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _groups(value, op: str) -> tuple[tuple[int, ...], ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{op} operation requires list/tuple of lists, got {type(value)}")
    if not value:
        raise ValueError(f"{op} operation must have at least one offset group")
    groups = []
    for group in value:
        if not isinstance(group, (list, tuple)):
            raise ValueError(
                f"{op} operation offset groups must be lists/tuples, got {type(group)}")
        g = _int_offsets(group, op)
        if not g:
            raise ValueError(f"{op} operation offset groups cannot be empty")
        groups.append(g)
    return tuple(groups)


def parse_channel_spec(spec: dict) -> list[ChannelOperation]:
    """The operations of a channel specification, in its order.

    Keys are ``"identity"``, ``"mean"``, ``"std"`` (any case) or ``ZOperation`` members;
    IDENTITY takes a list of int offsets, MEAN and STD a list of offset groups. Raises
    ``ValueError`` (qlty's messages) for an empty spec, unknown keys or malformed offsets.
    """
    if not spec:
        raise ValueError("Channel specification cannot be empty")
    operations = []
    for key, value in spec.items():
        if isinstance(key, str):
            if key.lower() not in _BY_NAME:
                raise ValueError(
                    f"Unknown operation '{key}'. Supported operations: {list(_BY_NAME)}")
            op_type = _BY_NAME[key.lower()]
        elif isinstance(key, ZOperation):
            op_type = key
        else:
            raise ValueError(f"Invalid key type: {type(key)}. Must be str or ZOperation enum")
        name = key if isinstance(key, str) else None
        if op_type == ZOperation.IDENTITY:
            if not isinstance(value, (list, tuple)):
                raise ValueError(
                    f"IDENTITY operation requires list/tuple of ints, got {type(value)}")
            offsets = _int_offsets(value, "IDENTITY")
            if not offsets:
                raise ValueError("IDENTITY operation must have at least one offset")
            operations.append(ChannelOperation(op_type, offsets, len(offsets), name))
        elif op_type in (ZOperation.MEAN, ZOperation.STD):
            groups = _groups(value, op_type.name)
            operations.append(ChannelOperation(op_type, groups, len(groups), name))
        else:
            raise ValueError(f"Unknown operation type: {op_type}")
    return operations


def apply_boundary_mode(z_index: int, z_min: int, z_max: int,
                        boundary_mode: str = "clamp") -> int:
    """``z_index`` brought into ``[z_min, z_max)``: ``clamp`` to the nearest plane,
    ``reflect`` mirrors about the edge (-1 -> 0, -2 -> 1, repeated for far offsets), ``zero``
    and ``skip`` return -1 (a zero plane, or a plane left out)."""
    if z_min <= z_index < z_max:
        return z_index
    if boundary_mode == "clamp":
        return max(z_min, min(z_index, z_max - 1))
    if boundary_mode in ("zero", "skip"):
        return -1
    if boundary_mode == "reflect":
        return reflect_index(z_index - z_min, z_max - z_min) + z_min
    raise ValueError(f"Unknown boundary_mode: {boundary_mode}")


def reflect_index(i: int, size: int) -> int:
    """Symmetric reflection of ``i`` into ``[0, size)`` (edge planes repeated: -1 -> 0),
    periodic with period ``2 * size`` so offsets larger than the volume stay inside."""
    period = 2 * size
    i %= period
    return i if i < size else period - 1 - i


def compute_channel_count(operations: list[ChannelOperation], input_channels: int) -> int:
    """Output channels: ``input_channels * sum(op.output_channels)``."""
    return input_channels * sum(op.output_channels for op in operations)
