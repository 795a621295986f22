"""ffkernels: fused kernels and autograd-free layers for forward (backprop-free) learning.

Quick start::

    import ffkernels
    graph = ffkernels.Graph.from_edge_index(edge_index, num_nodes)
    out = ffkernels.ops.aggregate(graph, x, reduce="gcn")
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import datasets, nn, ops, train  # noqa: E402
from .api import Trained, fit, load_model  # noqa: E402
from .backends import backends  # noqa: E402  (the function; the module stays importable by name)
from .graph import Graph, as_graph  # noqa: E402

__all__ = ["Graph", "as_graph", "backends", "datasets", "nn", "ops", "train", "fit", "load_model", "Trained",
           "__version__"]
