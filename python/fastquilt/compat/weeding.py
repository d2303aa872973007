"""qlty 1.5.0's weeding functions: drop the patch pairs whose label patch holds no label in its
interior (NaN-aware; empty results keep their shapes)."""

from __future__ import annotations

from ..training.labels import check_missing_label, is_missing


def _weed(tensor_in, tensor_out, missing_label, border_tensor, ndim):
    if tensor_in.shape[0] != tensor_out.shape[0]:
        raise ValueError(f"tensor_in has {tensor_in.shape[0]} patches but tensor_out has "
                         f"{tensor_out.shape[0]}")
    missing_label = check_missing_label(missing_label, tensor_out.dtype)
    if tuple(tensor_out.shape[-ndim:]) != tuple(border_tensor.shape[-ndim:]):
        raise ValueError(f"border_tensor {tuple(border_tensor.shape)} does not match the "
                         f"label patches {tuple(tensor_out.shape)}")
    interior = (border_tensor >= 0.5).to(tensor_out.device)
    valid = ~is_missing(tensor_out, missing_label) & interior
    removed = valid.reshape(valid.shape[0], -1).sum(1) == 0
    keep = ~removed
    return tensor_in[keep], tensor_out[keep], removed


def weed_sparse_classification_training_pairs_2D(tensor_in, tensor_out, missing_label,
                                                 border_tensor):
    """Drop patch pairs whose label patch has no label (``!= missing_label``, NaN-aware) in the
    interior. Returns ``(kept_in, kept_out, removed_mask)``; ``removed_mask`` True = dropped."""
    return _weed(tensor_in, tensor_out, missing_label, border_tensor, 2)


def weed_sparse_classification_training_pairs_3D(tensor_in, tensor_out, missing_label,
                                                 border_tensor):
    """3D version of :func:`weed_sparse_classification_training_pairs_2D` (empty results
    have the right shapes; qlty crashes there)."""
    return _weed(tensor_in, tensor_out, missing_label, border_tensor, 3)
