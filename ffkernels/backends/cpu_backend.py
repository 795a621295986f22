"""The ``cpu`` backend: C++/OpenMP kernels of the compiled extension ``ffkernels._C``.

Same kernel-level signatures and semantics as :mod:`ffkernels.backends.reference`. The ops
are registered as ``torch.ops.ffkernels.*`` by loading the extension (``import ffkernels`` does);
this module also registers their fake (meta) implementations so that they compose with
``torch.compile``, and their autograd formulas (:mod:`._autograd`: a real one for aggregate, a
raising one for the closed-form ops). ``*_`` / ``*_out`` ops write into caller buffers.
"""
from __future__ import annotations

import torch

from .._extension import extension, extension_error

NAME = "cpu"
SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
OPS = ("aggregate", "goodness_loss_grad", "linear_goodness_step", "sf_loss_grad", "linear_jvp", "dropout")


def availability():
    """None when the extension is loaded, else why the cpu backend cannot be used."""
    if extension() is None:
        return extension_error()
    return None


def supports(op, device, dtype):
    return op in OPS and torch.device(device).type == "cpu" and dtype in SUPPORTED_DTYPES


def _ops():
    if extension() is None:
        raise RuntimeError(extension_error())
    return torch.ops.ffkernels


def aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out=None):
    if out is not None:
        _ops().aggregate_out(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out)
        return out
    return _ops().aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt)


def goodness_loss_grad(h, positive, theta, goodness, loss, temperature, alpha, pairs, inplace=False):
    if inplace:  # grad_z overwrites h
        total, g = _ops().goodness_loss_grad_(h, positive, float(theta), goodness, loss, float(temperature),
                                              float(alpha), pairs)
        return total, g, h
    return _ops().goodness_loss_grad(h, positive, float(theta), goodness, loss, float(temperature),
                                     float(alpha), pairs)


def linear_goodness_step(x, weight, bias, positive, theta, goodness, loss, temperature, alpha, pairs,
                         h_out=None, grad_z_out=None):
    """``h_out`` / ``grad_z_out``: caller buffers for h and z / grad_z (both or neither)."""
    if h_out is not None:
        total, g, grad_w, grad_b = _ops().linear_goodness_step_out(
            x, weight, bias, positive, float(theta), goodness, loss, float(temperature), float(alpha), pairs,
            h_out, grad_z_out)
        return total, g, grad_w, (grad_b if bias is not None else None), h_out
    return _ops().linear_goodness_step(x, weight, bias, positive, float(theta), goodness, loss,
                                       float(temperature), float(alpha), pairs)


def sf_loss_grad(h, train_idx, y_train, virtual_idx, tau):
    return _ops().sf_loss_grad(h, train_idx, y_train, virtual_idx, float(tau))


def linear_jvp(x, dx, weight, tangent_weight, bias, tangent_bias):
    return _ops().linear_jvp(x, dx, weight, tangent_weight, bias, tangent_bias)


def dropout(x, p, seed, out=None):
    if out is not None:
        _ops().dropout_out(x, float(p), int(seed), out)
        return out
    return _ops().dropout(x, float(p), int(seed))


def _acc(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register_fakes():
    """Shape/dtype-only implementations for torch.compile / FakeTensor tracing."""
    if extension() is None or getattr(_register_fakes, "done", False):
        return
    _register_fakes.done = True
    register = getattr(torch.library, "register_fake", None) or torch.library.impl_abstract

    @register("ffkernels::aggregate")
    def _aggregate_fake(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt):
        return x.new_empty(x.shape)

    @register("ffkernels::aggregate_out")
    def _aggregate_out_fake(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out):
        return None

    @register("ffkernels::goodness_loss_grad")
    def _goodness_fake(h, positive, theta, goodness, loss, temperature, alpha, pairs):
        acc = _acc(h.dtype)
        return h.new_empty((), dtype=acc), h.new_empty((h.shape[0],), dtype=acc), h.new_empty(h.shape)

    @register("ffkernels::goodness_loss_grad_")
    def _goodness_inplace_fake(h, positive, theta, goodness, loss, temperature, alpha, pairs):
        acc = _acc(h.dtype)
        return h.new_empty((), dtype=acc), h.new_empty((h.shape[0],), dtype=acc)

    @register("ffkernels::linear_goodness_step")
    def _linear_fake(x, weight, bias, positive, theta, goodness, loss, temperature, alpha, pairs):
        acc = _acc(x.dtype)
        grad_bias = None if bias is None else bias.new_empty(bias.shape)
        return (x.new_empty((), dtype=acc), x.new_empty((x.shape[0],), dtype=acc), weight.new_empty(weight.shape),
                grad_bias, x.new_empty((x.shape[0], weight.shape[0])))

    @register("ffkernels::sf_loss_grad")
    def _sf_fake(h, train_idx, y_train, virtual_idx, tau):
        return (h.new_empty((), dtype=_acc(h.dtype)),
                h.new_empty((train_idx.shape[0] + virtual_idx.shape[0], h.shape[1])))

    @register("ffkernels::linear_jvp")
    def _linear_jvp_fake(x, dx, weight, tangent_weight, bias, tangent_bias):
        shape = (x.shape[0], weight.shape[0])
        return x.new_empty(shape), x.new_empty(shape)

    @register("ffkernels::dropout")
    def _dropout_fake(x, p, seed):
        return x.new_empty(x.shape)

    @register("ffkernels::dropout_out")
    def _dropout_out_fake(x, p, seed, out):
        return None

    @register("ffkernels::linear_goodness_step_out")
    def _linear_out_fake(x, weight, bias, positive, theta, goodness, loss, temperature, alpha, pairs, h_out,
                         grad_z_out):
        acc = _acc(x.dtype)
        grad_bias = weight.new_empty((0,)) if bias is None else bias.new_empty(bias.shape)
        return (x.new_empty((), dtype=acc), x.new_empty((x.shape[0],), dtype=acc), weight.new_empty(weight.shape),
                grad_bias)


def _register_autograd():
    """Real gradients for aggregate and dropout; a raising backward for the closed-form ops."""
    if extension() is None or getattr(_register_autograd, "done", False):
        return
    _register_autograd.done = True
    from . import _autograd

    _autograd.register("ffkernels", lambda *args: torch.ops.ffkernels.aggregate(*args),
                       closed_form_ops=CLOSED_FORM_OPS)
    _autograd.register_raising("ffkernels::linear_jvp", LINEAR_JVP_NO_AUTOGRAD)
    _autograd.register_dropout("ffkernels", lambda *args: torch.ops.ffkernels.dropout(*args))


CLOSED_FORM_OPS = ("goodness_loss_grad", "linear_goodness_step", "sf_loss_grad")
LINEAR_JVP_NO_AUTOGRAD = ("linear_jvp has no autograd formula: it is itself the forward-mode (dual-number) "
                          "derivative of a linear layer. Call it under torch.no_grad() (or on detached inputs); "
                          "for reverse mode use torch.nn.functional.linear")

try:
    _register_fakes()
except Exception:  # a fake registration must never make the backend unusable
    pass
_register_autograd()
