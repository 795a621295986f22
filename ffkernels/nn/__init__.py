"""Autograd-free layers: ``forward(x, graph)`` for inference, ``local_step`` to learn."""
from .base import LinearLocalLayer, LocalLayer, StepResult, default_optimizer
from .functional import normalize_rows
from .gat import FFGATConv
from .linear import FFGCNConv, FFLinear, FFSAGEConv

__all__ = ["LocalLayer", "LinearLocalLayer", "StepResult", "default_optimizer", "normalize_rows",
           "FFLinear", "FFGCNConv", "FFSAGEConv", "FFGATConv"]
