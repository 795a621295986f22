"""The MLP forward-learning family and its registered runners (``ffkernels train --task mlp``).

Classes (each with ``fit`` / ``predict`` / ``evaluate``):

- :class:`FFMLP`: Hinton's supervised Forward-Forward (ALGORITHMS.md 1.1, 1.8), goodness and
  softmax inference, uniform or hard negatives;
- :class:`SymBaMLP`: SymBa's paired loss (1.2);
- :class:`CollaborativeFFMLP`: Collaborative FF (1.3);
- :class:`PEPITAMLP`: PEPITA (1.9).

Registered algorithms (task ``mlp``, model ``mlp``): ``ff``, ``ff-hard``, ``symba``, ``cff``,
``pepita``.

How a runner reads :class:`~ffkernels.train.TrainConfig`
--------------------------------------------------------
The command line's defaults are the graph reference's (hidden 128, 4 layers, up to 1000
epochs, Adam lr 1e-3 with weight decay 5e-4, patience 100 validations every 2 epochs,
full batch). Runners honour ``layers``, ``hidden``, ``epochs`` (an upper bound), ``seed``,
``device``, ``val_every``, ``progress`` and any value that differs from those defaults;
where a field still holds the graph default, the MLP default below applies instead (the
command line's ``extra["default_lr"]`` / ``extra["default_weight_decay"]`` flags say exactly
whether ``--lr`` / ``--weight-decay`` were given).
``config.extra`` overrides everything (keys in brackets):

- model selection [``val_fraction``]: ``digits`` has no validation split, so a fixed seeded
  10% of the training rows (:data:`~ffkernels.train.mlp_common.VALIDATION_SEED`, the same
  rows for every run) is held out; the model trains on the other 90%, validates every
  ``val_every`` epochs, stops after [``patience``] validations without improvement (MLP
  default 25 when ``config.patience`` holds the graph default of 100: on a 144-row
  validation subset 100 validations would mean 200 epochs past the best) and restores the
  best state. A dataset with a validation split uses it and trains on all training rows.
- [``batch_size``]: ``config.batch_size``, or 64 when it is None (the graph default, full
  batch, learns far slower per epoch on an MLP).
- [``lr``], [``weight_decay``]: FF family: Adam 3e-3, no weight decay; PEPITA: SGD lr 0.01,
  momentum 0.9, no weight decay (ALGORITHMS.md 1.9).
- FF family: [``negatives``] ``uniform`` | ``hard``; [``inference``] ``best`` (default: the
  mode with the better validation accuracy; ties go to goodness; early stopping tracks the
  better of the two at each validation) | ``goodness`` | ``softmax`` (early stopping and the
  reported accuracy use that mode only); [``theta``] (or ``config.theta``), [``goodness``],
  [``normalize``], [``label_scale``], [``temperature``], [``alpha``], [``hard_temperature``], [``head``],
  [``score_layers``] ``skip_first`` (layers 2..L; FF and SymBa default) | ``all`` (CFF default).
- PEPITA: ``layers`` counts weight layers with the output layer (``layers - 1`` hidden);
  [``output_error``] ``modulated`` | ``clean``; [``feedback_scale``]; [``bias``].
- checkpoints: ``config.save`` (written at every validation and on interruption),
  ``config.resume``, ``config.stop_after_epochs`` (interrupts after that many epochs with
  ``stopped: True``): the full training state (parameters, optimiser states, the shuffle /
  negative generator, early stopping) is stored, so resuming ends with the same parameters
  as an uninterrupted run.
- [``threads``]: intra-op CPU threads while a runner trains (default 1, restored afterwards).
  The GEMMs here are tiny (a few hundred rows by 128 columns); a second thread buys nothing
  and, on the shared 2-core machine, the default two threads made ``ff`` 15x slower
  (323 s against 22 s for the same run, identical results).

Returned fields: ``val_accuracy``, ``test_accuracy`` (fractions), ``epochs_per_layer`` (every
layer shares the epoch count of the simultaneous schedule), and for the FF family
``inference`` plus ``{val,test}_accuracy_{goodness,softmax}``; ``total_epochs`` (epochs of
the simultaneous schedule, for seconds per epoch), ``best_epoch``,
``fit_seconds``, ``n_fit``, ``n_val``.

Measured on digits (fixed 80/20 split; 4 layers x 128, the command line's defaults; seeds
0, 1, 2; 2-core CPU, one thread; ``train_mlp(algo, seed=s)``), test accuracy:

- ``ff`` (best-by-validation mode, softmax each time): 97.8 / 96.9 / 98.1 %, 21-38 s;
  goodness mode when selected on it (``extra={"inference": "goodness"}``): 95.3 / 95.3 / 95.8 %;
- ``ff-hard``: 97.8 / 99.2 / 97.2 %; goodness-selected: 98.1 / 98.3 / 97.2 %;
- ``symba``: 99.2 / 96.7 / 96.4 %; ``cff``: 96.4 / 98.6 / 97.8 %;
- ``pepita``: 95.8 / 95.5 / 95.0 %, about 5 s (``output_error="clean"``: within 1 point).
"""
from __future__ import annotations

