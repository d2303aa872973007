"""The CPU gather writes outputs larger than the last-level cache with streaming stores
(csrc/cpu/stream_store.h). ``FASTQUILT_STREAM_STORE_BYTES=0`` makes every unweighted gather
of rows of 128 bytes or more take that path (the extension's
``fastquilt_stream_store_threshold()`` says which threshold is in force): in a fresh process
it must give the reference's values, for every dtype, row lengths that leave the rows
misaligned, and 1, 2 and 3 threads (the copy routine itself is checked at every length and
alignment in tests/cpp/kernel_bodies_test.cpp)."""

import os
import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import ctypes, numpy as np, torch, fastquilt as fq
    from fastquilt import _C
    from tests import reference as ref
    threshold = ctypes.CDLL(_C.__file__).fastquilt_stream_store_threshold
    threshold.restype = ctypes.c_int64
    assert threshold() == 0, threshold()  # every unweighted gather streams
    rng = np.random.default_rng(3)
    cases = [((37, 29, 141), (9, 7, 37), (4, 3, 13)),  # rows of 37: misaligned
             ((250, 250), (96, 96), (32, 32)),
             ((5, 3, 700), (3, 2, 301), (1, 1, 99))]  # 301: streamed for every dtype
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.uint8,
              torch.bool]
    n = 0
    for spatial, window, step in cases:
        org = ref.origins(spatial, window, step, 2)
        for dt in dtypes:
            x = torch.from_numpy(rng.standard_normal((2, 3, *spatial))).to(dt)
            want = torch.from_numpy(ref.gather(x.double().numpy(), org, window)).to(dt)
            for threads in (1, 2, 3):
                torch.set_num_threads(threads)
                got = fq.gather_windows(x, torch.from_numpy(org), window)
                assert torch.equal(got, want), (spatial, window, dt, threads)
                n += 1
    print(n)
""")


def stream_store_threshold() -> int:
    """The threshold this process's extension uses (a C function of the module)."""
    import ctypes

    from fastquilt import _C

    f = ctypes.CDLL(_C.__file__).fastquilt_stream_store_threshold
    f.restype = ctypes.c_int64
    return int(f())


def test_the_threshold_is_three_quarters_of_a_cache_unless_set():
    if "FASTQUILT_STREAM_STORE_BYTES" not in os.environ:
        t = stream_store_threshold()
        assert t > 0 and t % 3 == 0  # (3/4 of a cache size in bytes)


def test_a_bad_threshold_in_the_environment_is_ignored():
    code = ("from tests.ops.test_stream_store import stream_store_threshold as t; print(t())")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    got = []
    for value in ("abc", "-5", "12x", "", "4096"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=root, check=True,
                             env=dict(os.environ, FASTQUILT_STREAM_STORE_BYTES=value))
        got.append(int(out.stdout))
    default = stream_store_threshold() if "FASTQUILT_STREAM_STORE_BYTES" not in os.environ \
        else got[0]
    assert got == [default] * 4 + [4096]


def test_the_streaming_gather_gives_the_reference_values():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, FASTQUILT_STREAM_STORE_BYTES="0", OMP_NUM_THREADS="3",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) == 3 * 6 * 3
