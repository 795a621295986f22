"""Registry of training algorithms: what ``ffkernels train --algo NAME`` can run.

Each algorithm module registers a *runner* with :func:`register_algorithm`. A runner is
``runner(config: TrainConfig, data: Dataset, progress: Progress) -> dict`` and returns at least
``val_accuracy`` and ``test_accuracy`` (fractions; ``val_auc``/``test_auc`` for link
prediction) and ``epochs_per_layer`` (list of ints); it may add more fields. The command line
adds timing, memory, device and backend fields around it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch


@dataclass
class TrainConfig:
    """Everything a training run is configured by (the CLI flags map onto it 1:1)."""
    dataset: str = "cora_ml"
    model: str = "gcn"                # gcn | sage | gat | mlp
    algo: str = "sf"
    task: str = "node"                # node | link | mlp
    layers: int = 4
    hidden: int = 128
    split: int = 0
    seed: int = 0
    device: str = "cpu"
    epochs: int = 1000                # maximum epochs (per layer for greedy schedules)
    val_every: int = 2                # validate every this many epochs
    patience: int = 100               # in validations, as the ForwardGNN reference
    lr: float = 1e-3
    weight_decay: float = 5e-4
    theta: float | None = None        # goodness threshold; None = the algorithm's default
    batch_size: int | None = None     # MLP algorithms: mini-batch size (None = full batch)
    save: str | None = None           # checkpoint path written during training
    resume: str | None = None         # checkpoint path to resume from
    stop_after_epochs: int | None = None  # stop (and checkpoint) after this many epochs in total: tests resume
    progress: bool = True
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AlgorithmSpec:
    name: str
    task: str
    models: tuple
    runner: Callable
    description: str


ALGORITHMS: dict = {}

# Modules that register algorithms when imported (one module per algorithm family).
_ALGORITHM_MODULES = ("sf", "bp", "ff_graph", "link", "mlp")
_loaded = False


@contextlib.contextmanager
def intra_op_threads(config: TrainConfig):
    """Run with ``config.extra["threads"]`` intra-op CPU threads (default 1), then restore.

    One thread is the default because the per-step work of these trainers is small (GEMMs and
    sparse ops of a few milliseconds): on a 2-core machine where another process holds a core,
    two OpenMP threads made the Cora-ML SF run 15x slower (146 s vs 9.8 s, same result).
    ``threads=None`` keeps torch's setting; large graphs want ``--threads`` = the core count.
    No effect for CUDA runs.
    """
    threads = config.extra.get("threads", 1)
    if threads is None or torch.device(config.device).type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def register_algorithm(name: str, *, task: str, models, description: str):
    """Decorator: register ``runner`` under ``name`` for ``task`` (node | link | mlp).

    The registered runner runs inside :func:`intra_op_threads`; the decorated function itself
    is returned unchanged.
    """
    def wrap(runner):
        @functools.wraps(runner)
        def threaded(config: TrainConfig, data, progress):
            with intra_op_threads(config):
                return runner(config, data, progress)
        ALGORITHMS[name] = AlgorithmSpec(name, task, tuple(models), threaded, description)
        return runner
    return wrap


def load_algorithms() -> dict:
    """Import every algorithm module once and return the registry."""
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in _ALGORITHM_MODULES:
            try:
                importlib.import_module(f"ffkernels.train.{mod}")
            except ModuleNotFoundError as exc:  # a family not written yet
                if exc.name != f"ffkernels.train.{mod}":
                    raise
    return ALGORITHMS


def get_algorithm(name: str) -> AlgorithmSpec:
    algos = load_algorithms()
    if name not in algos:
        raise ValueError(f"algo must be one of {sorted(algos)}, got {name!r}")
    return algos[name]
