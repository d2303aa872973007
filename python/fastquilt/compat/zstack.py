"""2.5D channel stacking as plane gathers: every output channel of every selected plane is
one or more z-slices ("taps") of the input, seen as ``(N * C * Z, Y * X)`` rows. The tap
planes come from index math (``plan_taps``), vectorised over the planes: no per-slice Python
loop. Each output plane is written once, by one gather of its first tap (``index_select`` of
whole planes: a memory copy each, any device); MEAN channels then add their further taps in
place (one gather per tap round, in chunks) and are divided by their tap counts. 16-bit data
and STD channels reduce in a float32 (float64 for float64) accumulator. Boundary handling is
against the whole volume ``[0, Z)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .zspec import ChannelOperation, ZOperation


@dataclass
class Taps:
    """The taps of one conversion, over one image (``n`` is added per image).

    ``dest``/``c``/``z`` (one entry per tap that reads a plane) say where the slice of
    channel ``c`` at plane ``z`` goes: ``dest = j * n_channels + ch`` ("2d") or
    ``ch * n_planes + j`` ("3d") for selected plane ``j`` and output channel ``ch``.
    ``count`` ``(n_planes * n_channels,)`` in ``dest`` order: the taps averaged per output
    (zero-padded taps included); ``is_std``: which outputs are standard deviations.
    ``direct``: every output is exactly one read slice (the gather is the result).
    """

    dest: np.ndarray
    c: np.ndarray
    z: np.ndarray
    count: np.ndarray
    is_std: np.ndarray
    n_outputs: int
    direct: bool
    reduces: bool


def _bounded(z: np.ndarray, Z: int, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(plane, reads, counts)`` per requested index ``z``: the plane read, whether a plane is
    read, whether the tap counts in a mean (a zero-padded tap counts, a skipped one does not)."""
    inside = (z >= 0) & (z < Z)
    if mode == "clamp":
        return np.clip(z, 0, Z - 1), np.ones_like(inside), np.ones_like(inside)
    if mode == "reflect":
        m = np.mod(z, 2 * Z)
        return np.where(m < Z, m, 2 * Z - 1 - m), np.ones_like(inside), np.ones_like(inside)
    if mode == "zero":
        return np.clip(z, 0, Z - 1), inside, np.ones_like(inside)
    return np.clip(z, 0, Z - 1), inside, inside


def _check_skipped(count: np.ndarray, op_of: np.ndarray, operations, z_indices) -> None:
    """``skip`` may leave an output channel with no plane: qlty then drops the channel, which
    gives planes different channel counts; refuse with the plane and the way out."""
    empty = count == 0
    if not empty.any():
        return
    j, ch = (int(v[0]) for v in np.nonzero(empty))
    op = operations[op_of[ch]]
    z0 = z_indices[j]
    if empty[j, op_of == op_of[ch]].all():
        raise ValueError(
            f"Operation {op} produced no valid channels (all skipped?) at plane z0={z0}: "
            "every offset lies outside the volume; use boundary_mode 'clamp', 'reflect' or "
            "'zero', or leave this plane out of z_slices")
    raise ValueError(
        f"boundary_mode='skip' leaves output channel {ch} ({op.op_type.name}) with no plane at "
        f"z0={z0}, so planes would have different channel counts; use boundary_mode 'clamp', "
        "'reflect' or 'zero', or leave this plane out of z_slices")