import time


from .mlp_common import validation_split
from .mlp_ff import (INFERENCE_MODES, CollaborativeFFMLP, FFMLP, SoftmaxHead, SymBaMLP, collaborative_ff_objective,
                     softmax_cross_entropy_grad)
from .mlp_pepita import PEPITAMLP
from .progress import Progress
from .registry import TrainConfig, register_algorithm

_GRAPH_DEFAULTS = TrainConfig()
MLP_BATCH_SIZE = 64
MLP_PATIENCE = 25
FF_LR = 3e-3
PEPITA_LR = 0.01


def _pick(config: TrainConfig, name: str, mlp_default):
    """The value of a config field for an MLP run.

    ``config.extra[name]`` if set; else, when the command line flagged whether the user gave
    the option (``extra["default_<name>"]``), the MLP default for an option not given and the
    config field otherwise; else the config field if it differs from the graph default, else
    ``mlp_default``.
    """
    if name in config.extra:
        return config.extra[name]
    value = getattr(config, name, None)
    flag = f"default_{name}"
    if flag in config.extra:
        return mlp_default if config.extra[flag] or value is None else value
    if value is None or value == getattr(_GRAPH_DEFAULTS, name, None):
        return mlp_default
    return value


def _splits(config: TrainConfig, data):
    """``(fit_idx, val_idx, test_idx)``: the data's validation split, or a seeded slice of train."""
    if data.val_idx.numel() > 0:
        return data.train_idx, data.val_idx, data.test_idx
    fit, val = validation_split(data.train_idx, float(config.extra.get("val_fraction", 0.1)))
    return fit, val, data.test_idx


def _fit_kwargs(config: TrainConfig, data, progress: Progress):
    fit, val, _ = _splits(config, data)
    batch = config.extra.get("batch_size", config.batch_size if config.batch_size is not None else MLP_BATCH_SIZE)
    patience = int(_pick(config, "patience", MLP_PATIENCE))
    run = {"algo": config.algo, "dataset": config.dataset, "model": config.model, "layers": config.layers,
           "hidden": config.extra.get("hidden", config.hidden), "split": config.split, "seed": config.seed,
           "batch_size": batch, "val_every": config.val_every, "patience": patience,
           "epochs": int(config.extra.get("epochs", config.epochs)),
           "extra": {k: v for k, v in sorted(config.extra.items()) if k != "threads"}}
    return dict(epochs=int(config.extra.get("epochs", config.epochs)), batch_size=batch,
                x_val=data.x[val], y_val=data.y[val], val_every=max(int(config.val_every), 1),
                patience=patience, progress=progress, save=config.save, resume=config.resume,
                stop_after_epochs=config.stop_after_epochs, run=run), fit, val


def _stopped(model, fit, val) -> dict:
    """What a run interrupted by ``stop_after_epochs`` returns (accuracies are NaN)."""
    return _report(model, fit, val, {"stopped": True, "val_accuracy": float("nan"), "test_accuracy": float("nan")})


def _report(model, fit, val, extra: dict) -> dict:
    out = {"epochs_per_layer": [int(model.epochs_trained)] * max(_num_layers(model), 1),
           "total_epochs": int(model.epochs_trained),  # simultaneous: one epoch trains every layer
           "best_epoch": int(model.best_epoch), "fit_seconds": float(model.fit_seconds),
           "n_fit": int(fit.numel()), "n_val": int(val.numel())}
    out.update(extra)
    return out


def _num_layers(model) -> int:
    return len(model.weights) if isinstance(model, PEPITAMLP) else len(model.layers)


