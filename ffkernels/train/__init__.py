"""The training engine: typed options, the algorithm registry, the one loop, checkpoints,
metrics and progress. The algorithms themselves live in :mod:`ffkernels.algorithms`; the
public entry points are :func:`ffkernels.fit` and :func:`ffkernels.load_model`."""
from .checkpoint import CheckpointError
from .loop import (EarlyStopping, NonFiniteLossError, RunResult, RunSettings, TrainingInterrupted, run)
from .metrics import PeakMemory, accuracy, roc_auc
from .options import COMMON, Option, OptionSet, resolve_options
from .progress import Progress
from .registry import ALGORITHMS, AlgorithmSpec, Model, Trainer, get_algorithm, load_algorithms, register

__all__ = ["run", "RunSettings", "RunResult", "EarlyStopping", "TrainingInterrupted", "NonFiniteLossError",
           "CheckpointError", "PeakMemory", "accuracy", "roc_auc", "COMMON", "Option", "OptionSet",
           "resolve_options", "Progress", "ALGORITHMS", "AlgorithmSpec", "Model", "Trainer", "get_algorithm",
           "load_algorithms", "register"]
