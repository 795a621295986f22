"""Validation of user data, shared by every loader (tensors, PyG, .npz, OGB directories).

Every check raises ``ValueError("<where>: <field>: <problem>")``, where ``<where>`` is the
file (or ``tensors`` / ``PyG Data``) and ``<field>`` the key, attribute or column that is
wrong, so a user can find the bad input without reading our code. A trainer never sees data
that failed here: bad labels or indices would otherwise surface as an index error deep in a
kernel, or worse as a silently wrong accuracy.
"""
from __future__ import annotations

import numpy as np
import torch

from ..graph import Graph

SPLIT_KINDS = ("train", "val", "test")


class Labels(dict):
    """Field -> the ``"<where>: <field name>"`` prefix of its error messages.

    ``fields`` renames a field after its key in the source (``train_idx_2``, ``train_mask[:, 2]``).
    """

    def __init__(self, where: str, **fields):
        super().__init__()
        self.names = {kind: fields.get(kind, kind + "_idx" if kind in SPLIT_KINDS else kind)
                      for kind in ("x", "y", "edge_index", "edge_weight", "num_classes") + SPLIT_KINDS}
        for kind, name in self.names.items():
            self[kind] = f"{where}: {name}"


def fail(label: str, problem: str):
    raise ValueError(f"{label}: {problem}")


def as_tensor(value, label: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biufc":  # object, string, datetime arrays
            fail(label, f"must be a numeric array, got numpy dtype {value.dtype}")
        if value.dtype.kind == "u" and value.dtype.itemsize > 1:  # torch lacks most ops on uint16..64
            value = value.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, (list, tuple)):  # plain Python index lists, e.g. train_idx=[0, 1, 2]
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as err:
            fail(label, f"could not be read as a tensor ({err})")
    if not isinstance(value, torch.Tensor):
        fail(label, f"must be a torch.Tensor or numpy array, got {type(value).__name__}")
    if value.layout != torch.strided:  # torch sparse features (as some PyG transforms produce)
        value = value.to_dense()
    return value


def _is_integer(t: torch.Tensor) -> bool:
    return not (t.dtype == torch.bool or t.is_floating_point() or t.is_complex())


