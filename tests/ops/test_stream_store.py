"""The CPU gather writes outputs larger than the last-level cache with streaming stores
(csrc/cpu/stream_store.h). ``FASTQUILT_STREAM_STORE_BYTES=0`` makes every unweighted gather
of rows of 128 bytes or more take that path (the extension's
``fastquilt_stream_store_threshold()`` says which threshold is in force): in a fresh process
it must give the reference's values, for every dtype, row lengths that leave the rows
misaligned, and 1, 2 and 3 threads (the copy routine itself is checked at every length and
alignment in tests/cpp/kernel_bodies_test.cpp)."""

import glob
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def _threshold_in_a_child(value: str | None) -> tuple[int, str]:
    """The threshold and stderr of a fresh process with FASTQUILT_STREAM_STORE_BYTES=value
    (None: unset)."""
    env = {k: v for k, v in os.environ.items() if k != "FASTQUILT_STREAM_STORE_BYTES"}
    if value is not None:
        env["FASTQUILT_STREAM_STORE_BYTES"] = value
    code = "from tests.ops.test_stream_store import stream_store_threshold as t; print(t())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout), out.stderr


def _sysfs_last_level_cache() -> int:
    """The size of CPU 0's highest cache level listed in sysfs (0: none listed)."""
    best = (0, 0)
    for d in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            level = int(open(os.path.join(d, "level")).read())
            size = open(os.path.join(d, "size")).read().strip()
        except (OSError, ValueError):
            continue
        n = int(size.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(size[-1:], 0)
        best = max(best, (level, n))
    return best[1]


def test_the_threshold_is_three_quarters_of_the_last_level_cache():
    llc = _sysfs_last_level_cache()
    got = _threshold_in_a_child(None)[0]
    if llc:
        assert got == llc // 4 * 3
    else:  # (no sysfs: sysconf's size, or 32 MiB)
        assert got > 0 and got % 3 == 0


def test_a_bad_threshold_in_the_environment_is_ignored_with_a_message():
    default = _threshold_in_a_child(None)[0]
    for value in ("abc", "-5", "12x", "64M", "99999999999999999999"):
        got, err = _threshold_in_a_child(value)
        assert got == default and "FASTQUILT_STREAM_STORE_BYTES" in err, (value, got, err)
    assert _threshold_in_a_child("4096") == (4096, "")
    assert _threshold_in_a_child("")[0] == default  # (empty: as unset)


def test_the_streaming_gather_gives_the_reference_values():
    root = ROOT
    env = dict(os.environ, FASTQUILT_STREAM_STORE_BYTES="0", OMP_NUM_THREADS="3",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                         cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) == 3 * 6 * 3
