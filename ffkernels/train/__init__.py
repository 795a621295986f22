"""Training: algorithm families (one module each), schedules, early stopping, checkpoints."""
from .early_stopping import EarlyStopping
from .progress import Progress
from .registry import ALGORITHMS, TrainConfig, get_algorithm, load_algorithms, register_algorithm

__all__ = ["EarlyStopping", "Progress", "TrainConfig", "ALGORITHMS", "get_algorithm", "load_algorithms",
           "register_algorithm"]