def check_features(x, label: str) -> torch.Tensor:
    """``[N, F]`` real features -> float32, every value finite, N >= 1."""
    x = as_tensor(x, label)
    if x.is_complex():
        fail(label, f"must be real, got {x.dtype}")
    if x.dim() != 2:
        fail(label, f"must be 2-D [num_nodes, num_features], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        fail(label, "has no rows (0 nodes)")
    x = x.to(torch.float32).contiguous()
    bad_rows = (~torch.isfinite(x)).any(dim=1)
    if bool(bad_rows.any()):
        rows = torch.nonzero(bad_rows).view(-1)
        fail(label, f"{rows.numel()} row(s) contain NaN or Inf (first: node {int(rows[0])}); "
                    "features must be finite")
    return x


def check_labels(y, num_nodes: int, label: str) -> torch.Tensor:
    """``[N]`` (or PyG's ``[N, 1]``) integer labels, -1 = unlabelled -> int64 ``[N]``."""
    y = as_tensor(y, label)
    if y.dim() == 2 and y.shape[1] == 1:  # PyG's OGB datasets store y as [N, 1]
        y = y.view(-1)
    if y.dim() != 1 or y.shape[0] != num_nodes:
        fail(label, f"must have shape [{num_nodes}] (one label per node), got {tuple(y.shape)}")
    if not _is_integer(y):
        fail(label, f"must hold integer class labels, got {y.dtype}")
    y = y.to(torch.int64).contiguous()
    if y.numel() and int(y.min()) < -1:
        node = int(torch.nonzero(y < -1)[0])
        fail(label, f"node {node} has label {int(y[node])}; labels are class ids >= 0, or -1 for unlabelled")
    return y


def check_num_classes(num_classes, y: torch.Tensor, labels: Labels) -> int:
    """The given class count (every label must be below it) or ``max(y) + 1``; at least 2."""
    top = int(y.max()) if y.numel() else -1
    if num_classes is None:
        num_classes = top + 1
        if num_classes < 2:
            fail(labels["y"], f"holds {max(num_classes, 0)} class(es); classification needs at least 2")
        return num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        fail(labels["num_classes"], f"must be an int >= 2, got {num_classes!r}")
    if top >= num_classes:
        node = int(torch.nonzero(y >= num_classes)[0])
        fail(labels["y"], f"node {node} has label {int(y[node])} but num_classes is {num_classes} "
                          f"(labels must be in [0, {num_classes}))")
    return int(num_classes)


def check_edge_index(edge_index, num_nodes: int, label: str) -> torch.Tensor:
    """``[2, E]`` integer node pairs, every index in ``[0, N)`` -> int64."""
    edge_index = as_tensor(edge_index, label)
    if not _is_integer(edge_index):
        fail(label, f"must have an integer dtype, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        fail(label, f"must have shape [2, num_edges], got {tuple(edge_index.shape)}")
    edge_index = edge_index.to(torch.int64).contiguous()
    if edge_index.numel():
        lo, hi = int(edge_index.min()), int(edge_index.max())
        if lo < 0:
            fail(label, f"contains a negative node index ({lo})")
        if hi >= num_nodes:
            fail(label, f"contains node index {hi} but there are {num_nodes} nodes (indices must be in "
                        f"[0, {num_nodes}))")
    return edge_index


def check_edge_weight(edge_weight, num_edges: int, label: str) -> torch.Tensor:
    """``[E]`` finite real weights, one per edge in ``edge_index`` order -> float32."""
    edge_weight = as_tensor(edge_weight, label)
    if edge_weight.dtype == torch.bool or edge_weight.is_complex():
        fail(label, f"must be real numbers, got {edge_weight.dtype}")
    if edge_weight.dim() == 2 and edge_weight.shape[1] == 1:
        edge_weight = edge_weight.view(-1)
    if edge_weight.dim() != 1 or edge_weight.shape[0] != num_edges:
        fail(label, f"must have shape [{num_edges}] (one weight per edge), got {tuple(edge_weight.shape)}")
    edge_weight = edge_weight.to(torch.float32).contiguous()
    if not bool(torch.isfinite(edge_weight).all()):
        fail(label, "contains NaN or Inf")
    return edge_weight


def as_index(value, num_nodes: int, label: str) -> torch.Tensor:
    """A split given as int node indices or a ``[N]`` bool mask -> int64 indices, each node once."""
    if value is None:
        return torch.empty(0, dtype=torch.int64)
    value = as_tensor(value, label)
    if value.dtype != torch.bool and value.dim() == 1 and value.numel() == 0:  # torch.tensor([]) is float32
        return torch.empty(0, dtype=torch.int64, device=value.device)
    if value.dtype == torch.bool:
        if value.dim() != 1 or value.shape[0] != num_nodes:
            fail(label, f"a bool mask must have shape [{num_nodes}], got {tuple(value.shape)}")
        return torch.nonzero(value).view(-1)
    if not _is_integer(value):
        fail(label, f"must be integer node indices or a bool mask, got {value.dtype}")
    if value.dim() != 1:
        fail(label, f"node indices must be 1-D, got shape {tuple(value.shape)}")
    value = value.to(torch.int64).contiguous()
    if value.numel():
        lo, hi = int(value.min()), int(value.max())
        if lo < 0:
            fail(label, f"contains a negative node index ({lo})")
        if hi >= num_nodes:
            fail(label, f"contains node index {hi} but there are {num_nodes} nodes")
        if torch.unique(value).numel() != value.numel():
            sorted_idx = value.sort()[0]
            dup = int(sorted_idx[1:][sorted_idx[1:] == sorted_idx[:-1]][0])
            fail(label, f"lists node {dup} more than once")
    return value


def check_splits(splits: dict, y: torch.Tensor, has_graph: bool, labels: Labels) -> None:
    """Non-empty train and test, disjoint splits, every split node labelled.

    An empty validation split is allowed only for MLP data (the MLP trainers carve one from
    train); the graph trainers select the model on it, and on an empty one they would select
    on a constant 0 accuracy.
    """
    required = ("train", "val", "test") if has_graph else ("train", "test")
    for kind in required:
        if splits[kind].numel() == 0:
            fail(labels[kind], "is empty" + (" (graph data needs a validation split for model selection)"
                                             if kind == "val" else ""))
    owner = torch.full((y.shape[0],), -1, dtype=torch.int64)
    for k, kind in enumerate(SPLIT_KINDS):
        idx = splits[kind].cpu()
        clash = owner[idx] >= 0
        if bool(clash.any()):
            node = int(idx[clash][0])
            fail(labels[kind], f"node {node} is also in {labels.names[SPLIT_KINDS[int(owner[node])]]} "
                               "(splits must not overlap)")
        owner[idx] = k
        unlabelled = y[splits[kind]] < 0
        if bool(unlabelled.any()):
            node = int(splits[kind][unlabelled][0])
            fail(labels[kind], f"node {node} is unlabelled (y = -1) but belongs to the {kind} split")


def check_split_number(split, num_splits: int, where: str) -> int:
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)):
        raise ValueError(f"{where}: split must be an int, got {split!r}")
    if not 0 <= split < num_splits:
        raise ValueError(f"{where}: split {split} out of range: it has {num_splits} split(s) "
                         f"(0..{num_splits - 1})")
    return int(split)


def assemble(x, edge_index, y, train, val, test, labels: Labels, *, num_classes=None, name: str,
             source: str, edge_weight=None, split: int = 0, extra: dict | None = None):
    """Validate every field and build the :class:`Dataset` (with its Graph) on ``x``'s device."""
    from .dataset import Dataset

    x = check_features(x, labels["x"])
    n, device = x.shape[0], x.device
    y = check_labels(y, n, labels["y"]).to(device)
    num_classes = check_num_classes(num_classes, y, labels)
    graph = None
    if edge_index is not None:
        edge_index = check_edge_index(edge_index, n, labels["edge_index"]).to(device)
        graph = Graph.from_edge_index(edge_index, n)
    if edge_weight is not None:
        if edge_index is None:
            fail(labels["edge_weight"], "is given but there is no edge_index")
        edge_weight = check_edge_weight(edge_weight, edge_index.shape[1], labels["edge_weight"]).to(device)
    splits = {kind: as_index(value, n, labels[kind]).to(device)
              for kind, value in zip(SPLIT_KINDS, (train, val, test))}
    check_splits(splits, y, graph is not None, labels)
    return Dataset(name, x, y, splits["train"], splits["val"], splits["test"], num_classes, graph, edge_index,
                   int(split), dict(extra or {}), edge_weight=edge_weight, source=source)
