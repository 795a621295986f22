"""The Triton launchers as torch custom ops (``torch.ops.ffkernels_triton.*``).

Registered with ``torch.library.custom_op`` so they show by name in the profiler and
compose with ``torch.compile`` (each has a fake implementation giving output shapes).
"""
from __future__ import annotations

from typing import Optional

import torch

from . import aggregate as _agg
from . import dropout as _drop
from . import goodness as _good
from . import linear as _lin
from . import linear_jvp as _jvp
from . import sf as _sf

_NS = "ffkernels_triton"


@torch.library.custom_op(f"{_NS}::aggregate", mutates_args=())
def aggregate(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor, edge_weight: Optional[torch.Tensor],
              reduce: str, deg_inv_sqrt: Optional[torch.Tensor]) -> torch.Tensor:
    return _agg.aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt)


@aggregate.register_fake
def _(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt):
    return x.new_empty((rowptr.shape[0] - 1, x.shape[1]))


@torch.library.custom_op(f"{_NS}::aggregate_out", mutates_args=("out",))
def aggregate_out(rowptr: torch.Tensor, col: torch.Tensor, x: torch.Tensor, edge_weight: Optional[torch.Tensor],
                  reduce: str, deg_inv_sqrt: Optional[torch.Tensor], out: torch.Tensor) -> None:
    _agg.aggregate(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out=out)


@aggregate_out.register_fake
def _(rowptr, col, x, edge_weight, reduce, deg_inv_sqrt, out):
    return None


@torch.library.custom_op(f"{_NS}::ff_goodness_loss_grad", mutates_args=())
def ff_goodness_loss_grad(h: torch.Tensor, positive: torch.Tensor, k: float, theta: float,
                          temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss_terms [N] f32, goodness [N] f32, grad_z [N, D])``; loss = loss_terms.sum()."""
    return _good.ff_goodness_loss_grad(h, positive, k, theta, temperature)


@ff_goodness_loss_grad.register_fake
def _(h, positive, k, theta, temperature):
    n = h.shape[0]
    return (h.new_empty((n,), dtype=torch.float32), h.new_empty((n,), dtype=torch.float32), torch.empty_like(h))


@torch.library.custom_op(f"{_NS}::ff_goodness_loss_grad_", mutates_args=("h",))
def ff_goodness_loss_grad_(h: torch.Tensor, positive: torch.Tensor, k: float, theta: float,
                           temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """In place: grad_z overwrites ``h``; returns ``(loss_terms [N] f32, goodness [N] f32)``."""
    terms, g, _ = _good.ff_goodness_loss_grad(h, positive, k, theta, temperature, out=h)
    return terms, g


@ff_goodness_loss_grad_.register_fake
def _(h, positive, k, theta, temperature):
    n = h.shape[0]
    return h.new_empty((n,), dtype=torch.float32), h.new_empty((n,), dtype=torch.float32)


@torch.library.custom_op(f"{_NS}::scale_rows_", mutates_args=("h",))
def scale_rows_(h: torch.Tensor, coef: torch.Tensor, factor: float) -> None:
    """In place: ``h[i, :] *= factor * coef[i]``."""
    _good.scale_rows(h, coef, factor, h.dtype, out=h)


@scale_rows_.register_fake
def _(h, coef, factor):
    return None


@torch.library.custom_op(f"{_NS}::row_goodness", mutates_args=())
def row_goodness(h: torch.Tensor, k: float) -> torch.Tensor:
    return _good.row_goodness(h, k)


@row_goodness.register_fake
def _(h, k):
    return h.new_empty((h.shape[0],), dtype=torch.float32)


@torch.library.custom_op(f"{_NS}::scale_rows", mutates_args=())
def scale_rows(h: torch.Tensor, coef: torch.Tensor, factor: float, out_dtype: torch.dtype) -> torch.Tensor:
    return _good.scale_rows(h, coef, factor, out_dtype)


@scale_rows.register_fake
def _(h, coef, factor, out_dtype):
    return h.new_empty(h.shape, dtype=out_dtype)


@torch.library.custom_op(f"{_NS}::linear_relu_goodness_ff", mutates_args=())
def linear_relu_goodness_ff(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                            positive: torch.Tensor, k: float, theta: float, temperature: float
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Whole FF chain in the GEMM epilogue (needs ``Dout <= linear.MAX_FUSED_DOUT``):
    ``(h, goodness, loss_terms, grad_z)``."""
    h, g, terms, grad = _lin.linear_relu_goodness(x, weight, bias, positive, k, theta, temperature, True)
    return h, g, terms, grad


@linear_relu_goodness_ff.register_fake
def _(x, weight, bias, positive, k, theta, temperature):
    n, dout = x.shape[0], weight.shape[0]
    return (x.new_empty((n, dout)), x.new_empty((n,), dtype=torch.float32),
            x.new_empty((n,), dtype=torch.float32), x.new_empty((n, dout)))


