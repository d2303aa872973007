#!/usr/bin/env bash
# The CUDA kernel bodies, run on the CPU (`make kernel-bodies`, part of `make test`), and the
# CPU gather's streaming row copy (cpu/stream_store.h) at every length and alignment.
# The per-thread work of the CUDA gather, scatter-add, grid stitch and grid weight sums lives in
# host-device headers (csrc/kernel_bodies/). This compiles tests/cpp/kernel_bodies_test.cpp
# against them with AddressSanitizer and UBSan and runs every thread of emulated launches
# against float64 references; vector accesses assert 16-byte alignment on the host. It needs
# no GPU and no torch: the index math, alignment decisions and bounds handling that the GPU
# runs are checked in every CI run. Usage: tools/run_kernel_bodies.sh (CXX picks the compiler;
# the binary goes to build/kernel-bodies/, or $FQ_KERNEL_BODIES_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX_BIN="$(command -v "${CXX:-c++}" || command -v g++ || true)"
[ -n "$CXX_BIN" ] || { echo "run_kernel_bodies: a C++ compiler is needed (set CXX)"; exit 2; }
DIR="${FQ_KERNEL_BODIES_DIR:-build/kernel-bodies}"
mkdir -p "$DIR"
EXE="$DIR/kernel_bodies_test"
t0=$SECONDS
build() {  # build EXTRA_FLAGS...
  "$CXX_BIN" -std=c++17 -O1 -g "$@" -Wall -Wextra -Werror -I csrc \
    tests/cpp/kernel_bodies_test.cpp -o "$EXE" 2> "$DIR/build.log"
}
if ! build -fsanitize=address,undefined -fno-sanitize-recover=all; then
  if grep -q "san" "$DIR/build.log" && grep -q "cannot find" "$DIR/build.log"; then
    # A toolchain without the sanitizer runtimes (possible on minimal GPU images): the
    # alignment asserts and the references still run; CI's toolchain has them.
    echo "kernel bodies: sanitizer runtimes missing, built without them"
    build || { cat "$DIR/build.log"; exit 1; }
  else
    cat "$DIR/build.log"; exit 1
  fi
fi
"$EXE"
echo "kernel bodies: $((SECONDS - t0)) s (build and run)"