def plan_taps(operations: list[ChannelOperation], C: int, Z: int, z_indices: list[int],
              boundary_mode: str, mode: str) -> Taps:
    """The taps of converting planes ``z_indices`` of a ``(N, C, Z, Y, X)`` volume.

    Output channels are ordered as qlty orders them: operation, then input channel, then the
    operation's offsets (IDENTITY) or offset groups (MEAN, STD).
    """
    zs = np.asarray(z_indices, dtype=np.int64)
    J = len(zs)
    chans = [(k, c, g) for k, op in enumerate(operations) for c in range(C)
             for g in op.groups()]
    K = len(chans)
    count = np.zeros((J, K), dtype=np.int64)
    op_of = np.array([k for k, _, _ in chans], dtype=np.int64)
    parts_dest, parts_c, parts_z = [], [], []
    j_idx = np.arange(J, dtype=np.int64)
    for ch, (_, c, group) in enumerate(chans):
        for off in group:
            plane, reads, counts = _bounded(zs + off, Z, boundary_mode)
            count[:, ch] += counts
            dest = j_idx * K + ch if mode == "2d" else ch * J + j_idx
            parts_dest.append(dest[reads])
            parts_c.append(np.full(int(reads.sum()), c, dtype=np.int64))
            parts_z.append(plane[reads])
    _check_skipped(count, op_of, operations, z_indices)
    dest = np.concatenate(parts_dest)
    order = np.argsort(dest, kind="stable")
    dest, c_arr, z_arr = dest[order], np.concatenate(parts_c)[order], np.concatenate(parts_z)[order]
    std_ch = np.array([operations[k].op_type == ZOperation.STD for k, _, _ in chans])
    count_d = count.reshape(-1) if mode == "2d" else count.T.reshape(-1)
    is_std = np.tile(std_ch, J) if mode == "2d" else np.repeat(std_ch, J)
    reduces = bool(any(op.op_type != ZOperation.IDENTITY for op in operations))
    direct = (len(dest) == J * K and bool((count_d == 1).all()) and not is_std.any())
    return Taps(dest, c_arr, z_arr, count_d, is_std, J * K, direct, reduces)


_CHUNK_BYTES = 8 << 20  # the extra taps of MEAN channels are added in chunks of this size