@torch.library.custom_op(f"{_NS}::linear_relu_goodness_ff_out", mutates_args=("h_out", "grad_out"))
def linear_relu_goodness_ff_out(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                                positive: torch.Tensor, k: float, theta: float, temperature: float,
                                h_out: torch.Tensor, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`linear_relu_goodness_ff` into caller buffers: ``(goodness, loss_terms)``."""
    _, g, terms, _ = _lin.linear_relu_goodness(x, weight, bias, positive, k, theta, temperature, True,
                                               h_out=h_out, grad_out=grad_out)
    return g, terms


@linear_relu_goodness_ff_out.register_fake
def _(x, weight, bias, positive, k, theta, temperature, h_out, grad_out):
    n = x.shape[0]
    return x.new_empty((n,), dtype=torch.float32), x.new_empty((n,), dtype=torch.float32)


@torch.library.custom_op(f"{_NS}::linear_relu_sumsq_out", mutates_args=("h_out",))
def linear_relu_sumsq_out(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          block_n: int, h_out: torch.Tensor) -> torch.Tensor:
    """:func:`linear_relu_sumsq` writing h into ``h_out``: returns the partial sums of squares."""
    _, partial, _, _ = _lin.linear_relu_goodness(x, weight, bias, None, 1.0, 0.0, 1.0, False,
                                                 block_n=block_n or None, h_out=h_out)
    return partial


@linear_relu_sumsq_out.register_fake
def _(x, weight, bias, block_n, h_out):
    n, dout = x.shape[0], weight.shape[0]
    bn = block_n or max(16, min(_lin.triton.next_power_of_2(max(dout, 1)), _lin.MAX_FUSED_DOUT))
    return x.new_empty((n, -(-max(dout, 1) // bn)), dtype=torch.float32)


@torch.library.custom_op(f"{_NS}::scale_rows_out", mutates_args=("out",))
def scale_rows_out(h: torch.Tensor, coef: torch.Tensor, factor: float, out: torch.Tensor) -> None:
    """``out[i, :] = factor * coef[i] * h[i, :]`` (``out`` any float dtype)."""
    _good.scale_rows(h, coef, factor, out.dtype, out=out)


@scale_rows_out.register_fake
def _(h, coef, factor, out):
    return None


@torch.library.custom_op(f"{_NS}::linear_relu_sumsq", mutates_args=())
def linear_relu_sumsq(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                      block_n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(h, partial [N, num_n_tiles])``: ReLU(x W^T + b) and per-N-tile row sums of squares."""
    h, partial, _, _ = _lin.linear_relu_goodness(x, weight, bias, None, 1.0, 0.0, 1.0, False,
                                                 block_n=block_n or None)
    return h, partial


@linear_relu_sumsq.register_fake
def _(x, weight, bias, block_n):
    n, dout = x.shape[0], weight.shape[0]
    bn = block_n or max(16, min(_lin.triton.next_power_of_2(max(dout, 1)), _lin.MAX_FUSED_DOUT))
    return x.new_empty((n, dout)), x.new_empty((n, -(-max(dout, 1) // bn)), dtype=torch.float32)


@torch.library.custom_op(f"{_NS}::sf_loss_grad", mutates_args=())
def sf_loss_grad(h: torch.Tensor, train_idx: torch.Tensor, y_train: torch.Tensor, virtual_idx: torch.Tensor,
                 tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SF loss and gradient rows ``[n_train + C, D]`` in one pass (see :mod:`.sf`)."""
    return _sf.sf_loss_grad(h, train_idx, y_train, virtual_idx, tau)


@sf_loss_grad.register_fake
def _(h, train_idx, y_train, virtual_idx, tau):
    return (h.new_empty((), dtype=torch.float32),
            h.new_empty((train_idx.shape[0] + virtual_idx.shape[0], h.shape[1])))


@torch.library.custom_op(f"{_NS}::linear_jvp", mutates_args=())
def linear_jvp(x: torch.Tensor, dx: Optional[torch.Tensor], weight: torch.Tensor,
               tangent_weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
               tangent_bias: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The dual-number linear layer ``(y, dy)`` in one GEMM kernel (see :mod:`.linear_jvp`)."""
    return _jvp.linear_jvp(x, dx, weight, tangent_weight, bias, tangent_bias)


@linear_jvp.register_fake
def _(x, dx, weight, tangent_weight, bias, tangent_bias):
    shape = (x.shape[0], weight.shape[0])
    return x.new_empty(shape), x.new_empty(shape)


@torch.library.custom_op(f"{_NS}::dropout", mutates_args=())
def dropout(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """Counter-based inverted dropout in one pass (see :mod:`.dropout`)."""
    return _drop.dropout(x, p, seed)


@dropout.register_fake
def _(x, p, seed):
    return x.new_empty(x.shape)


@torch.library.custom_op(f"{_NS}::dropout_out", mutates_args=("out",))
def dropout_out(x: torch.Tensor, p: float, seed: int, out: torch.Tensor) -> None:
    _drop.dropout(x, p, seed, out=out)


@dropout_out.register_fake
def _(x, p, seed, out):
    return None


def _register_autograd():
    from ..backends import _autograd
    from ..backends.cpu_backend import LINEAR_JVP_NO_AUTOGRAD

    _autograd.register(_NS, lambda *args: aggregate(*args),
                       closed_form_ops=("ff_goodness_loss_grad", "linear_relu_goodness_ff", "sf_loss_grad"))
    _autograd.register_raising(f"{_NS}::linear_jvp", LINEAR_JVP_NO_AUTOGRAD)
    _autograd.register_dropout(_NS, lambda *args: dropout(*args))


_register_autograd()
