"""ffkernels: fused kernels and autograd-free layers for forward (backprop-free) learning.

Quick start::

    import ffkernels
    graph = ffkernels.Graph.from_edge_index(edge_index, num_nodes)
    out = ffkernels.ops.aggregate(graph, x, reduce="gcn")
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import _extension  # noqa: E402

# Load the compiled extension now: that registers torch.ops.ffkernels.* (and, through the cpu
# backend, their fake and autograd implementations) at import, not at the first op call.
_extension.extension()

from . import backends, datasets, nn, ops, train  # noqa: E402,F401  (ffkernels.backends: the registry module)
from .api import Trained, fit, load_model  # noqa: E402
from .backends import available as available_backends  # noqa: E402
from .graph import Graph, as_graph  # noqa: E402

__all__ = ["Graph", "as_graph", "available_backends", "backends", "datasets", "nn", "ops", "train", "fit",
           "load_model", "Trained",
           "__version__"]
