"""The algorithm registry and the two contracts an algorithm implements to plug into the engine.

An algorithm family (a module of :mod:`ffkernels.algorithms`) provides

- a :class:`Model`: the trained thing a user keeps (its layers and whatever inference needs),
  built from the resolved options and the data's dimensions, with ``predict``, ``embed`` and
  ``evaluate`` on any :class:`~ffkernels.datasets.Dataset` of the same shape;
- a :class:`Trainer`: how the model learns on one dataset, cut into *stages* (one per layer
  for greedy schedules, a single stage for simultaneous ones) of epochs.

and registers them under one or more names with :func:`register`, declaring its task, models,
options (:mod:`ffkernels.train.options`) and schedule. The engine (:mod:`ffkernels.train.loop`)
owns everything around the epochs: validation cadence, early stopping and best-state restore,
progress, metrics, checkpoints and resume, the RNG and the thread count.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from torch import nn

from .options import OptionSet

TASKS = ("node", "link", "mlp")
SCHEDULES = ("greedy", "simultaneous")
#: The algorithm families, imported once by :func:`load_algorithms`.
FAMILY_MODULES = ("forwardgnn", "topdown", "ff_graph", "bp", "link", "mlp_ff", "pepita", "dfa",
                  "forward_gradient")


@dataclass(frozen=True)
class AlgorithmSpec:
    """A registered algorithm.

    Attributes:
        name: the ``--algo`` name.
        task: ``node`` (node classification on a graph), ``link`` (link prediction) or ``mlp``
            (classification of feature vectors; a graph, if any, is not used).
        models: the model names it trains (``gcn``, ``sage``, ``gat``, ``mlp``); the first is
            its default.
        description: one line for ``--help``.
        schedule: ``greedy`` (layer by layer) or ``simultaneous`` (every layer every epoch).
        options: its :class:`~ffkernels.train.options.OptionSet`.
        trainer: the :class:`Trainer` subclass; model: the :class:`Model` subclass.
        variant: fixed settings that distinguish this name from its family's other names
            (e.g. ``ff-hard``'s hard negatives), passed to both classes.
        edge_weights: whether its graph layers use a dataset's ``edge_weight``; a graph
            algorithm that does not refuses a weighted dataset rather than ignore the weights.
    """
    name: str
    task: str
    models: tuple
    description: str
    schedule: str
    options: OptionSet
    trainer: type
    model: type
    variant: dict = field(default_factory=dict)
    edge_weights: bool = False


ALGORITHMS: dict = {}


class Model(nn.Module):
    """The trained model of an algorithm (what :class:`ffkernels.Trained` wraps).

    ``__init__(options, dims, variant)``: ``options`` is the run's resolved option dict (it
    includes ``model``), ``dims`` ``{"num_features": F, "num_classes": C}``. All parameters are
    created here (the engine seeds the RNG first), so a saved model is restored by building
    the class again and loading its ``state_dict``; anything inference needs that training
    decides (e.g. an inference mode chosen by validation) is a buffer.
    """
    #: ``accuracy`` (node / mlp tasks) or ``auc`` (link prediction).
    metric = "accuracy"

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__()
        self.options, self.dims, self.variant = dict(options), dict(dims), dict(variant or {})

    def predict(self, data):  # pragma: no cover - contract
        """Predicted class per node ``[N]`` (link models: scores of pairs)."""
        raise NotImplementedError

    def embed(self, data) -> list:  # pragma: no cover - contract
        """Per-layer node embeddings ``[N, D_l]``."""
        raise NotImplementedError

    def evaluate(self, data) -> dict:  # pragma: no cover - contract
        """``{"val_<metric>": ..., "test_<metric>": ...}`` (fractions) on ``data``'s split."""
        raise NotImplementedError


