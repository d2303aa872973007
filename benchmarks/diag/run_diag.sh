#!/usr/bin/env bash
# One-off diagnosis on the GPU machine: C++ backtrace of a crash, details of a failing test.
cd "$(dirname "$0")/../.."
export PYTHONPATH=/tmp/fq_site PYTHONUNBUFFERED=1
if ! python3 -c "import fastquilt" 2>/dev/null; then
  mkdir -p /tmp/fq_site
  CMAKE_BUILD_PARALLEL_LEVEL=16 FASTQUILT_BUILD_CUDA=ON timeout 200 python3 -m pip install -q --no-build-isolation --no-deps --no-compile --target /tmp/fq_site . > /tmp/build.log 2>&1 || tail -30 /tmp/build.log
fi
python3 benchmarks/diag/segv_case.py 2>&1 | tail -5
timeout 60 cuda-gdb -batch -ex run -ex bt --args python3 benchmarks/diag/segv_case.py 2>&1 | grep -E "^#|signal|SIG" | head -30
FQ_HYPOTHESIS_EXAMPLES=10 timeout 120 python3 -m pytest -x -q -p no:cacheprovider --tb=long tests/test_cuda.py -k gradcheck 2>&1 | grep -E "Error|error|assert|Mismatch|^E " | head -30
