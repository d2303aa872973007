"""Benchmark this machine and tune sliding-window inference for a model.

* :mod:`.bench`: the ops against a memcpy of the same bytes, compared with the reference
  machines' results kept in ``benchmarks/results/reference_bench.json``
  (``python -m fastquilt bench``).
* :mod:`.search`, :mod:`.outofcore`: batch size, step, stitching variant, reader threads and
  unit measured with the user's model (``python -m fastquilt tune``).
* :mod:`.settings`: the tuned file, read back by :func:`load_tuning` as keyword arguments of
  :func:`fastquilt.sliding_window` and by ``python -m fastquilt infer --tuning``.
"""

from .settings import load_tuning, save_tuning

__all__ = ["load_tuning", "save_tuning"]
