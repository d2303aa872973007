"""Tiny models for the tuning tests, importable as ``tests.tuning.tiny_models:function``."""

from __future__ import annotations

import torch


class Tiny(torch.nn.Module):
    """A 3x3(x3) convolution keeping the window size."""

    def __init__(self, dims: int = 3, channels: int = 1) -> None:
        super().__init__()
        conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
        self.conv = conv(channels, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class RunsOutOfMemory(Tiny):
    """Raises like the CUDA allocator above ``limit`` windows per batch."""

    def __init__(self, limit: int = 4, cuda_error: bool = True) -> None:
        super().__init__()
        self.limit, self.cuda_error = limit, cuda_error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            if self.cuda_error:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return super().forward(x)


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return Tiny().eval()


def tiny_oom() -> torch.nn.Module:
    torch.manual_seed(0)
    return RunsOutOfMemory(limit=4).eval()
