"""The greedy layer-wise schedule: train one layer to its own early stop, freeze it, move up.

ALGORITHMS.md section 2: each layer trains on the cached output of the frozen layer below,
so no pass over lower layers is ever repeated, in training or in evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .early_stopping import EarlyStopping
from .progress import Progress


@dataclass
class LayerReport:
    """How one layer's training went."""
    epochs: int
    best_val: float
    best_epoch: int
    last_loss: float


def train_layer(step: Callable[[int], float], validate: Callable[[], float], module, *, epochs: int,
                val_every: int, patience: int, progress: Progress | None = None, label: str = "layer",
                start_epoch: int = 1, stopper: EarlyStopping | None = None,
                on_epoch_end: Callable[[int, EarlyStopping], bool] | None = None) -> LayerReport:
    """Run ``step(epoch) -> loss`` for up to ``epochs`` epochs with early stopping.

    Every ``val_every`` epochs ``validate() -> score`` (higher is better) is called; after
    ``patience`` validations without improvement training stops and the best state of
    ``module`` (a ``state_dict``) is restored. ``on_epoch_end(epoch, stopper)`` may return
    True to interrupt (used for checkpoints); ``start_epoch``/``stopper`` resume a layer.
    """
    stopper = stopper or EarlyStopping(patience)
    progress = progress or Progress(enabled=False)
    loss = float("nan")
    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs + 1):
        loss = step(epoch)
        stop = False
        if epoch % val_every == 0:
            stop = stopper.step(validate(), module, epoch)
        progress.update(label, epoch, epochs, loss=loss, best_val=max(stopper.best_score, 0.0))
        if on_epoch_end is not None and on_epoch_end(epoch, stopper):
            return LayerReport(epoch, stopper.best_score, stopper.best_epoch, loss)
        if stop:
            break
    if stopper.best_state is None:  # fewer epochs than one validation interval
        stopper.step(validate(), module, epoch)
    stopper.restore(module)
    progress.close()
    return LayerReport(epoch, stopper.best_score, stopper.best_epoch, loss)
