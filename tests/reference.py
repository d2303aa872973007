"""Plain float64 numpy references for every op (slow loops, obviously correct)."""

from __future__ import annotations

import numpy as np


def starts_1d(S: int, w: int, s: int) -> list[int]:
    """qlty's step-back starts, written from its formula (full = (S-w)//s; +2 if remainder)."""
    full = (S - w) // s
    n = full + 2 if S > full * s + w else full + 1
    return [min(i * s, S - w) for i in range(n)]


def origins(spatial, window, step, N) -> np.ndarray:
    import itertools

    starts = [starts_1d(S, w, s) for S, w, s in zip(spatial, window, step)]
    return np.array([(n, *p) for n in range(N) for p in itertools.product(*starts)],
                    dtype=np.int64).reshape(-1, 1 + len(spatial))


def _sl(o, window):
    return tuple(slice(int(a), int(a) + w) for a, w in zip(o, window))


def gather(x: np.ndarray, org: np.ndarray, window, weight=None) -> np.ndarray:
    out = np.zeros((len(org), x.shape[1], *window), dtype=np.float64)
    for m, o in enumerate(org):
        out[m] = x[int(o[0])][(slice(None),) + _sl(o[1:], window)]
        if weight is not None:
            out[m] *= weight
    return out


def scatter(p: np.ndarray, org: np.ndarray, spatial, N, weight=None):
    window = p.shape[2:]
    w = np.ones(window) if weight is None else np.asarray(weight, dtype=np.float64)
    acc = np.zeros((N, p.shape[1], *spatial))
    ws = np.zeros((N, *spatial))
    for m, o in enumerate(org):
        sl = _sl(o[1:], window)
        acc[int(o[0])][(slice(None),) + sl] += p[m].astype(np.float64) * w
        ws[int(o[0])][sl] += w
    return acc, ws


def stitch(p: np.ndarray, spatial, window, step, weight=None, fill=0.0):
    N = p.shape[0] // len(origins(spatial, window, step, 1))
    acc, ws = scatter(p, origins(spatial, window, step, N), spatial, N, weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(ws[:, None] > 0, acc / ws[:, None], fill)
    return mean, ws


def grid_weight_sum_rows(w: np.ndarray, spatial, step, inverse: bool) -> np.ndarray:
    """The grid's weight sum (or 1 / sum, clamped to the smallest normal number, 0 where
    uncovered) computed row by row in the CPU kernels' exact order, in w's dtype: for each
    output row (z, y), the weight rows of the covering windows (along z, then y, in start
    order) each added at every x start in order. Bit for bit what summing every row gives."""
    S = tuple(spatial) if len(spatial) == 3 else (1, *spatial)
    W = w.shape if w.ndim == 3 else (1, *w.shape)
    st = tuple(step) if len(step) == 3 else (1, *step)
    w3 = w.reshape(W)
    starts = [starts_1d(S[d], W[d], st[d]) for d in range(3)]
    out = np.zeros(S, dtype=w.dtype)
    for z in range(S[0]):
        for y in range(S[1]):
            row = out[z, y]
            for s0 in (s for s in starts[0] if s <= z < s + W[0]):
                for s1 in (s for s in starts[1] if s <= y < s + W[1]):
                    for s2 in starts[2]:
                        row[s2:s2 + W[2]] += w3[z - s0, y - s1]
    if inverse:
        tiny = np.finfo(w.dtype).tiny
        with np.errstate(divide="ignore"):
            out = np.where(out > 0, np.asarray(1, w.dtype) / np.maximum(out, tiny),
                           0).astype(w.dtype)
    return out.reshape(spatial)