def run_ff_family(config: TrainConfig, data, progress: Progress, cls=FFMLP, negatives: str = "uniform") -> dict:
    """Build, train and evaluate an :class:`FFMLP` (or subclass) from a run configuration."""
    data = data.to(config.device)
    fit_kw, fit, val = _fit_kwargs(config, data, progress)
    theta = config.extra.get("theta", config.theta)
    model = cls(data.num_features, data.num_classes, hidden=config.extra.get("hidden", config.hidden),
                layers=config.layers, theta=theta, goodness=config.extra.get("goodness", "sum"),
                normalize=config.extra.get("normalize", "rms"), negatives=config.extra.get("negatives", negatives),
                hard_temperature=float(config.extra.get("hard_temperature", 1.0)),
                label_scale=float(config.extra.get("label_scale", 1.0)),
                temperature=float(config.extra.get("temperature", 1.0)), alpha=float(config.extra.get("alpha", 4.0)),
                lr=float(_pick(config, "lr", FF_LR)), weight_decay=float(_pick(config, "weight_decay", 0.0)),
                head=bool(config.extra.get("head", True)), score_layers=config.extra.get("score_layers"),
                seed=config.seed).to(config.device)
    mode = config.extra.get("inference", "best")
    modes = INFERENCE_MODES if model.head is not None else ("goodness",)
    if mode != "best" and mode not in modes:
        raise ValueError(f"inference must be one of {['best', *modes]}, got {mode!r}")
    model.selection_mode = None if mode == "best" else mode  # early stopping tracks the requested mode
    model.fit(data.x[fit], data.y[fit], label=config.algo, **fit_kw)
    if model.stopped:
        return _stopped(model, fit, val)
    val_acc = model.evaluate(data.x[val], data.y[val])
    test_acc = model.evaluate(data.x[data.test_idx], data.y[data.test_idx])
    if mode == "best":
        mode = max(val_acc, key=lambda m: (val_acc[m], m == "goodness"))
    extra = {"stopped": False, "val_accuracy": val_acc[mode], "test_accuracy": test_acc[mode], "inference": mode,
             "negatives": model.negatives}
    for m in val_acc:
        extra[f"val_accuracy_{m}"] = val_acc[m]
        extra[f"test_accuracy_{m}"] = test_acc[m]
    return _report(model, fit, val, extra)


@register_algorithm("ff", task="mlp", models=("mlp",),
                    description="Hinton's Forward-Forward MLP (label in the input, goodness + softmax inference)")
def run_ff(config: TrainConfig, data, progress: Progress) -> dict:
    return run_ff_family(config, data, progress, FFMLP, "uniform")


@register_algorithm("ff-hard", task="mlp", models=("mlp",),
                    description="Hinton's Forward-Forward MLP with hard negatives (wrong labels the model confuses)")
def run_ff_hard(config: TrainConfig, data, progress: Progress) -> dict:
    return run_ff_family(config, data, progress, FFMLP, "hard")


@register_algorithm("symba", task="mlp", models=("mlp",),
                    description="SymBa: Forward-Forward with the paired symmetric loss (alpha 4)")
def run_symba(config: TrainConfig, data, progress: Progress) -> dict:
    return run_ff_family(config, data, progress, SymBaMLP, "uniform")


@register_algorithm("cff", task="mlp", models=("mlp",),
                    description="Collaborative Forward-Forward: each layer's logit adds the other layers' goodness")
def run_cff(config: TrainConfig, data, progress: Progress) -> dict:
    return run_ff_family(config, data, progress, CollaborativeFFMLP, "uniform")


@register_algorithm("pepita", task="mlp", models=("mlp",),
                    description="PEPITA: two forward passes, error-modulated input, no backward pass")
def run_pepita(config: TrainConfig, data, progress: Progress) -> dict:
    data = data.to(config.device)
    fit_kw, fit, val = _fit_kwargs(config, data, progress)
    model = PEPITAMLP(data.num_features, data.num_classes, hidden=config.extra.get("hidden", config.hidden),
                      layers=config.layers, lr=float(_pick(config, "lr", PEPITA_LR)),
                      momentum=float(config.extra.get("momentum", 0.9)),
                      weight_decay=float(_pick(config, "weight_decay", 0.0)),
                      feedback_scale=float(config.extra.get("feedback_scale", 0.05)),
                      output_error=config.extra.get("output_error", "modulated"),
                      bias=bool(config.extra.get("bias", False)), seed=config.seed).to(config.device)
    model.fit(data.x[fit], data.y[fit], label=config.algo, **fit_kw)
    if model.stopped:
        return _stopped(model, fit, val)
    extra = {"stopped": False, "val_accuracy": model.evaluate(data.x[val], data.y[val]),
             "test_accuracy": model.evaluate(data.x[data.test_idx], data.y[data.test_idx])}
    return _report(model, fit, val, extra)


def train_mlp(algo: str = "ff", dataset: str = "digits", **config_fields) -> dict:
    """Run a registered MLP algorithm from Python: ``train_mlp("ff", layers=2, hidden=500)``.

    ``config_fields`` are :class:`TrainConfig` fields (``extra=`` for the algorithm options).
    Adds ``train_seconds`` to the returned dict.
    """
    from ..datasets import load
    from .registry import get_algorithm

    config = TrainConfig(dataset=dataset, model="mlp", algo=algo, task="mlp", **config_fields)
    spec = get_algorithm(algo)
    data = load(dataset, device=config.device)
    start = time.perf_counter()
    out = spec.runner(config, data, Progress(enabled=config.progress))
    out["train_seconds"] = time.perf_counter() - start
    return out


__all__ = ["FFMLP", "SymBaMLP", "CollaborativeFFMLP", "PEPITAMLP", "SoftmaxHead", "softmax_cross_entropy_grad",
           "collaborative_ff_objective", "run_ff_family", "train_mlp", "INFERENCE_MODES"]
