"""Goodness-based forward learning for MLPs: Hinton's FF, SymBa and Collaborative FF.

ALGORITHMS.md 1.1-1.3 and 1.8. Every class here trains a stack of :class:`ffkernels.nn.FFLinear`
layers with the *simultaneous* schedule (section 2): for each mini-batch every layer takes one
local step, through its own torch optimiser, on the detached normalised output of the layer
below. No autograd anywhere: the goodness losses go through the fused
:func:`ffkernels.ops.linear_goodness_step`, Collaborative FF through a closed-form objective
passed to :meth:`~ffkernels.nn.LinearLocalLayer.step_prepared`, and the optional softmax head
through its closed-form cross-entropy gradient.

The label lives in the first ``C`` input dimensions (one-hot, neutral ``1/C``; see
:func:`~ffkernels.train.mlp_common.with_label`); a negative row is the same input with a wrong
label, drawn uniformly or "hard" (from the model's own goodness scores, true class masked).

Inference:

- ``goodness`` mode: the ``C`` label passes are batched into one ``[C * B, C + F]`` pass; the
  score of class ``c`` is the summed goodness of layers ``2..L`` (layer 1 sees the label
  directly and is excluded; a one-layer model uses its only layer);
- ``softmax`` mode: one neutral-label pass and a linear softmax head on the normalised
  activities of layers ``2..L`` (same rule for one layer).
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import FFLinear, LocalLayer, normalize_rows
from ..nn.base import StepResult
from .checkpoint import load_checkpoint, optimizer_state_to, save_checkpoint
from .early_stopping import EarlyStopping
from .mlp_common import (accuracy, hard_wrong_labels, make_generator, minibatches, uniform_wrong_labels,
                         with_label)
from .progress import Progress

INFERENCE_MODES = ("goodness", "softmax")
NEGATIVE_KINDS = ("uniform", "hard")


# ---------------------------------------------------------------------------------------------
# Closed-form local objectives (each checked against autograd in tests/test_mlp_algorithms.py)

def softmax_cross_entropy_grad(logits: torch.Tensor, y: torch.Tensor):
    """Mean cross-entropy of ``logits`` ``[B, C]`` against labels ``y`` ``[B]`` and its gradient.

    Returns ``(loss, dloss/dlogits)`` with ``dloss/dlogits = (softmax(logits) - onehot(y)) / B``.
    """
    b = max(logits.shape[0], 1)
    logp = torch.log_softmax(logits, dim=1)
    loss = -logp.gather(1, y.view(-1, 1)).sum() / b
    grad = logp.exp()
    grad.scatter_add_(1, y.view(-1, 1), torch.full_like(grad[:, :1], -1.0))
    return loss, grad / b


def collaborative_ff_objective(h: torch.Tensor, positive: torch.Tensor, gamma: torch.Tensor, theta: float,
                               temperature: float = 1.0, goodness: str = "sum"):
    """Collaborative FF's local loss of one layer (ALGORITHMS.md 1.3), in closed form.

    The logit of row ``i`` is ``s_i = (G_i + gamma_i - theta) / T`` where ``G_i`` is this
    layer's goodness of ``h_i`` and ``gamma_i`` the other layers' goodness of the same row
    (a constant: no gradient flows into it). The loss is FF's:
    ``mean_pos softplus(-s) + mean_neg softplus(s)`` (each mean skipped when empty).

    Args:
        h: ``[N, D]`` post-ReLU output of the layer.
        positive: ``[N]`` bool.
        gamma: ``[N]`` the summed goodness of the other layers.
        theta: threshold on the *whole network's* goodness.

    Returns:
        ``(loss, dloss/dh)`` (the objective contract of :class:`ffkernels.nn.LinearLocalLayer`).
    """
    k = 1.0 if goodness == "sum" else 1.0 / max(h.shape[1], 1)
    g = k * (h * h).sum(dim=1)
    s = (g + gamma.to(g.dtype) - theta) / temperature
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    size = torch.where(positive, torch.full_like(s, max(n_pos, 1)), torch.full_like(s, max(n_neg, 1)))
    per_row = torch.where(positive, F.softplus(-s), F.softplus(s))
    loss = (per_row / size).sum()
    coef = (torch.sigmoid(s) - positive.to(s.dtype)) / (temperature * size)
    return loss, (coef * (2.0 * k)).unsqueeze(1) * h


class SoftmaxHead(LocalLayer):
    """A linear softmax classifier ``logits = feat W^T + b`` trained by closed-form cross-entropy.

    Used by FF's softmax-mode inference on the (detached) normalised activities of the FF
    layers. Own optimiser like every :class:`~ffkernels.nn.LocalLayer` (default Adam).
    """

    def __init__(self, in_features: int, num_classes: int, optimizer=None):
        super().__init__(optimizer)
        self.weight = nn.Parameter(torch.zeros(num_classes, in_features))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    @torch.no_grad()
    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, feat, self.weight.t())

    @torch.no_grad()
    def step(self, feat: torch.Tensor, y: torch.Tensor) -> float:
        """One cross-entropy step on ``feat`` ``[B, Dfeat]``, labels ``y`` ``[B]``; returns the loss."""
        loss, grad = softmax_cross_entropy_grad(self(feat), y)
        self.apply_gradients({"weight": grad.t() @ feat, "bias": grad.sum(0)})
        return float(loss)


# ---------------------------------------------------------------------------------------------

def _adam(lr: float, weight_decay: float):
    def factory(params):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return factory


class FFMLP(nn.Module):
    """Hinton's supervised Forward-Forward MLP (ALGORITHMS.md 1.1, 1.8), simultaneous schedule.

    Args:
        in_features: ``F``, the raw input width (the label adds ``num_classes`` dims in front).
        num_classes: ``C``.
        hidden: width of every layer (int) or a list of widths (then ``layers`` is ignored).
        layers: number of FF layers.
        loss: ``"ff"`` (BCE on ``G - theta``) or ``"symba"`` (paired, ``alpha``).
        theta: goodness threshold; default: each layer's width (Hinton's choice for rms
            normalisation with sum goodness) or ``1.0`` with ``goodness="mean"``.
        goodness: ``"sum"`` or ``"mean"`` of squares.
        normalize: every layer's input normalisation (``"rms"``: Hinton; ``"l2"``; ``None``).
        negatives: ``"uniform"`` or ``"hard"`` wrong labels (hard: resampled once per epoch
            from the model's goodness scores on the training rows, true class masked).
        hard_temperature: temperature of the hard-negative sampling softmax over goodness scores.
        label_scale: value of the one-hot label entry (neutral: ``label_scale / C``).
        temperature: FF logit temperature ``T``.
        alpha: SymBa's scale.
        lr, weight_decay: every layer's Adam (and the head's, without weight decay).
        head: train the softmax head (softmax-mode inference) alongside the layers.
        score_layers: which layers feed inference (goodness sums and head features):
            ``"skip_first"`` (layers 2..L, Hinton's rule; the only layer of a one-layer model)
            or ``"all"``.
        seed: seeds the parameter initialisation, the shuffles and the negatives.
    """

    default_loss = "ff"
    default_score_layers = "skip_first"

    def __init__(self, in_features: int, num_classes: int, hidden: int | Sequence[int] = 500, layers: int = 2, *,
                 loss: str | None = None, theta: float | None = None, goodness: str = "sum",
                 normalize: str | None = "rms", negatives: str = "uniform", hard_temperature: float = 1.0,
                 label_scale: float = 1.0, temperature: float = 1.0, alpha: float = 4.0, lr: float = 1e-3,
                 weight_decay: float = 0.0, head: bool = True, score_layers: str | None = None, seed: int = 0):
        super().__init__()
        loss = loss or self.default_loss
        score_layers = score_layers or self.default_score_layers
        if loss not in ("ff", "symba"):
            raise ValueError(f"loss must be 'ff' or 'symba', got {loss!r}")
        if negatives not in NEGATIVE_KINDS:
            raise ValueError(f"negatives must be one of {list(NEGATIVE_KINDS)}, got {negatives!r}")
        if goodness not in ("sum", "mean"):
            raise ValueError(f"goodness must be 'sum' or 'mean', got {goodness!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        widths = [int(hidden)] * int(layers) if isinstance(hidden, int) else [int(w) for w in hidden]
        if not widths or min(widths) < 1:
            raise ValueError(f"need at least one layer of positive width, got {widths}")
        self.in_features, self.num_classes, self.widths = in_features, num_classes, widths
        self.loss, self.goodness, self.normalize, self.negatives = loss, goodness, normalize, negatives
        self.hard_temperature, self.label_scale = hard_temperature, label_scale
        self.temperature, self.alpha, self.seed = temperature, alpha, seed
        if theta is None:
            self.thetas = [float(w) if goodness == "sum" else 1.0 for w in widths]
        else:
            self.thetas = [float(theta)] * len(widths)
        opt = _adam(lr, weight_decay)
        dims = [in_features + num_classes] + widths
        # Seeded initialisation without disturbing the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.layers = nn.ModuleList(FFLinear(dims[i], dims[i + 1], normalize=normalize, optimizer=opt)
                                        for i in range(len(widths)))
        # Layers whose goodness / activities feed inference: 2..L (or the only one), or all.
        if score_layers == "skip_first":
            self.score_layers = list(range(1, len(widths))) if len(widths) > 1 else [0]
        elif score_layers == "all":
            self.score_layers = list(range(len(widths)))
        else:
            raise ValueError(f"score_layers must be 'skip_first' or 'all', got {score_layers!r}")
        self.head = SoftmaxHead(sum(widths[i] for i in self.score_layers), num_classes,
                                optimizer=_adam(lr, 0.0)) if head else None
        self.generator = make_generator(seed)
        self.history: list = []

    # -- helpers
    @property
    def device(self) -> torch.device:
        return self.layers[0].weight.device

    def _layer_goodness(self, h: torch.Tensor) -> torch.Tensor:
        g = (h * h).sum(dim=1)
        return g if self.goodness == "sum" else g / h.shape[1]

    @torch.no_grad()
    def activities(self, xin: torch.Tensor) -> list:
        """Every layer's post-ReLU output for the (label-carrying) input ``xin``."""
        out, h = [], xin
        for layer in self.layers:
            h = layer(h)
            out.append(h)
        return out

    @torch.no_grad()
    def class_scores(self, x: torch.Tensor, chunk_rows: int = 16384) -> torch.Tensor:
        """Goodness-mode scores ``[N, C]``: summed goodness of the score layers for each label.

        The ``C`` label passes of a chunk run as one ``[C * B, C + F]`` batch.
        """
        x = x.to(self.device)
        n, c = x.shape[0], self.num_classes
        scores = torch.empty(n, c, dtype=x.dtype, device=x.device)
        step = max(chunk_rows // c, 1)
        labels_all = torch.arange(c, device=x.device)
        for start in range(0, n, step):
            xb = x[start:start + step]
            b = xb.shape[0]
            xin = with_label(xb.repeat(c, 1), labels_all.repeat_interleave(b), c, self.label_scale)
            total = torch.zeros(c * b, dtype=x.dtype, device=x.device)
            for i, h in enumerate(self.activities(xin)):
                if i in self.score_layers:
                    total += self._layer_goodness(h)
            scores[start:start + b] = total.view(c, b).t()
        return scores

    @torch.no_grad()
    def head_features(self, x: torch.Tensor) -> torch.Tensor:
        """The softmax head's input: normalised neutral-label activities of the score layers."""
        acts = self.activities(with_label(x.to(self.device), None, self.num_classes, self.label_scale))
        return torch.cat([normalize_rows(acts[i], self.normalize) for i in self.score_layers], dim=1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, mode: str = "goodness") -> torch.Tensor:
        """Predicted labels ``[N]`` by ``mode`` = ``"goodness"`` or ``"softmax"``."""
        if mode == "goodness":
            return self.class_scores(x).argmax(dim=1)
        if mode == "softmax":
            if self.head is None:
                raise ValueError("softmax inference needs head=True")
            return self.head(self.head_features(x)).argmax(dim=1)
        raise ValueError(f"mode must be one of {list(INFERENCE_MODES)}, got {mode!r}")

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, mode: str | None = None):
        """Accuracy (fraction) in ``mode``; with ``mode=None`` a dict over every available mode."""
        if mode is not None:
            return accuracy(self.predict(x, mode), y.to(self.device))
        modes = INFERENCE_MODES if self.head is not None else ("goodness",)
        return {m: accuracy(self.predict(x, m), y.to(self.device)) for m in modes}

    # -- training
    @torch.no_grad()
    def negative_labels(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Wrong labels for ``(x, y)``: uniform or hard (never the true label)."""
        if self.negatives == "hard":
            return hard_wrong_labels(self.class_scores(x), y, self.generator, self.hard_temperature)
        return uniform_wrong_labels(y, self.num_classes, self.generator)

    def _stacked_batch(self, xb, yb, yneg):
        """``[positives; negatives]`` rows, their flags and SymBa's (positive, negative) pairs."""
        b = xb.shape[0]
        xin = torch.cat([with_label(xb, yb, self.num_classes, self.label_scale),
                         with_label(xb, yneg, self.num_classes, self.label_scale)])
        positive = torch.zeros(2 * b, dtype=torch.bool, device=xb.device)
        positive[:b] = True
        idx = torch.arange(b, device=xb.device)
        pairs = torch.stack([idx, idx + b], dim=1) if self.loss == "symba" else None
        return xin, positive, pairs

    @torch.no_grad()
    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, yneg: torch.Tensor) -> float:
        """One simultaneous step: every layer one local update; returns the summed layer losses."""
        xin, positive, pairs = self._stacked_batch(xb, yb, yneg)
        total, h = 0.0, xin
        for layer, theta in zip(self.layers, self.thetas):
            res: StepResult = layer.step_prepared(layer.prepare(h), positive=positive, theta=theta,
                                                  goodness=self.goodness, loss=self.loss,
                                                  temperature=self.temperature, pairs=pairs, alpha=self.alpha)
            total += res.loss
            h = res.h  # the layer's output before its update: detached input of the next layer
        return total

    @torch.no_grad()
    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = 64) -> float:
        """One pass over ``(x, y)`` in seeded mini-batches; returns the mean batch loss."""
        yneg_all = self.negative_labels(x, y)
        losses = []
        for idx in minibatches(x.shape[0], batch_size, self.generator, x.device):
            xb, yb = x[idx], y[idx]
            losses.append(self.train_batch(xb, yb, yneg_all[idx]))
            if self.head is not None:
                self.head.step(self.head_features(xb), yb)
        return sum(losses) / max(len(losses), 1)

    #: Inference mode that model selection (early stopping) tracks; None: the better of the
    #: available modes at each validation.
    selection_mode: str | None = None

    def selection_score(self, x_val, y_val) -> float:
        """Model-selection score on validation data (see :attr:`selection_mode`)."""
        if self.selection_mode is not None:
            return self.evaluate(x_val, y_val, self.selection_mode)
        return max(self.evaluate(x_val, y_val).values())

    @torch.no_grad()
    def fit(self, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 100, batch_size: int | None = 64,
            x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None, val_every: int = 1,
            patience: int | None = 20, progress: Progress | None = None, label: str | None = None,
            **checkpointing):
        """Train for up to ``epochs`` epochs.

        With validation data, validate every ``val_every`` epochs, stop after ``patience``
        validations without improvement (None: never stop early) and restore the best state;
        without it, train exactly ``epochs`` epochs. ``self.history`` gets one dict per epoch.
        ``checkpointing``: ``save``, ``resume``, ``stop_after_epochs``, ``run`` (see
        :func:`fit_loop`).

        Returns ``self``.
        """
        return fit_loop(self, x, y, epochs=epochs, batch_size=batch_size, x_val=x_val, y_val=y_val,
                        val_every=val_every, patience=patience, progress=progress,
                        label=label or type(self).__name__, **checkpointing)


