"""PyG ``Data`` objects, read by attribute (duck-typed: torch_geometric need not be installed)."""
from __future__ import annotations

import torch

from ._checks import SPLIT_KINDS, Labels, assemble, check_split_number, fail

WHERE = "PyG Data"


def _attr(data, name):
    # PyG's Data raises AttributeError for a missing key, other objects may too: both mean absent.
    try:
        return getattr(data, name)
    except AttributeError:
        return None


def _split_tensors(data):
    """``{kind: (tensor or None, attribute name)}``: the mask if present, else the index tensor."""
    found = {}
    for kind in SPLIT_KINDS:
        mask = _attr(data, f"{kind}_mask")
        found[kind] = (mask, f"{kind}_mask") if mask is not None else (_attr(data, f"{kind}_idx"), f"{kind}_idx")
    return found


def pyg_num_splits(data) -> int:
    """S when any split mask is ``[N, S]`` (they must agree), else 1."""
    x = _attr(data, "x")
    num_nodes = x.shape[0] if isinstance(x, torch.Tensor) and x.dim() >= 1 else None
    counts = {}
    for value, attr in _split_tensors(data).values():
        if isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.dim() == 2:
            if num_nodes is not None and value.shape[0] != num_nodes:
                fail(f"{WHERE}: {attr}", f"a 2-D mask must have shape [num_nodes={num_nodes}, num_splits], "
                                         f"got {tuple(value.shape)}")
            counts[attr] = value.shape[1]
    if len(set(counts.values())) > 1:
        fail(f"{WHERE}: {', '.join(counts)}", "the [N, S] masks disagree on the number of splits S ("
             + ", ".join(f"{attr} has {s}" for attr, s in counts.items()) + ")")
    return next(iter(counts.values()), 1)


def looks_like_pyg(obj) -> bool:
    return all(_attr(obj, name) is not None for name in ("x", "y")) and not isinstance(obj, (str, bytes))


def from_pyg(data, split: int = 0):
    x, y = _attr(data, "x"), _attr(data, "y")
    for name, value in (("x", x), ("y", y)):
        if value is None:
            fail(f"{WHERE}: {name}", "is missing (ffkernels needs node features x and labels y)")
    num_splits = pyg_num_splits(data)
    split = check_split_number(split, num_splits, WHERE)
    fields, chosen = {}, {}
    for kind, (value, attr) in _split_tensors(data).items():
        fields[kind] = attr
        if value is None:
            fields[kind] = f"{kind}_mask / {kind}_idx"
            if kind != "val":  # val may be absent for MLP data; assemble() decides
                fail(f"{WHERE}: {fields[kind]}", "is missing (give a bool mask or an index tensor)")
        elif isinstance(value, torch.Tensor) and value.dtype == torch.bool and value.dim() == 2:
            value = value[:, split]
            fields[kind] = f"{attr}[:, {split}]"
        chosen[kind] = value
    labels = Labels(WHERE, **fields)
    return assemble(x, _attr(data, "edge_index"), y, chosen["train"], chosen["val"], chosen["test"], labels,
                    name="pyg", source=WHERE, edge_weight=_attr(data, "edge_weight"), split=split)
