#!/usr/bin/env bash
# Compile (never link) every CUDA source of CMakeLists.txt (FQ_CUDA_SOURCES) with nvcc, for the
# default arch list (TORCH_CUDA_ARCH_LIST, unless set), against the installed (CPU) torch's
# headers, through CMake with the real build's CUDA flags (FASTQUILT_CUDA_COMPILE_CHECK).
# CI has no GPU: this proves the CUDA sources compile. Usage: tools/check_cuda_compiles.sh [python]
# (build folder: build/cuda-check, or $FQ_CUDA_CHECK_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
PY_ARG="$(command -v "${1:-python3}")"
BIN="$(cd "$(dirname "$PY_ARG")" && pwd)"  # keep the venv's path: do not resolve symlinks
PY="$BIN/$(basename "$PY_ARG")"
command -v nvcc >/dev/null || { echo "check_cuda_compiles: nvcc not found (install CUDA 13's nvcc)"; exit 2; }
CMAKE="$BIN/cmake"; [ -x "$CMAKE" ] || CMAKE=cmake
NINJA="$BIN/ninja"; [ -x "$NINJA" ] || NINJA=ninja
DIR="${FQ_CUDA_CHECK_DIR:-build/cuda-check}"
mkdir -p "$DIR"
t0=$SECONDS
"$CMAKE" -S . -B "$DIR" -G Ninja -DCMAKE_MAKE_PROGRAM="$NINJA" \
  -DFASTQUILT_CUDA_COMPILE_CHECK=ON -DPython_EXECUTABLE="$PY" > "$DIR.log" 2>&1 \
  || { cat "$DIR.log"; exit 1; }
"$CMAKE" --build "$DIR" --target fq_cuda_objects
n=$(sed -n '/^set(FQ_CUDA_SOURCES/,/)/p' CMakeLists.txt | grep -c '\.cu')
archs=$(sed -n 's/^-- fastquilt: CUDA architectures //p' "$DIR.log")
echo "CUDA compile check: $n .cu files compiled for $archs with $(nvcc --version | tail -1) in $((SECONDS - t0)) s"
