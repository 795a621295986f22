"""The single-forward (SF) loss with virtual nodes and its closed-form gradient (docs/algorithms.md#sf).

``logits_ic = <h_i, h_{v_c}> / tau`` for training rows ``i``; ``loss = CrossEntropy(logits, y)``.
With ``P = softmax(logits)`` and ``R = (P - Y) / (tau * n_train)``:
``dh_i = R_i h_V`` (training rows) and ``dh_{v_c} = sum_i R_ic h_i`` (virtual rows); every other
row's gradient is zero, so the result is returned for the ``n_train + C`` non-zero rows only
and the layer update becomes a row-gathered GEMM over them.
"""
from __future__ import annotations

import torch

from .. import backends as _backends
from .._validation import check_float, check_positive_number, check_same_device, check_tensor
from . import reject_autograd

__all__ = ["sf_loss_grad", "sf_logits"]


def _check_index(value, name: str, n: int, device) -> torch.Tensor:
    check_tensor(value, name)
    if value.dtype == torch.bool or value.is_floating_point() or value.is_complex():
        raise TypeError(f"{name} must have an integer dtype, got {value.dtype}")
    if value.dim() != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(value.shape)}")
    check_same_device(name, value, device, "h")
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= n):
        raise ValueError(f"{name} must index rows of h in [0, {n})")
    return value.to(torch.int64)


def sf_loss_grad_kernel(h, train_idx, y_train, virtual_idx, tau: float, backend: str | None = None):
    """The unchecked core of :func:`sf_loss_grad`: ``(loss, grad_rows)`` for already validated
    int64 indices (trainers validate their index sets once, not on every step)."""
    impl = _backends.resolve_or_reference("sf_loss_grad", backend, h.device, h.dtype)
    return impl.sf_loss_grad(h.contiguous(), train_idx, y_train, virtual_idx, tau)


def sf_loss_grad(h: torch.Tensor, train_idx: torch.Tensor, y_train: torch.Tensor, virtual_idx: torch.Tensor,
                 tau: float = 1.0, dense: bool = False, backend: str | None = None):
    """SF loss of one layer and its gradient with respect to the layer output ``h``.

    Args:
        h: ``[N_aug, D]`` post-ReLU output of the layer on the augmented graph (or any row
            subset that holds the training and virtual rows, e.g. the gathered
            ``h[cat(train_idx, virtual_idx)]`` with local indices).
        train_idx: ``[n_train]`` integer rows of ``h`` that carry the loss.
        y_train: ``[n_train]`` integer labels in ``[0, C)``.
        virtual_idx: ``[C]`` integer rows of ``h`` holding the virtual nodes (class ``c`` is
            ``virtual_idx[c]``); must not overlap ``train_idx``.
        tau: temperature (> 0).
        dense: return a dense ``[N_aug, D]`` gradient instead of the row-restricted one.
        backend: ``reference``, ``cpu`` (C++) or ``triton``; default: the fastest usable one.

    Returns:
        ``(loss, grad_rows, rows)``: 0-d loss (float32, float64 for float64 ``h``),
        ``grad_rows`` ``[n_train + C, D]`` = ``dloss/dh[rows]`` in ``h``'s dtype and
        ``rows = cat(train_idx, virtual_idx)`` (int64). With ``dense=True``:
        ``(loss, grad_h)`` with ``grad_h`` ``[N_aug, D]``.

    Raises:
        TypeError: non-tensor or wrongly typed argument.
        ValueError: wrong shapes, out-of-range indices or labels, overlapping index sets.
    """
    check_float(h, "h", ndim=2)
    n = h.shape[0]
    train_idx = _check_index(train_idx, "train_idx", n, h.device)
    virtual_idx = _check_index(virtual_idx, "virtual_idx", n, h.device)
    num_classes = virtual_idx.numel()
    if num_classes < 1:
        raise ValueError("virtual_idx must hold at least one virtual node")
    check_tensor(y_train, "y_train")
    if y_train.dtype == torch.bool or y_train.is_floating_point() or y_train.is_complex():
        raise TypeError(f"y_train must have an integer dtype, got {y_train.dtype}")
    if y_train.dim() != 1 or y_train.numel() != train_idx.numel():
        raise ValueError(f"y_train must have shape [{train_idx.numel()}] (one label per train_idx entry), "
                         f"got {tuple(y_train.shape)}")
    check_same_device("y_train", y_train, h.device, "h")
    if y_train.numel() and (int(y_train.min()) < 0 or int(y_train.max()) >= num_classes):
        raise ValueError(f"y_train must be in [0, {num_classes}) (one virtual node per class)")
    tau = check_positive_number(tau, "tau")
    if not isinstance(dense, bool):
        raise TypeError(f"dense must be a bool, got {type(dense).__name__}")
    if train_idx.numel() and torch.isin(virtual_idx, train_idx).any():
        raise ValueError("virtual_idx and train_idx must not overlap")
    y_train = y_train.to(torch.int64)
    reject_autograd("sf_loss_grad", h=h)
    loss, grad_rows = sf_loss_grad_kernel(h, train_idx, y_train, virtual_idx, tau, backend)
    rows = torch.cat([train_idx, virtual_idx])
    if not dense:
        return loss, grad_rows, rows
    grad = torch.zeros_like(h)
    grad.index_add_(0, rows, grad_rows)
    return loss, grad


def sf_logits(h: torch.Tensor, virtual_idx: torch.Tensor, tau: float = 1.0, idx: torch.Tensor | None = None):
    """``h[idx] @ h[virtual_idx]^T / tau`` ``[len(idx), C]``: the SF class scores (inference)."""
    check_float(h, "h", ndim=2)
    virtual_idx = _check_index(virtual_idx, "virtual_idx", h.shape[0], h.device)
    tau = check_positive_number(tau, "tau")
    hv = h.index_select(0, virtual_idx)
    rows = h if idx is None else h.index_select(0, _check_index(idx, "idx", h.shape[0], h.device))
    return (rows @ hv.t()) / tau