def _gather_rows(src: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The planes ``rows`` of ``src`` ``(planes, Y * X)``: one gather, one whole plane per row
    (a memory copy per plane; ``index_select``, any device, differentiable)."""
    return src.index_select(0, rows)


def stack_channels(volume: torch.Tensor, taps: Taps, zmap: np.ndarray | None = None
                   ) -> torch.Tensor:
    """Apply ``taps`` to ``volume`` ``(N, C, Zl, Y, X)`` (``zmap``: the local index of each
    plane of the whole volume, when ``volume`` holds only some planes).

    Returns ``(N, n_outputs, Y, X)`` in ``dest`` order (reshape to the output layout).

    Every output plane is written once by one gather of the planes it starts from (its first
    tap; zero where no plane is read), in the source dtype; MEAN channels then add their other
    taps in place (a gather per tap round, in chunks) and are divided by their tap counts, so
    the sums are the same additions in the same order as a float32 / float64 accumulator.
    16-bit data and STD channels reduce in a float32 (float64) accumulator instead.
    """
    N, C, Zl, Y, X = volume.shape
    T = len(taps.dest)
    if taps.reduces and not volume.is_floating_point():
        raise TypeError(
            f"MEAN and STD channels need floating-point data, got {volume.dtype}: convert the "
            "source first (e.g. data.float(), or dtype=torch.float32 in from_zarr / from_hdf5)")
    z = taps.z if zmap is None else zmap[taps.z]
    dev = volume.device
    D = taps.n_outputs
    src = volume.contiguous().view(N * C * Zl, Y * X)
    tap_row = taps.c * Zl + z  # the tap's plane in image 0
    img_row = np.arange(N, dtype=np.int64) * (C * Zl)
    if taps.direct:
        rows = (img_row[:, None] + tap_row[None, :]).reshape(-1)
        return _gather_rows(src, torch.from_numpy(rows).to(dev)).view(N, T, Y, X)
    if taps.is_std.any() or (taps.reduces and volume.dtype not in (torch.float32,
                                                                   torch.float64)):
        return _reduce_in_accumulator(src, taps, tap_row, img_row, volume.dtype, (N, Y, X))
    reads = np.bincount(taps.dest, minlength=D)
    first = np.cumsum(reads) - reads
    has = reads > 0
    row_first = np.where(has, tap_row[np.minimum(first, max(T - 1, 0))] if T else 0, 0)
    rows = (img_row[:, None] + row_first[None, :]).reshape(-1)
    out = _gather_rows(src, torch.from_numpy(rows).to(dev))
    out3 = out.view(N, D, Y * X)
    if not has.all():
        out3.index_fill_(1, torch.from_numpy(np.nonzero(~has)[0]).to(dev), 0)
    chunk = max(1, _CHUNK_BYTES // max(1, Y * X * out.element_size()))
    for k in range(1, int(reads.max()) if D else 0):  # the k-th tap of each output with > k
        o = np.nonzero(reads > k)[0]
        src_rows = (img_row[:, None] + tap_row[first[o] + k][None, :]).reshape(-1)
        dst_rows = ((np.arange(N, dtype=np.int64) * D)[:, None] + o[None, :]).reshape(-1)
        for a in range(0, len(src_rows), chunk):
            s_idx = torch.from_numpy(src_rows[a:a + chunk]).to(dev)
            out.index_add_(0, torch.from_numpy(dst_rows[a:a + chunk]).to(dev),
                           _gather_rows(src, s_idx))
    _divide(out, taps.count, N, D, Y * X)
    return out.view(N, D, Y, X)


def _divide(out: torch.Tensor, count: np.ndarray, N: int, D: int, P: int) -> None:
    """Divide the output planes whose tap count is above 1 by it, in place. They come in runs
    of channels repeating with a period (the MEAN channels of each plane): one strided view
    then; otherwise run by run."""
    divide = np.nonzero(count > 1)[0]
    if not len(divide):
        return
    cuts = np.nonzero(np.diff(divide) != 1)[0] + 1
    starts = divide[np.concatenate([[0], cuts])]
    lengths = np.diff(np.concatenate([[0], cuts, [len(divide)]]))
    L, R = int(lengths[0]), len(starts)
    period = int(starts[1] - starts[0]) if R > 1 else D
    dev, s0 = out.device, out.storage_offset()
    if (lengths == L).all() and (R == 1 or (np.diff(starts) == period).all()):
        view = out.as_strided((N, R, L, P), (D * P, period * P, P, 1),
                              s0 + int(starts[0]) * P)
        c = torch.from_numpy(count[divide].reshape(R, L)).to(dev, out.dtype)
        view.div_(c.view(1, R, L, 1))
        return
    for a, n in zip(starts.tolist(), lengths.tolist()):
        c = torch.from_numpy(count[a:a + n]).to(dev, out.dtype)
        out.view(N, D, P)[:, a:a + n].div_(c.view(1, n, 1))


def _reduce_in_accumulator(src, taps: Taps, tap_row, img_row, dtype, nyx) -> torch.Tensor:
    """MEAN / STD in a float32 (float64 for float64) accumulator, cast back to ``dtype``."""
    N, Y, X = nyx
    T, D = len(taps.dest), taps.n_outputs
    dev = src.device
    rows = (img_row[:, None] + tap_row[None, :]).reshape(-1)
    g = _gather_rows(src, torch.from_numpy(rows).to(dev)).view(N, T, Y, X)
    dest = torch.from_numpy(taps.dest).to(dev)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    gf = g.to(acc)
    count = torch.from_numpy(taps.count).to(dev, acc).view(1, D, 1, 1)
    mean = torch.zeros((N, D, Y, X), dtype=acc, device=dev)
    for i in range(N):  # index_add_ along the leading axis: whole planes per tap
        mean[i].view(D, Y * X).index_add_(0, dest, gf[i].reshape(T, Y * X))
    mean.div_(count)
    if taps.is_std.any():
        dev2 = (gf - mean.index_select(1, dest)) ** 2
        ss = torch.zeros_like(mean).index_add_(1, dest, dev2)
        reads = np.bincount(taps.dest, minlength=D)
        zero_taps = torch.from_numpy(taps.count - reads).to(dev, acc).view(1, D, 1, 1)
        std = torch.sqrt((ss + zero_taps * mean * mean) / count)
        is_std = torch.from_numpy(taps.is_std).to(dev).view(1, D, 1, 1)
        mean = torch.where(is_std, std, mean)
    return mean.to(dtype)
