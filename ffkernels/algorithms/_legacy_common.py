"""Helpers shared by the graph algorithms (SF, FF-LA, FF-VN, link prediction, BP).

Everything here is autograd-free and deterministic for a given seed:

- :func:`augment_with_virtual_nodes`: ForwardGNN's virtual-node graph (ALGORITHMS.md 1.4, 1.6);
- :func:`accuracy`: fraction of correct predictions;
- :func:`build_layer`: one forward-learning layer by model name (``gcn``, ``sage``, ``gat``, ``mlp``);
- :func:`make_optimizer_factory`: Adam with the run's learning rate and weight decay;
- :func:`seed_everything`, :func:`rng_state`, :func:`set_rng_state`: seeding and checkpointable RNG;
- :class:`PreparedInput`: a layer's ``prepare()`` output cached once per frozen input;
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from ..graph import Graph

GRAPH_MODELS = ("gcn", "sage", "gat")


@dataclass
class VirtualGraph:
    """A graph augmented with ``C`` virtual nodes (ids ``N .. N + C - 1``).

    Attributes:
        x: ``[N + C, F]`` features: the original rows, then the virtual nodes' fixed features.
        graph: the augmented :class:`ffkernels.Graph` (CSR by destination), built once.
        edge_index: ``[2, E + 2 L]`` int64: the original edges, then ``node -> virtual`` and
            ``virtual -> node`` for each of the ``L`` linked nodes.
        virtual_idx: ``[C]`` int64, ``arange(N, N + C)``: row ``c`` is class ``c``'s node.
        num_real: ``N``, the number of original nodes.
    """
    x: torch.Tensor
    graph: Graph
    edge_index: torch.Tensor
    virtual_idx: torch.Tensor
    num_real: int

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_virtual(self) -> int:
        return int(self.virtual_idx.numel())


def virtual_node_features(num_classes: int, num_features: int, seed: int = 0, device="cpu",
                          dtype=torch.float32) -> torch.Tensor:
    """Fixed N(0, 1) features ``[C, F]`` for the virtual nodes, drawn from their own generator.

    A dedicated ``torch.Generator`` keeps them independent of the global RNG (so parameter
    initialisation and these features do not shift each other when one changes).
    """
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    return torch.randn(num_classes, num_features, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)


def augment_with_virtual_nodes(x: torch.Tensor, edge_index: torch.Tensor, link_idx: torch.Tensor,
                               link_class: torch.Tensor, num_classes: int, *,
                               virtual_features: torch.Tensor | None = None, seed: int = 0) -> VirtualGraph:
    """Add one virtual node per class and link ``link_idx[k] <-> v_{link_class[k]}`` (both ways).

    ALGORITHMS.md 1.4 (SF: ``link_idx`` = training nodes, ``link_class`` = their labels) and 1.6
    (FF-VN: the negative graph passes wrong classes as ``link_class``).

    Args:
        x: ``[N, F]`` node features.
        edge_index: ``[2, E]`` original edges (source, destination).
        link_idx: ``[L]`` int node ids to connect to a virtual node.
        link_class: ``[L]`` int class of each linked node, in ``[0, num_classes)``.
        num_classes: ``C``, the number of virtual nodes.
        virtual_features: optional ``[C, F]`` features for the virtual nodes; default
            :func:`virtual_node_features` with ``seed``.
        seed: seed of the default virtual features.

    Returns:
        a :class:`VirtualGraph` (the graph is built once; reuse it for every layer).

    Raises:
        ValueError: shapes or class ids inconsistent.
    """
    n, f = x.shape
    link_idx = link_idx.to(torch.int64).reshape(-1)
    link_class = link_class.to(torch.int64).reshape(-1)
    if link_idx.numel() != link_class.numel():
        raise ValueError(f"link_idx ({link_idx.numel()}) and link_class ({link_class.numel()}) must have "
                         f"the same length")
    if link_class.numel() and (int(link_class.min()) < 0 or int(link_class.max()) >= num_classes):
        raise ValueError(f"link_class must be in [0, {num_classes})")
    if link_idx.numel() and (int(link_idx.min()) < 0 or int(link_idx.max()) >= n):
        raise ValueError(f"link_idx must be in [0, {n})")
    if virtual_features is None:
        virtual_features = virtual_node_features(num_classes, f, seed, x.device, x.dtype)
    elif tuple(virtual_features.shape) != (num_classes, f):
        raise ValueError(f"virtual_features must have shape [{num_classes}, {f}], got "
                         f"{tuple(virtual_features.shape)}")
    device = x.device
    virtual_idx = torch.arange(n, n + num_classes, device=device)
    v = virtual_idx[link_class.to(device)]
    li = link_idx.to(device)
    edge_index_aug = torch.cat([edge_index.to(device=device, dtype=torch.int64),
                                torch.stack([li, v]), torch.stack([v, li])], dim=1)
    x_aug = torch.cat([x, virtual_features.to(device=device, dtype=x.dtype)], dim=0)
    graph = Graph.from_edge_index(edge_index_aug, n + num_classes)
    return VirtualGraph(x_aug, graph, edge_index_aug, virtual_idx, n)


def accuracy(scores: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> float:
    """Fraction of rows whose prediction equals ``y`` (``0.0`` for no rows).

    Args:
        scores: ``[N, C]`` scores/logits/probabilities (argmax taken) or ``[N]`` predicted labels.
        y: ``[N]`` labels (or ``[len(idx)]`` when ``scores`` is already restricted).
        idx: optional row subset of both ``scores`` and ``y``.
    """
    pred = scores.argmax(dim=1) if scores.dim() == 2 else scores
    if idx is not None:
        if y.shape[0] == pred.shape[0]:
            y = y[idx]
        pred = pred[idx]
    if pred.numel() == 0:
        return 0.0
    return float((pred == y.to(pred.device)).float().mean())


def make_optimizer_factory(lr: float = 1e-3, weight_decay: float = 5e-4, fused: bool = True):
    """``params -> torch.optim.Adam(params, lr, weight_decay)`` (ForwardGNN's per-layer optimiser).

    ``fused=True`` uses torch's fused Adam kernel where the parameters' device supports it (the
    same update rule in one pass: about 10x cheaper than the default on CPU for a 2879 x 128
    weight); otherwise the default implementation.
    """
    def factory(params):
        params = list(params)
        if fused:
            try:
                return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
            except (RuntimeError, ValueError, TypeError):
                pass
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return factory


def build_layer(model: str, in_features: int, out_features: int, *, lr: float = 1e-3,
                weight_decay: float = 5e-4, normalize: str | None = "l2", heads: int = 4):
    """One forward-learning layer by model name: ``gcn`` (FFGCNConv), ``sage`` (FFSAGEConv),
    ``gat`` (FFGATConv, ``heads`` heads) or ``mlp`` (FFLinear), with its own Adam optimiser."""
    from .. import nn as ffnn
    opt = make_optimizer_factory(lr, weight_decay)
    if model == "gcn":
        return ffnn.FFGCNConv(in_features, out_features, normalize=normalize, optimizer=opt)
    if model == "sage":
        return ffnn.FFSAGEConv(in_features, out_features, normalize=normalize, optimizer=opt)
    if model == "gat":
        return ffnn.FFGATConv(in_features, out_features, heads=heads, normalize=normalize, optimizer=opt)
    if model == "mlp":
        return ffnn.FFLinear(in_features, out_features, normalize=normalize, optimizer=opt)
    raise ValueError(f"model must be one of ['gat', 'gcn', 'mlp', 'sage'], got {model!r}")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global RNG states (for checkpoints)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore states saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class PreparedInput:
    """A layer's ``prepare(x, graph)`` output computed once and reused while the layer trains.

    The layer's input is detached and frozen (it is the cached output of the layer below), so
    ``prepare`` (normalisation + aggregation) is a constant of every step. ``rows`` gathers the
    subset of prepared rows that carries a gradient (e.g. SF's training + virtual rows), once.
    Call :meth:`free` (or drop the object) when the layer is done, so memory does not grow with depth.
    """

    def __init__(self, layer, x: torch.Tensor, graph=None, rows: torch.Tensor | None = None):
        with torch.no_grad():
            self.full = layer.prepare(x, graph)
            self.rows = rows
            self.gathered = self.full.index_select(0, rows).contiguous() if rows is not None else None

    def free(self) -> None:
        self.full = None
        self.gathered = None


__all__ = ["VirtualGraph", "virtual_node_features", "augment_with_virtual_nodes", "accuracy",
           "make_optimizer_factory", "build_layer", "seed_everything", "rng_state", "set_rng_state",
           "PreparedInput", "GRAPH_MODELS"]
