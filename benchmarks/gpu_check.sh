#!/usr/bin/env bash
# GPU check, one command on an offline GPU machine (torch+CUDA, nvcc, pytest, hypothesis):
# build the extension with its CUDA kernels, run the test suite on CUDA and the CUDA kernel
# bodies on the CPU (tools/run_kernel_bodies.sh, which pytest does not run), compute-sanitizer
# (memcheck, racecheck) on a small case, and the GPU benchmark. Results go to $OUT (or
# benchmarks/results/gpu_check/ when $OUT is unset). Each stage has its own time limit and
# the script carries on past a failing stage; the summary lists each stage's status.
# Optional wheels in .whl/ (qlty, zarr, monai, ...) are installed to a temporary folder; the
# GPU machine is offline, so fetch them here for its Python (3.12) and carry .whl/ along:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#     qlty==1.5.0 zarr numcodecs donfig google-crc32c monai dask toolz cloudpickle partd locket fsspec
# The peers' numbers (qlty, MONAI) need them; everything else runs without.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export FQ_HYPOTHESIS_EXAMPLES="${FQ_HYPOTHESIS_EXAMPLES:-25}"

stage() {  # stage NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name" | tee -a "$OUT_DIR/log.txt"
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT_DIR/$name.log"
  echo "$name: rc=$rc ($((SECONDS - t0)) s)" | tee -a "$SUMMARY"
  return $rc
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch,sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  nvcc --version | tail -n 2; } > "$OUT_DIR/log.txt" 2>&1
cat "$OUT_DIR/log.txt"

SITE="$(mktemp -d)"

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl \
    > "$SITE/wheels.log" 2>&1 || echo "optional wheels: install failed"
fi
export PYTHONPATH="$SITE"

stage build 300 env CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" FASTQUILT_BUILD_CUDA="${FASTQUILT_BUILD_CUDA:-ON}" \
  "$PY" -m pip install -v --no-build-isolation --no-deps --no-compile --target "$SITE" . || {
  echo "build failed: see $OUT_DIR/build.log"; exit 1; }
"$PY" -c "import fastquilt, torch; torch.ops.fastquilt.gather_windows.default; print('import ok')" \
  2>&1 | tee -a "$OUT_DIR/log.txt"

# FQ_GPU_TESTS: the test files to run (default: all), e.g. tests/ops/test_ops.py for a rerun.
# FQ_GPU_TEST_WORKERS: pytest-xdist processes sharing the GPU where xdist is installed (the GPU
# image has it; default 4, 0: one process). The whole suite took 241 s in one process on the
# H100 (2026-11-26), most of this script's 386 s.
WORKERS="${FQ_GPU_TEST_WORKERS:-4}"
XDIST=()
if [ "$WORKERS" -gt 0 ] && "$PY" -c "import xdist" 2> /dev/null; then XDIST=(-n "$WORKERS"); fi
echo "test workers: ${XDIST[*]:-one process}" | tee -a "$OUT_DIR/log.txt"
stage tests 300 "$PY" -m pytest -q -p no:cacheprovider -rs "${XDIST[@]}" ${FQ_GPU_TESTS:-tests}
stage kernel_bodies 300 env FQ_KERNEL_BODIES_DIR="$SITE/kernel-bodies" tools/run_kernel_bodies.sh
# The benchmark, then the last stored GPU run reprinted with the same definitions, so one log
# compares the kernels before and after, then the stitch's chunk-shape experiment
# (benchmarks/experiments/stitch_variants.cu; files coming back from $OUT are limited: no new
# file).
# The stored run to compare with: named, since the folders' names do not sort by date
# (update it when a run is stored).
PREVIOUS="${FQ_PREVIOUS_RUN:-benchmarks/results/gpu_check_2026-11-26_h100_bf16shape/bench_gpu.json}"
[ -f "$PREVIOUS" ] || PREVIOUS=""
stage bench 200 bash -c '"$1" benchmarks/bench_gpu.py --json "$2"; rc=$?
  if [ -n "$3" ]; then echo; echo "--- previous stored run: $3"
    "$1" benchmarks/bench_gpu.py --report "$3"; fi
  echo; echo "--- benchmarks/experiments/stitch_variants.cu"
  nvcc -O3 -std=c++17 -arch=sm_90 -Icsrc benchmarks/experiments/stitch_variants.cu \
    -o "$4/stitch_variants" && "$4/stitch_variants" || rc=1
  exit $rc' _ "$PY" "$OUT_DIR/bench_gpu.json" "$PREVIOUS" "$SITE"
# Training batches: WindowSampler from a GPU-resident volume against DataLoader loaders with 8
# CPU workers, and the model's busy fraction in a short training run from each.
stage sampler 240 "$PY" benchmarks/bench_sampler.py --device cuda --workers 8 --rounds 3 \
  --train 40
# The whole pipeline with a real model (issue 15): GPU busy fraction and what reading,
# stitching and writing add to a 3D U-Net's time, out of core and in memory, fp32 and bf16.
stage pipeline 240 "$PY" benchmarks/bench_gpu_pipeline.py --json "$OUT_DIR/bench_gpu_pipeline.json"
stage memcheck 100 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" benchmarks/sanitizer_case.py
stage racecheck 80 compute-sanitizer --tool racecheck --error-exitcode 9 "$PY" benchmarks/sanitizer_case.py
echo "=== summary"; cat "$SUMMARY"
