"""PEPITA: forward learning with a top-down input modulation (ALGORITHMS.md 1.9).

Dellaferrera & Kreiman 2022; Srinivasan et al. 2024. Two forward passes per mini-batch and no
backward pass, no transposed weights, no activation derivatives:

1. clean pass ``h_0 = x, h_l = ReLU(h_{l-1} W_l^T)``, output ``h_L = h_{L-1} W_L^T`` and
   error ``e = softmax(h_L) - onehot(y)``;
2. modulated pass on ``x~ = x + e F^T`` with a fixed random ``F`` (``Din x C``, uniform in
   ``+-sqrt(6 / Din)`` times ``0.05``).

Updates (as gradients given to the optimiser, SGD momentum 0.9, lr 0.01):
hidden ``dW_l = (h_l - h~_l)^T h~_{l-1} / B``; output ``dW_L = e~^T h~_{L-1} / B`` with
``e~ = softmax(h~_L) - onehot(y)`` (``output_error="modulated"``, ALGORITHMS.md's form) or the
clean pass's ``e`` (``output_error="clean"``, the original paper's pseudo-code).

PEPITA uses no goodness, so it is not built on :class:`~ffkernels.nn.FFLinear`: the whole
network is one :class:`~ffkernels.nn.LocalLayer` (its parameters, its own ``torch.optim.SGD``,
gradients assigned in closed form).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..nn import LocalLayer
from .mlp_common import accuracy, make_generator, minibatches
from .mlp_ff import fit_loop, softmax_cross_entropy_grad
from .progress import Progress


class PEPITAMLP(LocalLayer):
    """A ReLU MLP trained by PEPITA.

    Args:
        in_features: input width ``Din``.
        num_classes: ``C`` (the output layer's width).
        hidden: width of every hidden layer (int) or a list of widths (then ``layers`` is ignored).
        layers: number of weight layers, the output layer included (``layers - 1`` hidden layers).
        lr, momentum, weight_decay: the SGD optimiser (paper: 0.01, 0.9, 0).
        feedback_scale: ``F``'s scale factor (0.05).
        output_error: ``"modulated"`` (``e~``) or ``"clean"`` (``e``) for the output update.
        bias: learn biases too (the paper has none); their update is the column sum of the
            same per-row signal as the weights.
        seed: seeds the weights, ``F``, and the shuffles.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int | Sequence[int] = 1024, layers: int = 2, *,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, feedback_scale: float = 0.05,
                 output_error: str = "modulated", bias: bool = False, seed: int = 0):
        def sgd(params):
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

        super().__init__(sgd)
        if output_error not in ("modulated", "clean"):
            raise ValueError(f"output_error must be 'modulated' or 'clean', got {output_error!r}")
        if isinstance(hidden, int):
            if layers < 1:
                raise ValueError(f"layers must be >= 1, got {layers}")
            widths = [int(hidden)] * (int(layers) - 1)
        else:
            widths = [int(w) for w in hidden]
        self.in_features, self.num_classes, self.output_error, self.seed = in_features, num_classes, output_error, seed
        dims = [in_features] + widths + [num_classes]
        gen = make_generator(seed)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList() if bias else None
        for din, dout in zip(dims[:-1], dims[1:]):
            bound = math.sqrt(6.0 / din)  # He uniform, as the PEPITA code initialises
            self.weights.append(nn.Parameter((torch.rand(dout, din, generator=gen) * 2 - 1) * bound))
            if bias:
                self.biases.append(nn.Parameter(torch.zeros(dout)))
        fb = math.sqrt(6.0 / in_features) * feedback_scale
        self.register_buffer("feedback", (torch.rand(in_features, num_classes, generator=gen) * 2 - 1) * fb)
        self.generator = gen
        self.history: list = []

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @torch.no_grad()
    def activities(self, x: torch.Tensor) -> list:
        """``[h_0 = x, h_1, ..., h_L]``: ReLU hidden layers, linear output (logits)."""
        out = [x]
        last = len(self.weights) - 1
        for i, w in enumerate(self.weights):
            z = out[-1] @ w.t()
            if self.biases is not None:
                z = z + self.biases[i]
            out.append(z if i == last else torch.relu_(z))
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]``."""
        return self.activities(x.to(self.device))[-1]

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, y: torch.Tensor):
        """PEPITA's two passes on a batch: ``(clean-pass loss, {param name: update})``."""
        b = max(x.shape[0], 1)
        clean = self.activities(x)
        loss, e = softmax_cross_entropy_grad(clean[-1], y)
        e = e * b  # softmax(h_L) - onehot(y), per row
        modulated = self.activities(x + e @ self.feedback.t())
        if self.output_error == "modulated":
            _, e_out = softmax_cross_entropy_grad(modulated[-1], y)
            e_out = e_out * b
        else:
            e_out = e
        grads = {}
        last = len(self.weights) - 1
        for i in range(len(self.weights)):
            delta = e_out if i == last else clean[i + 1] - modulated[i + 1]
            grads[f"weights.{i}"] = delta.t() @ modulated[i] / b
            if self.biases is not None:
                grads[f"biases.{i}"] = delta.sum(0) / b
        return loss, grads

    @torch.no_grad()
    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss, grads = self.gradients(xb, yb)
        self.apply_gradients(grads)
        return float(loss)

    @torch.no_grad()
    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = 64) -> float:
        losses = [self.train_batch(x[idx], y[idx])
                  for idx in minibatches(x.shape[0], batch_size, self.generator, x.device)]
        return sum(losses) / max(len(losses), 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(dim=1)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy (fraction)."""
        return accuracy(self.predict(x), y.to(self.device))

    def selection_score(self, x_val, y_val) -> float:
        return self.evaluate(x_val, y_val)

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 100, batch_size: int | None = 64,
            x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, val_every: int = 1,
            patience: int | None = 20, progress: Progress | None = None, label: str = "pepita", **checkpointing):
        """Train as :meth:`ffkernels.train.mlp_ff.FFMLP.fit` does (early stopping on validation)."""
        return fit_loop(self, x, y, epochs=epochs, batch_size=batch_size, x_val=x_val, y_val=y_val,
                        val_every=val_every, patience=patience, progress=progress, label=label, **checkpointing)


__all__ = ["PEPITAMLP"]
