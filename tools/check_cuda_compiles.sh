#!/usr/bin/env bash
# Compile (never link) every csrc/cuda/*.cu with nvcc for sm_90 against the installed (CPU)
# torch's headers, through CMake with the real build's CUDA flags (FASTQUILT_CUDA_COMPILE_CHECK).
# CI has no GPU: this proves the CUDA sources compile. Usage: tools/check_cuda_compiles.sh [python]
set -euo pipefail
cd "$(dirname "$0")/.."
PY_ARG="$(command -v "${1:-python3}")"
BIN="$(cd "$(dirname "$PY_ARG")" && pwd)"  # keep the venv's path: do not resolve symlinks
PY="$BIN/$(basename "$PY_ARG")"
command -v nvcc >/dev/null || { echo "check_cuda_compiles: nvcc not found (install CUDA 13's nvcc)"; exit 2; }
CMAKE="$BIN/cmake"; [ -x "$CMAKE" ] || CMAKE=cmake
NINJA="$BIN/ninja"; [ -x "$NINJA" ] || NINJA=ninja
t0=$SECONDS
"$CMAKE" -S . -B build/cuda-check -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" \
  -DFASTQUILT_CUDA_COMPILE_CHECK=ON -DPython_EXECUTABLE="$PY" -DTORCH_CUDA_ARCH_LIST=9.0 > build/cuda-check.log 2>&1 \
  || { cat build/cuda-check.log; exit 1; }
"$CMAKE" --build build/cuda-check --target fq_cuda_objects
n=$(ls csrc/cuda/*.cu | wc -l)
echo "CUDA compile check: $n .cu files compiled for sm_90 with $(nvcc --version | tail -1) in $((SECONDS - t0)) s"
