"""Device-to-host copies must complete before the CPU reads them: a ``non_blocking`` copy to
the CPU returns before the bytes arrive (a GPU run of the streaming accumulator with CPU
buffers read some windows half-copied). Every copy in the package goes through to_device."""

from pathlib import Path

import torch

import fastquilt
from fastquilt.transfer import (
    copy_is_async,
    queued_copy,
    queued_copy_,
    staged_to_device,
    to_device,
)


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


class _Pinned(torch.Tensor):
    def is_pinned(self, *args, **kwargs):
        return True


def test_a_pinned_source_is_copied_before_returning():
    # The DMA reads a pinned source after the call returns: a caller refilling its pinned
    # buffer at once would corrupt the copy. A pageable source is staged, so it may queue.
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    pageable = torch.arange(6.0)
    assert copy_is_async(pageable, cuda)
    assert not copy_is_async(pageable.as_subclass(_Pinned), cuda)
    assert not copy_is_async(pageable, cpu)
    if torch.cuda.is_available():
        on_gpu = pageable.cuda()
        assert not copy_is_async(on_gpu, cpu)
        assert copy_is_async(on_gpu, cuda)
        pinned = pageable.pin_memory()
        assert not copy_is_async(pinned, cuda)
        got = to_device(pinned, cuda)
        pinned.fill_(-1.0)  # refilled at once, like a reused batch buffer
        assert torch.equal(got.cpu(), torch.arange(6.0))


def test_no_other_non_blocking_copy_in_the_package():
    pkg = Path(fastquilt.__file__).parent
    offenders = [str(p.relative_to(pkg)) for p in pkg.rglob("*.py")
                 if p.name != "transfer.py" and "non_blocking" in p.read_text()]
    assert offenders == [], f"copies that bypass to_device: {offenders}"


def test_staged_copy_is_the_tensor_on_the_device():
    t = torch.arange(6.0)
    got = staged_to_device(t, "cpu")  # no CUDA: the plain copy
    assert torch.equal(got, t)
    if torch.cuda.is_available():
        got = staged_to_device(t, "cuda")
        t.fill_(-1.0)  # the caller's buffer refilled at once: the pinned copy is its own
        assert torch.equal(got.cpu(), torch.arange(6.0))


def test_queued_copies_are_the_tensor_on_the_device_once_reached():
    t = torch.arange(6.0)
    got, reached = queued_copy(t, "cpu")  # no CUDA on either side: done on return
    assert got is t and reached.event is None
    reached.wait()
    dst = torch.empty(6)
    assert queued_copy_(dst, t).event is None and torch.equal(dst, t)
    if torch.cuda.is_available():
        # the stream is kept busy before each copy: a read before the copy is reached
        # would see the old bytes
        pinned = torch.arange(6.0).pin_memory()
        torch.cuda._sleep(50_000_000)
        on_gpu, reached = queued_copy(pinned, "cuda")
        reached.wait()
        pinned.fill_(-1.0)  # refilled once the copy is reached
        assert torch.equal(on_gpu.cpu(), torch.arange(6.0))
        torch.cuda._sleep(50_000_000)
        back, reached = queued_copy(on_gpu * 2, "cpu")  # lands in pinned memory later
        reached.wait()
        assert back.is_pinned() and torch.equal(back, 2 * torch.arange(6.0))
        into = torch.zeros(6).pin_memory()
        torch.cuda._sleep(50_000_000)
        reached = queued_copy_(into, on_gpu * 3)
        reached.wait()
        assert torch.equal(into, 3 * torch.arange(6.0))
