"""Pieces shared by the MLP forward-learning families (:mod:`.mlp_ff`: ff, ff-hard, symba, cff;
:mod:`.pepita`): the fit / validation rows, seeded mini-batches and negatives, the label
input, the options both families declare and their common :class:`MLPTrainer`
(docs/algorithms.md#ff).

Everything here is autograd-free and seeded through explicit ``torch.Generator`` objects, so
two runs with the same seed draw the same validation subset, batches and negatives.
"""
from __future__ import annotations

import torch

from ..train.metrics import accuracy
from ..train.options import Option, positive_int
from ..train.registry import Trainer

#: The validation subset carved out of the training split is drawn with this fixed seed, so
#: every run (whatever its own seed) selects models on the same rows.
VALIDATION_SEED = 20240601


def validation_split(train_idx: torch.Tensor, fraction: float = 0.1, seed: int = VALIDATION_SEED):
    """Split ``train_idx`` into ``(fit_idx, val_idx)`` with a fixed seeded permutation.

    Used for datasets without a validation split (``digits``): ``fraction`` of the training
    rows (at least one, and at least one left for fitting) become the validation subset.
    Both returned index tensors are sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    n = int(train_idx.numel())
    if n < 2:
        raise ValueError(f"need at least 2 training rows to carve a validation subset, got {n}")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen).to(train_idx.device)
    n_val = min(max(int(round(fraction * n)), 1), n - 1)
    val = train_idx[perm[:n_val]].sort()[0]
    fit = train_idx[perm[n_val:]].sort()[0]
    return fit, val


def make_generator(seed: int) -> torch.Generator:
    """A CPU generator for shuffles and negative sampling (independent of the global RNG)."""
    return torch.Generator().manual_seed(int(seed))


def minibatches(n: int, batch_size: int | None, generator: torch.Generator, device) -> list:
    """A seeded shuffle of ``range(n)`` cut into index batches (the last one may be short)."""
    perm = torch.randperm(n, generator=generator).to(device)
    if batch_size is None or batch_size >= n:
        return [perm]
    return list(torch.split(perm, int(batch_size)))


def uniform_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label ``y_i`` a label drawn uniformly from the ``C - 1`` other classes.

    ``(y + k) mod C`` with ``k`` uniform in ``[1, C - 1]``: never the true label (invariant 4).
    """
    if num_classes < 2:
        raise ValueError("negatives need at least 2 classes")
    shift = torch.randint(1, num_classes, (y.numel(),), generator=generator).to(y.device)
    return (y + shift) % num_classes


def hard_wrong_labels(scores: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                      temperature: float = 1.0) -> torch.Tensor:
    """Wrong labels sampled from the model's own class scores with the true class masked out.

    Args:
        scores: ``[N, C]`` class scores (higher = more likely; e.g. summed goodness).
        y: ``[N]`` true labels.
        temperature: the sampling distribution is ``softmax(scores / temperature)`` over the
            wrong classes. Goodness sums are large numbers, so the default samples nearly the
            model's most-confused wrong class, as Hinton's hard negatives do.

    Never returns the true label (invariant 4): its probability is exactly zero.
    """
    logits = scores.to(torch.float64) / temperature
    logits = logits.scatter(1, y.view(-1, 1), float("-inf"))
    probs = torch.softmax(logits, dim=1)
    # Guard rows where every wrong class underflowed (all -inf would give NaN): uniform then.
    bad = ~torch.isfinite(probs).all(dim=1) | (probs.sum(dim=1) <= 0)
    if bad.any():
        uniform = torch.ones_like(probs[bad]).scatter(1, y[bad].view(-1, 1), 0.0)
        probs[bad] = uniform / uniform.sum(dim=1, keepdim=True)
    return torch.multinomial(probs.cpu(), 1, generator=generator).view(-1).to(y.device)


def with_label(x: torch.Tensor, labels: torch.Tensor | None, num_classes: int, scale: float = 1.0) -> torch.Tensor:
    """``[label part | x]``: the label one-hot (times ``scale``) in the first ``C`` input dims.

    ``labels=None`` gives the neutral label ``scale / C`` in every label dim (softmax-mode
    inference). The label is prepended rather than written over pixels, so no feature is lost.
    """
    n = x.shape[0]
    if labels is None:
        lab = torch.full((n, num_classes), scale / num_classes, dtype=x.dtype, device=x.device)
    else:
        lab = torch.zeros(n, num_classes, dtype=x.dtype, device=x.device)
        lab.scatter_(1, labels.view(-1, 1), scale)
    return torch.cat([lab, x], dim=1)


