"""Class outputs of a segmentation: the label dtype, and the fused epilogue op
(``torch.ops.fastquilt.class_epilogue``: normalisation, argmax, chosen-class probability and
entropy in one pass per voxel) with its fake kernel."""

from __future__ import annotations

import torch

from . import _C  # noqa: F401  (runs the TORCH_LIBRARY initialisers)

_ops = torch.ops.fastquilt

MAX_CLASSES = 65535  # labels are uint8 up to 256 classes, uint16 up to this


def label_dtype(classes: int) -> torch.dtype:
    """The smallest unsigned integer dtype that holds the labels of ``classes`` classes."""
    return torch.uint8 if classes <= 256 else torch.uint16


def class_epilogue(
    acc: torch.Tensor,
    weight_sum: torch.Tensor | None = None,
    fill_value: float = 0.0,
    probability: bool = False,
    entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Per voxel of ``acc`` ``(N, C, *S)`` (float32/64 class scores): the mean ``acc /
    weight_sum`` (:mod:`fastquilt.normalize`'s rule, ``fill_value`` where ``weight_sum`` is 0;
    ``weight_sum`` None: ``acc`` is the mean already), then in the same pass ``labels`` ``(N,
    *S)``, the argmax over classes (ties and NaN as ``torch.argmax``; uint8 up to 256 classes,
    uint16 up to 65535), and when asked for the mean of the chosen class and the entropy
    ``-sum_c p_c log p_c`` of the mean (``(N, *S)``, ``acc``'s dtype; None otherwise).
    No autograd (labels are not differentiable)."""
    labels, prob, ent = _ops.class_epilogue.default(acc, weight_sum, float(fill_value),
                                                    bool(probability), bool(entropy))
    return labels, (prob if probability else None), (ent if entropy else None)


@torch.library.register_fake("fastquilt::class_epilogue")
def _class_epilogue_fake(acc, weight_sum, fill_value, probability, entropy):
    torch._check(acc.dim() >= 3 and 1 <= acc.shape[1] <= MAX_CLASSES)
    shape = (acc.shape[0], *acc.shape[2:])
    labels = acc.new_empty(shape, dtype=label_dtype(acc.shape[1]))
    return (labels, acc.new_empty(shape if probability else (0,)),
            acc.new_empty(shape if entropy else (0,)))