class SymBaMLP(FFMLP):
    """SymBa (ALGORITHMS.md 1.2): FF with each positive paired to its own negative.

    ``loss = mean softplus(-alpha (G_pos - G_neg))``, ``alpha = 4``, through the fused
    :func:`ffkernels.ops.linear_goodness_step` with ``pairs``. The positive row ``i`` of a
    mini-batch is paired with negative row ``B + i`` (same input, wrong label). ``theta`` is
    unused by the loss. Everything else (schedule, negatives, inference) is :class:`FFMLP`'s.
    """

    default_loss = "symba"


class CollaborativeFFMLP(FFMLP):
    """Collaborative Forward-Forward (ALGORITHMS.md 1.3): each layer's logit sees the whole network.

    Per mini-batch: one forward over all layers stores only the ``[2B, L]`` goodness table;
    then every layer takes its local step with logit ``G_k + gamma_k - theta`` where
    ``gamma_k = sum_{t != k} G_t`` is a constant from that forward (closed-form objective
    :func:`collaborative_ff_objective`). ``theta`` here is the threshold of the whole
    network's goodness: by default the sum of the per-layer thresholds (sum of widths).
    Goodness-mode inference scores what this loss trains, the whole network's goodness
    (``score_layers="all"`` by default; on digits, 4x128: 94% test against 75% with
    layers 2..L only).
    """

    default_score_layers = "all"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("loss", "ff")
        super().__init__(*args, **kwargs)
        self.network_theta = float(sum(self.thetas))

    @torch.no_grad()
    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor, yneg: torch.Tensor) -> float:
        xin, positive, _ = self._stacked_batch(xb, yb, yneg)
        table = torch.stack([self._layer_goodness(h) for h in self.activities(xin)], dim=1)  # [2B, L]
        network = table.sum(dim=1)
        total, h = 0.0, xin
        for k, layer in enumerate(self.layers):
            gamma = network - table[:, k]

            def objective(hk, gamma=gamma):
                return collaborative_ff_objective(hk, positive, gamma, self.network_theta, self.temperature,
                                                  self.goodness)

            res = layer.step_prepared(layer.prepare(h), objective=objective)
            total += res.loss
            h = res.h
        return total


