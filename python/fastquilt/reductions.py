"""What an ensemble run accumulates per voxel and the outputs it finishes into.

Every window ``k`` yields, after the activation, ``M`` predictions ``p_km`` (ensemble members
times test-time augmentations) that share the window weight ``w_k``. At a voxel:

* **mean** = ``sum_k w_k mu_k / W`` with ``mu_k = (1/M) sum_m p_km`` and ``W = sum_k w_k``;
* **variance** = ``sum_k w_k (v_k + (mu_k - mean)^2) / W`` with ``v_k = (1/M) sum_m (p_km -
  mu_k)^2``: the weighted population variance of all ``M`` predictions of every window
  covering the voxel, each weighted ``w_k / M`` (so it is 0 for one member without
  augmentation and a single window); **std** is its square root;
* **labels** = argmax over classes of the mean (uint8 up to 256 classes, else uint16),
  **probability** = the mean of that class, **entropy** = ``-sum_c mean_c log mean_c``
  (the predictive entropy, natural log): these need ``activation="softmax"``.

Voxels no window covers hold ``fill_value`` (labels: 0). Without std/variance the state is the
weighted sum ``sum_k w_k mu_k`` (C channels; the compiled scatter-add). With them it is the
moments ``(W, mean, M2)`` (``M2 = W * variance``; 2C channels plus W), merged window by window
with Chan et al.'s weighted update in float32 -- a shift by the running mean, so large means
with small spreads lose nothing to cancellation (no ``E[x^2] - E[x]^2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import ops
from .normalize import weighted_mean

OUTPUTS = ("mean", "std", "variance", "labels", "probability", "entropy")
ACTIVATIONS = ("none", "softmax", "sigmoid")
CLASS_OUTPUTS = ("labels", "probability", "entropy")
MOMENT_OUTPUTS = ("std", "variance")


def outputs_arg(outputs: str | Sequence[str]) -> tuple[str, ...]:
    """``outputs`` as a tuple of known, distinct output names."""
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    bad = [n for n in names if n not in OUTPUTS]
    if bad or not names:
        raise ValueError(f"outputs must be names among {', '.join(OUTPUTS)}, got {bad or '()'}")
    if len(set(names)) != len(names):
        raise ValueError(f"outputs names an output twice: {list(names)}")
    return names


def activation_arg(activation: str | None, outputs: tuple[str, ...]) -> str:
    """The activation name; labels, probability and entropy need softmax (classes)."""
    act = "none" if activation is None else activation
    if act not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
    cls = [n for n in outputs if n in CLASS_OUTPUTS]
    if cls and act != "softmax":
        raise ValueError(
            f"outputs {cls} need class probabilities: pass activation='softmax' (the model "
            f"gives one score per class); activation {act!r} does not make classes")
    return act


def activate(y: torch.Tensor, activation: str) -> torch.Tensor:
    """``y`` ``(B, C, *window)`` through the activation (over channels for softmax)."""
    if activation == "softmax":
        return torch.softmax(y, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(y)
    return y


def merge_moments_(W: torch.Tensor, mean: torch.Tensor, M2: torch.Tensor, Wb: torch.Tensor,
                   mean_b: torch.Tensor, M2b: torch.Tensor) -> None:
    """Merge the moments ``(Wb, mean_b, M2b)`` into ``(W, mean, M2)`` in place (Chan et al.):
    ``W`` / ``Wb`` broadcast over the channels of ``mean`` / ``M2`` ``(C, *box)``. Where both
    weights are 0 nothing changes."""
    W_new = W + Wb
    r = torch.where(W_new > 0, Wb / W_new.clamp_min(torch.finfo(W.dtype).tiny),
                    torch.zeros((), dtype=W.dtype, device=W.device))
    delta = mean_b - mean
    mean.addcmul_(delta, r)
    M2.add_(M2b).addcmul_(delta.square_(), W * r)
    W.copy_(W_new)


EPILOGUE_BLOCK_BYTES = 16 * 2**20  # the op reads a strided view through a copy this large


def _class_outputs(acc: torch.Tensor, wsum: torch.Tensor | None, fill: float,
                   names: list[str]) -> dict[str, torch.Tensor]:
    """labels / probability / entropy ``(N, 1, *S)`` of ``acc`` by the fused epilogue, in
    blocks of planes along the first spatial axis when ``acc`` is a strided view (a unit cut
    from the slab): its copy then stays small instead of a unit's C channels."""
    N, S = acc.shape[0], acc.shape[2:]
    plane = max(1, acc[:, :, :1].numel() * acc.element_size())
    step = S[0] if acc.is_contiguous() else max(1, EPILOGUE_BLOCK_BYTES // plane)
    want = {"probability": "probability" in names, "entropy": "entropy" in names}
    res = {n: None for n in names}
    for z in range(0, S[0], step):
        block = ops.class_epilogue(acc[:, :, z:z + step],
                                   None if wsum is None else wsum[:, z:z + step], fill,
                                   want["probability"], want["entropy"])
        for name, t in zip(("labels", "probability", "entropy"), block):
            if name in names:
                if res[name] is None:
                    res[name] = t.new_empty((N, 1, *S))
                res[name][:, 0, z:z + step] = t
    return res


class Reduction:
    """The accumulation and finishing of ``outputs`` for models with ``channels`` outputs.

    State: ``acc`` ``(N, K, *S)`` with ``K = channels`` (weighted sums) or ``2 * channels``
    (mean, M2), and ``wsum`` ``(N, *S)`` (the weight sum ``W``).
    """

    def __init__(self, outputs: Sequence[str] | str = "mean", channels: int = 1,
                 fill_value: float = 0.0) -> None:
        self.outputs = outputs_arg(outputs)
        self.channels, self.fill_value = int(channels), float(fill_value)
        self.moments = any(n in MOMENT_OUTPUTS for n in self.outputs)
        if any(n in CLASS_OUTPUTS for n in self.outputs) and self.channels > ops.MAX_CLASSES:
            raise ValueError(f"labels hold at most {ops.MAX_CLASSES} classes (uint16); the "
                             f"models give {self.channels} channels")

    @property
    def state_channels(self) -> int:
        return 2 * self.channels if self.moments else self.channels

    def specs(self, float_dtype: str = "float32") -> dict[str, tuple[int, str]]:
        """Per output: ``(channels, numpy dtype name)``."""
        lab = str(ops.label_dtype(self.channels)).replace("torch.", "")
        return {n: ((self.channels if n in ("mean", "std", "variance") else 1),
                    lab if n == "labels" else float_dtype) for n in self.outputs}

    def add(self, acc: torch.Tensor, wsum: torch.Tensor | None, origins: torch.Tensor,
            pred: torch.Tensor, weight: torch.Tensor) -> None:
        """Add windows at ``origins`` ``(B, 1 + D)`` (into ``acc``'s frame) with per-window
        state ``pred`` ``(B, K, *window)`` (``mu``, or ``mu`` and ``v`` stacked)."""
        if not self.moments:
            ops.scatter_add_windows_(pred, origins, acc, wsum, weight=weight)
            return
        C, window = self.channels, pred.shape[2:]
        org = origins.tolist()
        for b in range(pred.shape[0]):  # in order: every voxel sees its windows in order
            n, starts = org[b][0], org[b][1:]
            box = tuple(slice(s, s + w) for s, w in zip(starts, window))
            a = acc[(n, slice(None), *box)]
            mu, v = pred[b, :C], pred[b, C:]
            merge_moments_(wsum[(n, *box)], a[:C], a[C:], weight, mu, v * weight)

    def finish(self, acc: torch.Tensor, wsum: torch.Tensor | None,
               normalised: bool = False) -> dict[str, torch.Tensor]:
        """The outputs ``{name: (N, c, *S)}`` of the state (``acc`` already divided by the
        weight sum when ``normalised``: the in-memory grid path). ``acc`` may be reused."""
        C, fill, out = self.channels, self.fill_value, {}
        if self.moments:
            covered = (wsum > 0).unsqueeze(1)
            mean = acc[:, :C].where(covered, fill) if "mean" in self.outputs or any(
                n in CLASS_OUTPUTS for n in self.outputs) else None
            var = acc[:, C:] / wsum.clamp_min(torch.finfo(wsum.dtype).tiny).unsqueeze(1)
            var = var.clamp_min_(0).where(covered, fill)
            if "variance" in self.outputs:
                out["variance"] = var
            if "std" in self.outputs:
                out["std"] = var.sqrt().where(covered, fill)
            base, ws = mean, None
        else:
            if "mean" in self.outputs:
                mean = acc if normalised else weighted_mean(acc, wsum, fill)
            base, ws = acc, (None if normalised else wsum)
        if "mean" in self.outputs:
            out["mean"] = mean
        cls = [n for n in CLASS_OUTPUTS if n in self.outputs]
        if cls:
            out.update(_class_outputs(base, ws, fill, cls))
            if "entropy" in out and ws is None and wsum is not None and fill != 0:
                # (the epilogue saw means, not sums: the uncovered voxels from the weight sum;
                # their entropy is the fill value, not that of the filled means)
                # (wsum: (N, *S), or the grid's (*S), the same for every image)
                covered = wsum > 0 if wsum.dim() == len(acc.shape[2:]) else (wsum > 0)[:, None]
                out["entropy"] = out["entropy"].where(covered, fill)
        return {n: out[n] for n in self.outputs}

    def merge_piece(self, acc: torch.Tensor, wsum: torch.Tensor, dst: tuple[slice, ...],
                    acc_b: torch.Tensor, wsum_b: torch.Tensor) -> None:
        """Add a piece ``(acc_b (K, *piece), wsum_b (*piece))`` at ``dst`` into a unit's state
        ``(acc (K, *unit), wsum (*unit))``: a sum, or a merge of moments."""
        a = acc[(slice(None), *dst)]
        if not self.moments:
            a += acc_b
            wsum[dst] += wsum_b
            return
        C = self.channels
        merge_moments_(wsum[dst], a[:C], a[C:], wsum_b, acc_b[:C], acc_b[C:])