class Trainer:
    """How an algorithm trains its :class:`Model` on one dataset (driven by the engine).

    The engine calls, for each stage ``s`` in ``range(num_stages)``: :meth:`begin_stage`, then
    per epoch :meth:`train_epoch` (and :meth:`validate` every ``val_every`` epochs, early
    stopping on :meth:`stage_module`'s state), the best state is restored, then
    :meth:`end_stage`. Everything a trainer computes from frozen stages (cached outputs,
    prepared inputs) must be a deterministic function of the parameters, because a resumed run
    recomputes it by calling ``begin_stage``/``end_stage`` of the finished stages again.
    State that cannot be recomputed (generators, top-down states) goes in :meth:`state_dict`.
    """

    def __init__(self, spec: AlgorithmSpec, options: dict, data, model: Model):
        if spec.task != "mlp" and not spec.edge_weights and getattr(data, "edge_weight", None) is not None:
            raise ValueError(f"{spec.name} does not use edge weights and the dataset "
                             f"{getattr(data, 'name', '?')!r} has edge_weight: use an algorithm that does "
                             f"({', '.join(n for n, s in ALGORITHMS.items() if s.edge_weights)}), or drop the "
                             f"weights (Dataset.edge_weight = None)")
        self.spec, self.options, self.data, self.model = spec, options, data, model

    num_stages = 1

    def stage_label(self, stage: int) -> str:
        if self.num_stages == 1:
            return self.spec.name
        return f"layer {stage + 1}/{self.num_stages}"

    def begin_stage(self, stage: int) -> None:
        pass

    def stage_module(self, stage: int) -> nn.Module:  # pragma: no cover - contract
        """The module whose parameters this stage trains (early stopping keeps its best state)."""
        raise NotImplementedError

    def stage_optimizers(self, stage: int) -> list:
        """The optimisers of the stage (checkpointed); default: every layer's own optimiser."""
        from ..nn import LocalLayer
        return [m.optimizer for m in self.stage_module(stage).modules() if isinstance(m, LocalLayer)]

    def train_epoch(self, stage: int, epoch: int) -> float:  # pragma: no cover - contract
        raise NotImplementedError

    def validate(self, stage: int) -> float:  # pragma: no cover - contract
        """The model-selection score (higher is better) of the current state."""
        raise NotImplementedError

    def end_stage(self, stage: int) -> None:
        pass

    def finish(self) -> dict:
        """Called once after the last stage; extra fields for the run report."""
        return {}

    def final_metrics(self) -> dict:
        """The run's final metrics; default: the model's own evaluation on the data (so
        ``Trained.evaluate(data) == metrics``). Distributed trainers evaluate collectively."""
        return self.model.evaluate(self.data)

    #: Whether this process reports progress and writes the log (distributed runs: rank 0).
    is_main_process = True

    def probe(self, stage: int):
        """The test metric of the current state (time-to-accuracy benchmarks; ``RunSettings.probe``),
        or None when the algorithm does not provide one."""
        return None

    def any_process(self, flag: bool) -> bool:
        """True when ``flag`` is True on any process of the run (Ctrl-C reaches the ranks at
        different moments; they must stop at the same epoch)."""
        return flag

    def before_checkpoint(self) -> None:
        """Called on every process right before a checkpoint is written (e.g. to gather
        parameters that live on other ranks into the model that rank 0 saves)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def register(name: str, *, task: str, models, description: str, schedule: str, model: type, options=(),
             defaults: dict | None = None, variant: dict | None = None, edge_weights: bool = False):
    """Class decorator on a :class:`Trainer`: register it as algorithm ``name``.

    Stack it to register one family under several names (``variant`` tells them apart).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")

    def wrap(trainer):
        ALGORITHMS[name] = AlgorithmSpec(name, task, tuple(models), description, schedule,
                                         OptionSet(name, tuple(options), dict(defaults or {}), tuple(models)), trainer, model,
                                         dict(variant or {}), edge_weights)
        return trainer
    return wrap


_loaded = False


def load_algorithms() -> dict:
    """Import every algorithm family once and return the registry ``{name: AlgorithmSpec}``."""
    global _loaded
    if not _loaded:
        for module in FAMILY_MODULES:
            importlib.import_module(f"ffkernels.algorithms.{module}")
        _loaded = True
    return ALGORITHMS


def get_algorithm(name: str) -> AlgorithmSpec:
    algos = load_algorithms()
    if name not in algos:
        raise ValueError(f"algo must be one of {sorted(algos)}, got {name!r}")
    return algos[name]


__all__ = ["AlgorithmSpec", "ALGORITHMS", "Model", "Trainer", "register", "load_algorithms", "get_algorithm",
           "TASKS", "SCHEDULES"]
