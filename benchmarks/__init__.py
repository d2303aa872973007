"""Benchmarks and GPU-check scripts. Each runs as a script (``python benchmarks/bench_cpu.py``);
the tests import the GPU scripts as ``benchmarks.<name>`` to run their inputs on the CPU."""
