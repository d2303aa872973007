"""Device-to-host copies must complete before the CPU reads them: a ``non_blocking`` copy to
the CPU returns before the bytes arrive (a GPU run of the streaming accumulator with CPU
buffers read some windows half-copied). Every copy in the package goes through to_device."""

from pathlib import Path

import torch

import fastquilt
from fastquilt._transfer import to_device


class _RecordTo(torch.Tensor):
    """A tensor that records the ``non_blocking`` argument of its ``.to`` calls."""

    calls: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            cls.calls.append(kwargs.get("non_blocking", False))
        return super().__torch_function__(func, types, args, kwargs)


def test_to_device_waits_for_the_cpu_and_queues_for_cuda():
    t = torch.arange(6.0).as_subclass(_RecordTo)
    _RecordTo.calls.clear()
    assert torch.equal(to_device(t, "cpu"), torch.arange(6.0))
    to_device(t, torch.device("cpu"))
    assert _RecordTo.calls == [False, False]
    if torch.cuda.is_available():
        to_device(t, "cuda")
        assert _RecordTo.calls[-1] is True


def test_no_other_non_blocking_copy_in_the_package():
    pkg = Path(fastquilt.__file__).parent
    offenders = [p.name for p in pkg.glob("*.py")
                 if p.name != "_transfer.py" and "non_blocking" in p.read_text()]
    assert offenders == [], f"copies that bypass to_device: {offenders}"
