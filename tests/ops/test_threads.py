"""The CPU kernels run on several threads (OpenMP, torch's runtime), and give the same bits for
any thread count. The first tests prove the threads really run: a build without OpenMP
compiles every at::parallel_for to a serial loop, and then the bit-identity tests below would
pass while comparing one thread with itself."""

import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import fastquilt as fq
from fastquilt import _C

from .. import reference as ref


def test_the_module_calls_into_openmp():
    nm = shutil.which("nm")
    assert nm, "binutils' nm is needed (the compiler's toolchain has it)"
    symbols = subprocess.run([nm, "-D", _C.__file__], capture_output=True, text=True,
                             check=True).stdout
    assert "GOMP_parallel" in symbols, "the extension was built without OpenMP: serial kernels"


def test_an_op_starts_worker_threads():
    # In a fresh process whose input comes from numpy (no torch op runs in parallel before),
    # only our op can start OpenMP's worker threads.
    code = textwrap.dedent("""
        import os, numpy as np, torch, fastquilt as fq
        torch.set_num_threads(3)
        x = torch.from_numpy(np.ones((1, 1, 256, 256, 256), np.float32))
        org = torch.from_numpy(np.array([[0, 8 * i, 0, 0] for i in range(24)], np.int64))
        before = len(os.listdir("/proc/self/task"))
        fq.gather_windows(x, org, (64, 256, 256))
        print(before, len(os.listdir("/proc/self/task")))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=dict(os.environ, OMP_NUM_THREADS="3"))
    before, after = map(int, out.stdout.split())
    assert after >= before + 2, f"threads before {before}, after {after}: the op ran serially"


def with_threads(n, fn):
    """fn() run with torch's thread count n."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [((250, 250), (96, 96), (32, 32)),  # qlty's race case
                                  ((37, 29, 41), (9, 7, 10), (4, 3, 5)),  # uneven splits
                                  ((5, 3, 300), (3, 2, 64), (1, 1, 17))])  # fewer planes
def test_every_op_gives_the_same_bits_for_1_2_and_3_threads(case, dtype):
    spatial, window, step = case
    gen = torch.Generator().manual_seed(6)
    N, C = 2, 3
    org = torch.as_tensor(ref.origins(spatial, window, step, N))
    x = torch.randn((N, C, *spatial), generator=gen).to(dtype)
    p = torch.randn((org.shape[0], C, *window), generator=gen).to(dtype)
    w = torch.rand(window, generator=gen).to(torch.float64 if dtype == torch.float64
                                              else torch.float32) + 0.1

    def run():
        acc, ws = fq.scatter_add_windows(p, org, spatial, N, weight=w)
        return [fq.gather_windows(x, org, window, weight=w),
                acc, ws,
                fq.stitch_grid(p, spatial, step, weight=w),
                fq.grid_weight_sum(w, spatial, step, inverse=True),
                fq.grid_normalize_(acc.clone(), w, step, -1.0)]

    one = with_threads(1, run)
    for n in (2, 3):
        for a, b in zip(one, with_threads(n, run)):
            assert torch.equal(a, b), f"{n} threads differ from one"


def test_sliding_window_and_out_of_core_give_the_same_bits_for_1_and_3_threads(tmp_path):
    zarr = pytest.importorskip("zarr")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 2, 40, 44, 36))
                         .astype(np.float32))
    z = zarr.create_array(store=str(tmp_path / "in.zarr"), shape=x.shape, dtype="float32",
                          chunks=(1, 2, 16, 16, 16))
    z[...] = x.numpy()

    def run(n):
        return with_threads(n, lambda: (
            fq.sliding_window(lambda p: p * 2, x, 12, 9),
            torch.from_numpy(fq.sliding_window(lambda p: p * 2, z, 12, 9, chunks=12,
                                               out=tmp_path / f"o{n}.zarr")[...])))

    for a, b in zip(run(1), run(3)):
        assert torch.equal(a, b)
