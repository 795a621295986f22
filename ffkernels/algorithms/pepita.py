"""PEPITA: forward learning with an error-modulated input, ``pepita`` (docs/algorithms.md#pepita),
simultaneous schedule.

Dellaferrera & Kreiman 2022; Srinivasan et al. 2024. Two forward passes per mini-batch and no
backward pass (no transposed weights, no activation derivatives): a clean pass gives the
output error ``e = softmax(h_L) - onehot(y)``; a second pass runs on ``x + e F^T`` (``F`` a
fixed random feedback matrix); hidden layers learn from the difference of the two passes'
activities, the output layer from the (modulated or clean) output error. The whole network is
one :class:`~ffkernels.nn.LocalLayer` (its parameters, one SGD optimiser from
:func:`ffkernels.nn.optim.optimizer_factory`, gradients assigned in closed form).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..nn import LocalLayer
from ..nn.optim import optimizer_factory
from ..train.options import Option, choice, positive_float
from ..train.registry import Model, register
from .mlp_common import (BATCH_SIZE, MLP_PATIENCE, VAL_FRACTION, MiniBatchClassifier, MLPTrainer,
                         NetClassifierModel, make_generator)
from .mlp_ff import softmax_cross_entropy_grad


class PEPITAMLP(MiniBatchClassifier, LocalLayer):
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
        seed: seeds the weights, ``F`` and then (the same stream) :attr:`generator`, the shuffles
            (the trainer checkpoints its state).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int | Sequence[int] = 1024, layers: int = 2, *,
                 lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0, feedback_scale: float = 0.05,
                 output_error: str = "modulated", bias: bool = False, seed: int = 0):
        super().__init__(optimizer_factory("sgd", lr, weight_decay, momentum))
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


class PEPITAModel(NetClassifierModel, Model):
    """A :class:`PEPITAMLP` built from the run's options (``layers`` weight layers, the output
    layer included)."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        o = self.options
        self.net = PEPITAMLP(dims["num_features"], dims["num_classes"], hidden=o["hidden"], layers=o["layers"],
                             lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"],
                             feedback_scale=o["feedback_scale"], output_error=o["output_error"], bias=o["bias"],
                             seed=o["seed"])

    @property
    def layers(self):
        return self.net.weights

    @torch.no_grad()
    def embed(self, data) -> list:
        """Every weight layer's output ``h_1 .. h_L`` (the last: the logits)."""
        return self.net.activities(data.x.to(self.net.device))[1:]


class PEPITATrainer(MLPTrainer):
    def validate(self, stage):
        return self.net.evaluate(self.x_val, self.y_val)


register("pepita", task="mlp", models=("mlp",), schedule="simultaneous", model=PEPITAModel,
         defaults={"lr": 0.01, "weight_decay": 0.0, "patience": MLP_PATIENCE},
         options=(BATCH_SIZE,
                  Option("momentum", float, 0.9, "SGD momentum", minimum=0.0, maximum=1.0),
                  positive_float("feedback_scale", 0.05, "scale of the fixed feedback matrix F (times "
                                 "sqrt(6 / Din))"),
                  choice("output_error", "modulated", ("modulated", "clean"),
                         "the output layer learns from the modulated pass's error or the clean pass's"),
                  Option("bias", bool, False, "learn biases too (the paper has none)"),
                  VAL_FRACTION),
         description="PEPITA: two forward passes, error-modulated input, no backward pass")(PEPITATrainer)


__all__ = ["PEPITAMLP", "PEPITAModel", "PEPITATrainer"]
