"""The CPU gather writes outputs larger than the last-level cache with streaming stores
(csrc/cpu/stream_store.h). ``FASTQUILT_STREAM_STORE_BYTES=0`` makes every unweighted gather
take that path: in a fresh process it must give the reference's values, for every dtype, row
lengths that leave the rows misaligned, and 1, 2 and 3 threads (the copy routine itself is
checked at every length and alignment in tests/cpp/kernel_bodies_test.cpp)."""

import os
import subprocess
import sys
import textwrap

CODE = textwrap.dedent("""
    import numpy as np, torch, fastquilt as fq
    from tests import reference as ref
    rng = np.random.default_rng(3)
    cases = [((37, 29, 41), (9, 7, 10), (4, 3, 5)),   # 10-element rows: misaligned
             ((250, 250), (96, 96), (32, 32)),
             ((5, 3, 300), (3, 2, 63), (1, 1, 17))]
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


def test_the_streaming_gather_gives_the_reference_values():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, FASTQUILT_STREAM_STORE_BYTES="0", OMP_NUM_THREADS="3",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) == 3 * 6 * 3
