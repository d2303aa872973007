#!/usr/bin/env bash
# GPU check, one command on an offline GPU machine (torch+CUDA, nvcc, pytest, hypothesis):
# build the extension with its CUDA kernels, then, in order of what has never been measured
# or run on a GPU: the CUDA tests of the code no GPU has run yet, the pipeline benchmark (issue
# 15), the sampler benchmark (issue 18), CPU thread scaling on the machine's cores, the GPU
# benchmark, compute-sanitizer (memcheck, racecheck) on a small case, the CUDA kernel bodies on
# the CPU (tools/run_kernel_bodies.sh) and the rest of the test suite. Results go to $OUT (or
# benchmarks/results/gpu_check/ when $OUT is unset).
#
# The whole script fits FQ_GPU_BUDGET_S seconds (default 480: a device session has 15 minutes,
# machine start included, and room for a rerun): each stage runs under the smaller of its own
# limit and what is left of the budget, a stage with under 20 s left is skipped, and the script
# carries on past a failing stage; the summary lists each stage's status. FQ_GPU_STAGES (e.g.
# "build tests_new pipeline") runs only the stages named (build is always run first).
# Optional wheels in .whl/ (qlty, zarr, monai, ...) are installed to a temporary folder; the
# GPU machine is offline, so fetch them here for its Python (3.12) and carry .whl/ along:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl qlty==1.5.0 \
#     zarr numcodecs donfig google-crc32c monai dask distributed toolz cloudpickle partd locket \
#     fsspec tqdm typing_extensions msgpack psutil tornado tblib zict sortedcontainers click
# (the versions of the development venv's: see docs/development.md). The peers' numbers (qlty,
# MONAI), the out-of-core stages and the cluster tests need them.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/results/gpu_check}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"
export PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export FQ_HYPOTHESIS_EXAMPLES="${FQ_HYPOTHESIS_EXAMPLES:-25}"

BUDGET="${FQ_GPU_BUDGET_S:-480}"
wanted() {  # wanted NAME: whether FQ_GPU_STAGES (default: every stage) names the stage
  [ -z "${FQ_GPU_STAGES:-}" ] || [ "$1" = build ] || [[ " $FQ_GPU_STAGES " == *" $1 "* ]]
}

stage() {  # stage NAME TIMEOUT_S COMMAND...: under min(TIMEOUT_S, what the budget has left)
  local name=$1 limit=$2; shift 2
  wanted "$name" || return 0
  local left=$((BUDGET - SECONDS - 5))
  if [ "$left" -lt 20 ]; then
    echo "$name: skipped (budget of $BUDGET s spent)" | tee -a "$SUMMARY"
    return 0
  fi
  [ "$left" -lt "$limit" ] && limit=$left
  local t0=$SECONDS
  echo "=== $name (limit $limit s)" | tee -a "$OUT_DIR/log.txt"
  timeout -k 10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1  # (-k: killed if it ignores TERM)
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
timeout -k 5 60 "$PY" -c "import fastquilt, torch; torch.ops.fastquilt.gather_windows.default; print('import ok')" \
  2>&1 | tee -a "$OUT_DIR/log.txt"

# FQ_GPU_TEST_WORKERS: pytest-xdist processes sharing the GPU where xdist is installed (the GPU
# image has it; default 4, 0: one process). The whole suite took 134-241 s in one process on
# the H100 (2026-11-26).
WORKERS="${FQ_GPU_TEST_WORKERS:-4}"
XDIST=()
if [ "$WORKERS" -gt 0 ] && "$PY" -c "import xdist" 2> /dev/null; then XDIST=(-n "$WORKERS"); fi
echo "test workers: ${XDIST[*]:-one process}" | tee -a "$OUT_DIR/log.txt"
# The tests of the CUDA code no GPU has run yet (the class epilogue, the oriented gather, the
# sampler's device and pinned paths, staged and queued copies, the in-memory sliding window one
# batch ahead of the GPU, ensembles on the device, GPU workers, the spilling slab on the device).
NEW_CUDA_TESTS=(tests/ops/test_class_epilogue.py tests/ops/test_oriented.py tests/training
                tests/core/test_transfer.py tests/core/test_streaming.py tests/ensemble
                tests/outofcore/test_distributed.py tests/outofcore/test_spill.py)
stage tests_new 150 "$PY" -m pytest -q -p no:cacheprovider -rs "${XDIST[@]}" "${NEW_CUDA_TESTS[@]}"
# The whole pipeline with a real model (issue 15): GPU busy fraction and what reading,
# stitching and writing add to a 3D U-Net's time, out of core and in memory, fp32 and bf16.
stage pipeline 180 "$PY" benchmarks/bench_gpu_pipeline.py --reps 1 --json "$OUT_DIR/bench_gpu_pipeline.json"
# Training batches (issue 18): WindowSampler from a GPU-resident volume against DataLoader
# loaders with 8 CPU workers, and the model's busy fraction in a short training run from each.
stage sampler 120 "$PY" benchmarks/bench_sampler.py --device cuda --workers 8 --rounds 2 \
  --train 20
# Ensembles on the GPU (issue 16): what the gather, transforms, stitch and epilogue add to 4
# U-Nets + flips (32 predictions per window) and to one, in memory, the volume on the device.
stage ensemble 90 "$PY" benchmarks/bench_segmentation.py --ensemble --model unet --device cuda \
  --size 128 --window 64 --step 48 --batch 4 --rounds 3
# CPU thread scaling on this machine's cores (issue 15: 1/4/8/16 threads against the memcpy
# floor at the same count), fresh memory.
stage cpu_threads 120 "$PY" benchmarks/bench_cpu.py --reps 3 --rounds 1 --threads 1 4 8 16 \
  --json "$OUT_DIR/bench_cpu_16cores.json"
# The GPU benchmark, then the last stored GPU run reprinted with the same definitions, so one
# log compares the kernels before and after. The stored run to compare with is named, since
# the folders' names do not sort by date (update it when a run is stored).
PREVIOUS="${FQ_PREVIOUS_RUN:-benchmarks/results/gpu_check_2026-11-26_h100_bf16shape/bench_gpu.json}"
[ -f "$PREVIOUS" ] || PREVIOUS=""
stage bench 90 bash -c '"$1" benchmarks/bench_gpu.py --json "$2"; rc=$?
  if [ -n "$3" ]; then echo; echo "--- previous stored run: $3"
    "$1" benchmarks/bench_gpu.py --report "$3"; fi
  exit $rc' _ "$PY" "$OUT_DIR/bench_gpu.json" "$PREVIOUS"
stage memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 9 "$PY" benchmarks/sanitizer_case.py
stage racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 9 "$PY" benchmarks/sanitizer_case.py
stage kernel_bodies 90 env FQ_KERNEL_BODIES_DIR="$SITE/kernel-bodies" tools/run_kernel_bodies.sh
# The rest of the suite (FQ_GPU_TESTS: other test files), with what is left of the budget.
REST=()
for f in tests/*/test_*.py; do
  case " ${NEW_CUDA_TESTS[*]} " in *" $f "*|*" $(dirname "$f") "*) ;; *) REST+=("$f") ;; esac
done
stage tests_rest 300 "$PY" -m pytest -q -p no:cacheprovider -rs "${XDIST[@]}" \
  ${FQ_GPU_TESTS:-${REST[@]}}
echo "=== summary (budget $BUDGET s, used $SECONDS s)"; cat "$SUMMARY"
