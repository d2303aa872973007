"""A small run of every CUDA kernel, for compute-sanitizer (memcheck / racecheck)."""

import torch

import fastquilt as fq

for shape, window, step in [((37, 45), (16, 12), (7, 5)), ((19, 23, 21), (8, 8, 8), (5, 6, 9))]:
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        q = fq.Quilt(shape, window, step, border=2, allow_gaps=True)
        x = torch.randn(2, 3, *shape, device="cuda").to(dtype)
        p = q.unstitch(x)
        mean, ws = q.stitch(p)
        org = q.positions(2).cuda()
        w = q.weight_for(dtype, x.device)
        acc, wsum = fq.scatter_add_windows(p, org, shape, 2, weight=w)
        fq.scatter_add_windows(p[:, :0], org, shape, 2, weight=w)
        fq.gather_windows(x, org, window, weight=w)
        fq.gather_windows(x.to(torch.uint8), org, window)
torch.cuda.synchronize()
print("sanitizer case done")