def _local_layers(model) -> list:
    """Every module of ``model`` that owns an optimiser, in a fixed order."""
    return [m for m in model.modules() if isinstance(m, LocalLayer)]


def training_state(model, epoch: int, stopper: EarlyStopping) -> dict:
    """Everything needed to resume ``model``'s training exactly after ``epoch``."""
    return {"epoch": epoch, "model": model.state_dict(),
            "optimizers": [m.optimizer.state_dict() for m in _local_layers(model)],
            "generator": model.generator.get_state(), "stopper": stopper.state_dict(),
            "history": list(model.history)}


def load_training_state(model, state: dict, stopper: EarlyStopping) -> int:
    """Restore :func:`training_state` into ``model`` and ``stopper``; returns the saved epoch."""
    model.load_state_dict(state["model"])
    for m, opt in zip(_local_layers(model), state["optimizers"]):
        m.optimizer.load_state_dict(optimizer_state_to(opt, model.device))
    model.generator.set_state(state["generator"])
    stopper.load_state_dict(state["stopper"])
    model.history = list(state["history"])
    return int(state["epoch"])


@torch.no_grad()
def fit_loop(model, x, y, *, epochs, batch_size, x_val, y_val, val_every, patience, progress, label,
             save: str | None = None, resume: str | None = None, stop_after_epochs: int | None = None,
             run: dict | None = None):
    """The epoch loop shared by the MLP algorithms (``model.train_epoch``/``selection_score``).

    Validation-based early stopping as :class:`~ffkernels.train.EarlyStopping` does it (best
    state kept and restored); a fixed number of epochs when there is no validation data.

    Checkpoints: with ``save`` the full training state (parameters, optimiser states, the
    shuffle/negative generator, early-stopping state, epoch) is written at every validation
    and when ``stop_after_epochs`` interrupts the run (``model.stopped`` is then True and the
    best state is *not* restored); ``resume`` continues from such a file, so a resumed run
    ends with the same parameters as an uninterrupted one. ``run`` describes the run (stored,
    and checked on resume); its ``algo`` must match.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = model.device
    x, y = x.to(device), y.to(device)
    has_val = x_val is not None and y_val is not None and y_val.numel() > 0
    if has_val:
        x_val, y_val = x_val.to(device), y_val.to(device)
    progress = progress or Progress(enabled=False)
    stopper = EarlyStopping(patience if patience is not None else 10 ** 9)
    run = dict(run or {})
    algo = run.get("algo", label)
    start_epoch = 1
    if resume:
        ckpt = load_checkpoint(resume, algo, {k: v for k, v in run.items() if k != "epochs"})
        start_epoch = load_training_state(model, ckpt["training"], stopper) + 1

    def checkpoint(epoch):
        save_checkpoint(save, {"algo": algo, "run": run, "training": training_state(model, epoch, stopper)})

    start = time.perf_counter()
    epoch = start_epoch - 1
    model.stopped = False
    for epoch in range(start_epoch, epochs + 1):
        loss = model.train_epoch(x, y, batch_size)
        record = {"epoch": epoch, "loss": loss}
        stop = False
        validated = has_val and (epoch % val_every == 0 or epoch == epochs)
        if validated:
            score = model.selection_score(x_val, y_val)
            record["val"] = score
            stop = stopper.step(score, model, epoch)
        model.history.append(record)
        progress.update(label, epoch, epochs, loss=float(loss),
                        best_val=max(stopper.best_score, 0.0) if has_val else 0.0)
        if stop_after_epochs is not None and epoch >= stop_after_epochs and epoch < epochs and not stop:
            model.stopped = True
            if save:
                checkpoint(epoch)
            break
        if save and validated:
            checkpoint(epoch)
        if stop or not math.isfinite(loss):
            break
    if has_val and not model.stopped:
        stopper.restore(model)
    model.epochs_trained = epoch
    model.best_epoch = stopper.best_epoch if has_val else epoch
    model.fit_seconds = time.perf_counter() - start
    progress.close()
    return model


__all__ = ["FFMLP", "SymBaMLP", "CollaborativeFFMLP", "SoftmaxHead", "softmax_cross_entropy_grad",
           "collaborative_ff_objective", "fit_loop", "training_state", "load_training_state", "INFERENCE_MODES",
           "NEGATIVE_KINDS"]