def fit_val_rows(data, val_fraction: float = 0.1):
    """``(fit_idx, val_idx)`` of an MLP run on ``data``.

    A dataset with a validation split trains on all its training rows and selects on that
    split; one without (``digits``) holds out the fixed seeded ``val_fraction`` of its training
    rows (:func:`validation_split`, the same rows for every run and every call, so a model's
    ``evaluate`` scores exactly the rows its training selected on).
    """
    if data.val_idx.numel() > 0:
        return data.train_idx, data.val_idx
    return validation_split(data.train_idx, val_fraction)


#: Options of every MLP algorithm.
BATCH_SIZE = positive_int("batch_size", 64, "mini-batch rows (every layer takes one local step per batch)")
VAL_FRACTION = Option("val_fraction", float, 0.1, "fraction of the training rows held out (fixed seeded rows) "
                      "for model selection when the dataset has no validation split", minimum=0.0,
                      minimum_exclusive=True, maximum=0.9)
#: The MLP algorithms' own defaults of the common options (docs/algorithms.md#ff): on a
#: 144-row validation subset, the graph default of 100 validations would mean 200 epochs past the best.
MLP_PATIENCE = 25


class MiniBatchClassifier:
    """What the MLPs trained on closed-form (or estimated) gradients share, mixed into an
    ``nn.Module`` whose forward gives class scores: ``predict``/``evaluate``, and, for a class
    with ``gradients(xb, yb) -> (loss, grads)``, ``apply_gradients(grads)`` and a ``generator``,
    ``train_batch``/``train_epoch`` over seeded mini-batches."""

    @torch.no_grad()
    def train_batch(self, xb: torch.Tensor, yb: torch.Tensor) -> float:
        loss, grads = self.gradients(xb, yb)
        self.apply_gradients(grads)
        return float(loss)

    @torch.no_grad()
    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = 64) -> float:
        """One pass over ``(x, y)`` in seeded mini-batches; returns the mean batch loss."""
        losses = [self.train_batch(x[idx], y[idx])
                  for idx in minibatches(x.shape[0], batch_size, self.generator, x.device)]
        return sum(losses) / max(len(losses), 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(dim=1)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy (fraction)."""
        return accuracy(self.predict(x), y)


class NetClassifierModel:
    """Mixed into a :class:`~ffkernels.train.Model` whose ``self.net`` is a
    :class:`MiniBatchClassifier`: prediction and the run's three accuracies."""

    @torch.no_grad()
    def predict(self, data) -> torch.Tensor:
        return self.net.predict(data.x)

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        fit, val = fit_val_rows(data, self.options.get("val_fraction", 0.1))
        pred = self.predict(data)
        return {name: accuracy(pred, data.y, idx) for name, idx in
                (("val_accuracy", val), ("test_accuracy", data.test_idx), ("train_accuracy", fit))}


class MLPTrainer(Trainer):
    """The simultaneous schedule of an MLP family: one stage; an epoch is one pass of seeded
    mini-batches over the fit rows (``model.net.train_epoch``, every layer one local step per
    batch). The shuffle / negative generator is the network's own (seeded from ``seed``) and is
    checkpointed here."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.net = model.net
        self.fit_idx, self.val_idx = fit_val_rows(data, options["val_fraction"])
        self.x_fit, self.y_fit = data.x[self.fit_idx], data.y[self.fit_idx]
        self.x_val, self.y_val = data.x[self.val_idx], data.y[self.val_idx]

    def stage_module(self, stage):
        return self.net

    def train_epoch(self, stage, epoch):
        return self.net.train_epoch(self.x_fit, self.y_fit, self.options["batch_size"])

    def finish(self):
        return {"n_fit": int(self.fit_idx.numel()), "n_val": int(self.val_idx.numel())}

    def state_dict(self):
        return {"generator": self.net.generator.get_state()}

    def load_state_dict(self, state):
        self.net.generator.set_state(state["generator"])


__all__ = ["VALIDATION_SEED", "validation_split", "fit_val_rows", "make_generator", "minibatches",
           "uniform_wrong_labels", "hard_wrong_labels", "with_label", "MLPTrainer", "BATCH_SIZE", "VAL_FRACTION",
           "MLP_PATIENCE"]
