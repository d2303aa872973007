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
        models = [self.resolve(m, device) if self.resolve is not None else m
                  for m in self.models]
        total = None  # (count, mean or sum, M2) over the transforms done
        with torch.no_grad():
            for t in transforms:
                xt = apply_transform(xb, t).contiguous()
                # the models' predictions under one transform, combined where they are (in the
                # transformed frame): one inverse per transform, not one per member
                group = None
                for i, model in enumerate(models):
                    y = self._run(model, xt, window)
                    self._check_channels(i, y.shape[1])
                    group = _add_member(group, activate(y, self.activation), self.moments)
                n, mean, m2 = group
                # (contiguous: an inverse permutation's view, made like a flip's result)
                mean = invert_transform(mean, t).contiguous()
                m2 = invert_transform(m2, t).contiguous() if m2 is not None else None
                total = _merge_groups(total, (n, mean, m2), self.moments)
        n, mean, m2, _ = total
        if not self.moments:
            return mean.div_(n) if n > 1 else mean
        return torch.cat([mean, m2.div_(n)], dim=1)

    def _check_channels(self, i: int, c: int) -> None:
        if self.channels is None:
            self.channels = c
        elif c != self.channels:
            raise ValueError(
                f"the models disagree on the number of output channels: model {i} gives {c}, "
                f"an earlier one {self.channels}; an ensemble's members must predict the same "
                "channels")


def _add_member(group, p: torch.Tensor, moments: bool):
    """Add one member's prediction ``p`` to ``(count, sum or mean, M2)`` (Welford's update
    with moments: no cancellation). The first member's tensor is never written to (it may be
    the model's input or its own buffer): the second makes a new one."""
    if group is None:
        return 1, p, (torch.zeros_like(p) if moments else None)
    n, mean, m2 = group
    n += 1
    if not moments:
        return n, (mean + p if n == 2 else mean.add_(p)), None
    delta = p - mean
    mean = mean + delta / n if n == 2 else mean.add_(delta, alpha=1.0 / n)
    m2.addcmul_(delta, p - mean)
    return n, mean, m2


def _merge_groups(total, group, moments: bool):
    """Merge ``group`` ``(count, sum or mean, M2)`` into ``total`` (Chan et al. with
    moments); the first group's tensors are not written to (they may be a member's own)."""
    if total is None:
        return (*group, False)
    n_a, a, m2_a, owned = total
    n_b, b, m2_b = group
    n = n_a + n_b
    if not moments:
        return n, (a.add_(b) if owned else a + b), None, True
    delta = b - a
    a = a.add_(delta, alpha=n_b / n) if owned else a + delta * (n_b / n)
    m2_a = (m2_a.add_(m2_b) if owned else m2_a + m2_b).addcmul_(delta, delta,
                                                               value=n_a * n_b / n)
    return n, a, m2_a, True
