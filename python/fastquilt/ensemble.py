"""Several models and test-time augmentations run on each batch of windows: the windows are
read and gathered once, every member (model x transform) runs on them, and each prediction
is activated and mapped back before the members are combined into the per-window state a
:class:`fastquilt.reductions.Reduction` accumulates (their mean, and their variance when it
is asked for)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .reductions import MOMENT_OUTPUTS, activate, activation_arg, outputs_arg
from .sliding import check_model, check_model_output
from .transfer import to_device
from .tta import apply_transform, invert_transform, tta_transforms

Model = Callable[[torch.Tensor], torch.Tensor]


def models_arg(model) -> list:
    """One model, or a non-empty list/tuple of them, as a list."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("model is an empty list: give at least one model")
    return models


class Predictor:
    """Runs ``models`` (callables, or recipes that ``resolve(model, device)`` builds) under
    the transforms of ``tta`` on a batch of windows ``(B, C, *window)`` and returns the
    per-window state ``(B, K, *window)`` in float32 on the model's device: the mean over the
    ``M`` members after ``activation`` (``K = C_out``), followed by their population variance
    (``K = 2 C_out``) when ``outputs`` holds std or variance (Welford's update over the
    members: no cancellation).
    ``channels`` is ``C_out`` once a batch has run. Picklable when the models are."""

    def __init__(self, models: Sequence, tta: str = "none", activation: str | None = "none",
                 outputs: Sequence[str] | str = "mean", resolve: Callable | None = None) -> None:
        self.models = models_arg(models)
        self.tta = tta
        names = outputs_arg(outputs)
        self.activation = activation_arg(activation, names)
        self.moments = any(n in MOMENT_OUTPUTS for n in names)
        self.resolve = resolve
        self.channels: int | None = None
        tta_transforms(tta, (1,))  # a clear error for an unknown set, before any work
        if resolve is None:
            for m in self.models:
                check_model(m)

    def members(self, window: Sequence[int]) -> int:
        """Predictions per window (models x transforms)."""
        return len(self.models) * len(tta_transforms(self.tta, window))

    def _run(self, model, xb: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
        y = model(xb)
        check_model_output(y, xb.shape[0], window)
        return y.detach().to(torch.float32)

    def __call__(self, batch: torch.Tensor, window: tuple[int, ...],
                 device: torch.device) -> torch.Tensor:
        xb = to_device(batch, device)
        transforms = tta_transforms(self.tta, window)
        mean = m2 = None
        count = 0
        with torch.no_grad():
            for i, spec in enumerate(self.models):
                model = self.resolve(spec, device) if self.resolve is not None else spec
                for t in transforms:
                    y = self._run(model, apply_transform(xb, t).contiguous(), window)
                    self._check_channels(i, y.shape[1])
                    # (contiguous: the activation then runs the same kernel for every member)
                    p = activate(invert_transform(y, t).contiguous(), self.activation)
                    count += 1
                    if mean is None:  # (the model's own buffer when nothing else runs)
                        mean = p if len(self.models) * len(transforms) == 1 else p.clone()
                        m2 = torch.zeros_like(p) if self.moments else None
                        continue
                    delta = p - mean
                    mean.add_(delta, alpha=1.0 / count)
                    if self.moments:
                        m2.addcmul_(delta, p - mean)
        if not self.moments:
            return mean
        return torch.cat([mean, m2.div_(count)], dim=1)

    def _check_channels(self, i: int, c: int) -> None:
        if self.channels is None:
            self.channels = c
        elif c != self.channels:
            raise ValueError(
                f"the models disagree on the number of output channels: model {i} gives {c}, "
                f"an earlier one {self.channels}; an ensemble's members must predict the same "
                "channels")
