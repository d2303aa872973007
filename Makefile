# fastquilt: `make demo` runs the main job on built-in data, `make test` runs the tests.
# Both create .venv when missing (Python 3.11, torch 2.13.0 CPU), are idempotent, and rebuild
# the extension when csrc/ changed.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip install -q --disable-pip-version-check
# Pinned in every install so pip never swaps in another (multi-GB CUDA) torch.
TORCH := torch==2.13.0
DEPS_STAMP := $(VENV)/.fq-deps
BUILD_STAMP := $(VENV)/.fq-build
CSRC := $(shell find csrc -type f) CMakeLists.txt pyproject.toml
# The editable install maps each module to its file: a module added, moved or removed needs a
# reinstall (the extension is rebuilt only where csrc/ changed).
PYSRC := $(shell find python -name '*.py')

.PHONY: demo test lint bench bench-gpu cuda-check kernel-bodies clean

$(DEPS_STAMP): pyproject.toml Makefile
	@test -x $(VPY) || $(PY) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) $(TORCH)
	$(PIP) $(TORCH) "scikit-build-core>=0.10" "cmake>=3.25" ninja numpy tqdm \
	  "pytest>=8" "hypothesis>=6.100" "ruff>=0.5" qlty==1.5.0 "zarr>=3" dask distributed \
	  "pillow>=9" "h5py>=3" "ome-zarr>=0.12" "ome-zarr-models>=1.0"
	@touch $@

$(BUILD_STAMP): $(DEPS_STAMP) $(CSRC) $(PYSRC)
	$(PIP) --no-build-isolation $(TORCH) -e ".[test]"
	@touch $@

demo: $(BUILD_STAMP)
	$(VPY) -m fastquilt.demo

lint: $(DEPS_STAMP)
	$(VPY) -m ruff check python tests benchmarks

cuda-check: $(DEPS_STAMP)
	tools/check_cuda_compiles.sh $(VPY)

kernel-bodies:
	tools/run_kernel_bodies.sh

test: $(BUILD_STAMP) lint cuda-check kernel-bodies qlty-tests
	$(VPY) -m pytest -q -p no:cacheprovider tests

# qlty 1.5.0's own tests against fastquilt.compat (tests/compat/qlty_expected_failures.txt).
qlty-tests: $(BUILD_STAMP)
	$(VPY) tools/run_qlty_tests.py

bench: $(BUILD_STAMP)
	$(PIP) $(TORCH) monai
	$(VPY) benchmarks/bench_cpu.py
	$(VPY) benchmarks/bench_cpu_dtypes.py --json benchmarks/results/bench_cpu_dtypes.json
	$(VPY) benchmarks/bench_cleaning.py

clean:
	rm -rf build demo_out $(VENV)/.fq-*
