"""A small run of every CUDA kernel, for compute-sanitizer (memcheck / racecheck): unaligned
and aligned (vector-path) rows, the grid stitch's aligned fast path (each of its shapes), views at
odd element offsets, 32-bit index math, the deterministic scatter-add (disjoint window sets)
and the in-place normalisation (grid_normalize_)."""

import torch

import fastquilt as fq


def at_odd_offset(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of t starting one element into its storage (not 16-byte aligned)."""
    buf = torch.empty(t.numel() + 1, dtype=t.dtype, device=t.device)
    v = buf[1:].view(t.shape)
    v.copy_(t)
    return v


CASES = [((37, 45), (16, 12), (7, 5)), ((19, 23, 21), (8, 8, 8), (5, 6, 9)),
         ((24, 16, 40), (8, 8, 16), (4, 8, 8)),
         ((12, 10, 128), (8, 8, 64), (4, 2, 32)),  # stitch's aligned fast path, every dtype
         ((16, 96), (8, 32), (8, 64)),  # aligned with gaps along x
         ((12, 10, 136), (8, 8, 64), (4, 2, 32)), ((10, 132), (8, 64), (4, 32)),  # split rows
         ((10, 96), (6, 32), (3, 16)), ((9, 48), (6, 24), (3, 8)),  # one vector per thread
         ((9, 40), (6, 12), (3, 4)),
         ((9, 22), (6, 6), (3, 2))]


def main(device: str = "cuda") -> None:
    """Every call of the case on `device` (the CPU test suite runs it on the CPU too, so the
    script is known to run before it reaches a GPU)."""
    for shape, window, step in CASES:
        for dtype in (torch.float32, torch.bfloat16, torch.float64):
            q = fq.Quilt(shape, window, step, border=2, allow_gaps=True)
            x = torch.randn(2, 3, *shape, device=device).to(dtype)
            p = q.unstitch(x)
            mean, ws = q.stitch(p)
            org = q.positions(2).to(device)
            w = q.weight_for(dtype, x.device)
            acc, wsum = fq.scatter_add_windows(p, org, shape, 2, weight=w)
            fq.grid_normalize_(acc.clone(), w, q.step, 1.0)  # w: the accumulator's dtype
            fq.scatter_add_windows(p[:, :0], org, shape, 2, weight=w)
            fq.gather_windows(x, org, window, weight=w)
            fq.gather_windows(x.to(torch.uint8), org, window)
            # views at odd offsets: every kernel must fall back from its vector path
            x_v, p_v = at_odd_offset(x), at_odd_offset(p)
            fq.gather_windows_into(x_v, org, at_odd_offset(torch.empty_like(p)))
            fq.stitch_grid_into(p_v, q.step, at_odd_offset(torch.empty_like(x)))
            fq.scatter_add_windows_(p_v, org, at_odd_offset(torch.zeros_like(acc)),
                                    at_odd_offset(torch.zeros_like(wsum)), weight=w)
            torch.use_deterministic_algorithms(True)  # one launch per set of disjoint windows
            try:
                fq.scatter_add_windows(p, org, shape, 2, weight=w)
            finally:
                torch.use_deterministic_algorithms(False)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    print("sanitizer case done")


if __name__ == "__main__":
    main()
