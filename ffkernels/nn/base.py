"""The base of every autograd-free layer: parameters, its own optimiser, closed-form updates.

A forward-learning layer never builds an autograd graph. Its ``local_step`` computes the local
loss and the parameter gradients in closed form (through ``ffkernels.ops``), assigns them to
``param.grad`` and calls the layer's own ``torch.optim`` optimiser, so Adam, SGD, weight decay
and schedulers behave exactly as users know them.

Objective contract (used by every algorithm): an *objective* is a callable
``objective(h) -> (loss, grad_h)`` taking the layer's post-ReLU output ``h`` ``[N, D]`` and
returning a 0-d loss tensor and ``dloss/dh`` ``[N, D]``; the layer applies the ReLU mask.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .. import ops
from .._validation import check_float, check_positive_int
from .functional import check_normalize
from .optim import in_layout_of, match_state_layout

OptimizerFactory = Callable[[list], torch.optim.Optimizer]


def default_optimizer(params) -> torch.optim.Optimizer:
    """ForwardGNN's per-layer optimiser: Adam, lr 1e-3, weight decay 5e-4 (float32 master
    copies for 16-bit parameters: :mod:`ffkernels.nn.optim`)."""
    from .optim import optimizer_factory
    return optimizer_factory("adam", 1e-3, 5e-4, fused=False)(params)


@dataclass
class StepResult:
    """What a local step returns: the loss (float), per-row goodness (or None) and ``h``."""
    loss: float
    h: torch.Tensor
    goodness: torch.Tensor | None = None


class LocalLayer(nn.Module):
    """A ``torch.nn.Module`` that owns an optimiser and learns from a local objective.

    Args:
        optimizer: a callable ``params -> torch.optim.Optimizer``; default
            :func:`default_optimizer`. The optimiser is created lazily at the first step, so
            ``.to(device)`` before training works as usual.
    """

    def __init__(self, optimizer: OptimizerFactory | None = None):
        super().__init__()
        self._optimizer_factory = optimizer or default_optimizer
        self._optimizer = None

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            self._optimizer = self._optimizer_factory(list(self.parameters()))
        return self._optimizer

    def set_optimizer(self, factory: OptimizerFactory) -> None:
        """Replace the optimiser (its state is dropped)."""
        self._optimizer_factory = factory
        self._optimizer = None

    @torch.no_grad()
    def apply_gradients(self, grads: dict) -> None:
        """Assign ``{parameter_name: gradient}`` and take one optimiser step."""
        params = dict(self.named_parameters())
        optimizer = self.optimizer
        for name, grad in grads.items():
            if grad is not None:
                p = params[name]
                p.grad = in_layout_of(p, grad.to(p.dtype))  # (fused Adam needs one layout)
                match_state_layout(p, optimizer)
        optimizer.step()
        for p in params.values():
            p.grad = None


class LinearLocalLayer(LocalLayer):
    """A layer whose output is ``ReLU(prepare(x, graph) @ weight.T + bias)``.

    Every layer but GAT has this shape: ``prepare`` is the parameter-free part (row
    normalisation, then aggregation for graph layers). Since a layer's input is detached,
    ``prepare``'s output is a constant of the step: trainers compute it once per frozen
    input and call :meth:`step_prepared` with it, so no sparse op runs in the update.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, normalize: str | None = "l2",
                 optimizer: OptimizerFactory | None = None, weight_in_features: int | None = None):
        super().__init__(optimizer)
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        check_normalize(normalize)
        self.in_features = in_features
        self.out_features = out_features
        self.normalize = normalize
        fan_in = weight_in_features or in_features
        self.weight = nn.Parameter(torch.empty(out_features, fan_in))
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.Linear's initialisation, so results compare with PyG / nn.Linear models.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight.shape[1]) if self.weight.shape[1] > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    # -- to be provided by subclasses
    def prepare(self, x: torch.Tensor, graph=None, edge_weight=None) -> torch.Tensor:
        """The parameter-free input transform ``[N, Din] -> [N, weight.shape[1]]``; ``edge_weight``
        (``[E]``, the graph's ``edge_index`` order) overrides the graph's own weights."""
        raise NotImplementedError

    def _prepare(self, x, graph, edge_weight):
        # subclasses written before edge weights take prepare(x, graph)
        return self.prepare(x, graph) if edge_weight is None else self.prepare(x, graph, edge_weight=edge_weight)

    def _check_input(self, x) -> torch.Tensor:
        check_float(x, "x", ndim=2)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} columns, got shape {tuple(x.shape)}")
        return x

    # -- inference
    @torch.no_grad()
    def transform(self, prepared: torch.Tensor) -> torch.Tensor:
        """``ReLU(prepared @ weight.T + bias)``."""
        z = torch.addmm(self.bias, prepared, self.weight.t()) if self.bias is not None else prepared @ self.weight.t()
        return torch.relu_(z)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, graph=None, edge_weight=None) -> torch.Tensor:
        return self.transform(self._prepare(x, graph, edge_weight))

    # -- learning
    @torch.no_grad()
    def step_prepared(self, prepared: torch.Tensor, objective: Callable | None = None, *,
                      positive: torch.Tensor | None = None, theta: float = 2.0, goodness: str = "sum",
                      loss: str = "ff", temperature: float = 1.0, pairs: torch.Tensor | None = None,
                      alpha: float = 4.0, rows: torch.Tensor | None = None) -> StepResult:
        """One local update from an already prepared input.

        Either ``objective(h) -> (loss, grad_h)`` (any local loss), or the built-in goodness
        losses via ``positive`` (and ``pairs`` for SymBa), fused in
        :func:`ffkernels.ops.linear_goodness_step`.

        ``rows`` (optional ``[R]`` int64): only these rows carry a gradient (e.g. SF's training
        and virtual rows); the weight gradient is then a row-gathered GEMM over R rows.
        """
        if objective is None:
            if positive is None:
                raise ValueError("local_step needs either an objective or positive flags")
            out = ops.linear_goodness_step(prepared, self.weight, self.bias, positive, theta=theta,
                                           goodness=goodness, loss=loss, temperature=temperature,
                                           pairs=pairs, alpha=alpha)
            total, g, grad_w, grad_b, h = out
            self.apply_gradients({"weight": grad_w, "bias": grad_b})
            return StepResult(float(total), h, g)
        h = self.transform(prepared)
        total, grad_h = objective(h)
        if rows is not None:
            grad_z = grad_h.index_select(0, rows) * (h.index_select(0, rows) > 0)
            inputs = prepared.index_select(0, rows)
        else:
            grad_z = grad_h * (h > 0)
            inputs = prepared
        grads = {"weight": grad_z.t() @ inputs,
                 "bias": grad_z.sum(0) if self.bias is not None else None}
        self.apply_gradients(grads)
        return StepResult(float(total), h)

    def local_step(self, x: torch.Tensor, graph=None, objective: Callable | None = None, *,
                   edge_weight=None, **kwargs) -> StepResult:
        """Prepare ``x`` (normalise, aggregate with the graph's or the given ``edge_weight``) and
        take one local update; see :meth:`step_prepared`."""
        return self.step_prepared(self._prepare(self._check_input(x), graph, edge_weight), objective, **kwargs)
