"""Dataset.from_tensors: accepted inputs, every validation error, source, edge_weight."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ffkernels import Graph
from ffkernels.datasets import Dataset
from ffkernels.testing import random_graph_data

FIELDS = ("x", "edge_index", "y", "train_idx", "val_idx", "test_idx")


def tensors(**changes):
    parts = dict(zip(FIELDS, random_graph_data()))
    parts.update(changes)
    return parts


def build(num_classes=None, edge_weight=None, **changes):
    return Dataset.from_tensors(**tensors(**changes), num_classes=num_classes, edge_weight=edge_weight)


def test_from_tensors_keeps_the_data_and_builds_the_graph():
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    data = Dataset.from_tensors(x, edge_index, y, train_idx, val_idx, test_idx, name="mine")
    assert torch.equal(data.x, x) and data.x.dtype == torch.float32
    assert torch.equal(data.y, y) and torch.equal(data.edge_index, edge_index)
    for got, want in ((data.train_idx, train_idx), (data.val_idx, val_idx), (data.test_idx, test_idx)):
        assert torch.equal(got, want) and got.dtype == torch.int64
    assert data.num_classes == 3 and data.name == "mine" and data.source == "tensors"
    assert data.edge_weight is None
    assert isinstance(data.graph, Graph) and data.graph.num_nodes == 60 and data.graph.num_edges == edge_index.shape[1]


def test_masks_numpy_and_lists_are_accepted():
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    train_mask = torch.zeros(60, dtype=torch.bool)
    train_mask[train_idx] = True
    data = Dataset.from_tensors(x.numpy().astype(np.float64), edge_index.numpy().astype(np.int32), y.numpy(),
                                train_mask, val_idx.tolist(), test_idx.to(torch.int32))
    assert torch.equal(data.train_idx, train_idx)
    assert torch.equal(data.val_idx, val_idx) and torch.equal(data.test_idx, test_idx)
    assert data.x.dtype == torch.float32 and data.edge_index.dtype == torch.int64


def test_mlp_data_without_edges_or_validation_split():
    data = build(edge_index=None, val_idx=None)
    assert data.graph is None and data.edge_index is None and data.val_idx.numel() == 0
    assert build(edge_index=None, val_idx=torch.tensor([])).val_idx.dtype == torch.int64


def test_unlabelled_nodes_outside_the_splits_are_fine_and_num_classes_can_exceed_the_labels():
    parts = tensors()
    left_out = parts["test_idx"][:6]
    y = parts["y"].clone()
    y[left_out] = -1
    data = Dataset.from_tensors(**dict(parts, y=y, test_idx=parts["test_idx"][6:]), num_classes=5)
    assert data.num_classes == 5 and torch.equal(torch.nonzero(data.y == -1).view(-1), left_out.sort()[0])


def test_edge_weight_is_kept_in_edge_index_order():
    edge_index = random_graph_data()[1]
    weight = torch.arange(edge_index.shape[1], dtype=torch.float64)
    data = build(edge_weight=weight)
    assert data.edge_weight.dtype == torch.float32 and torch.equal(data.edge_weight, weight.float())
    moved = data.to("cpu")
    assert torch.equal(moved.edge_weight, data.edge_weight) and moved.source == "tensors"


def _with(key, index, value):
    def change(parts):
        t = parts[key].clone()
        t[index] = value
        return {key: t}
    return change


def _train_unlabelled(parts):
    y = parts["y"].clone()
    y[parts["train_idx"][0]] = -1
    return {"y": y}


def _overlap(parts):
    return {"test_idx": torch.cat([parts["test_idx"], parts["train_idx"][:1]])}


def _mask(shape, dtype=torch.bool):
    return lambda parts: {"train_idx": torch.zeros(shape, dtype=dtype)}


# (id, change to the fixture's tensors or extra from_tensors kwargs, the field the error names, its problem)
BAD_INPUTS = [
    ("x-1d", lambda p: {"x": p["x"][:, 0]}, "x", "2-D"),
    ("x-nan", _with("x", (5, 2), float("nan")), "x", "NaN or Inf.*node 5"),
    ("x-inf", _with("x", (7, 0), float("inf")), "x", "NaN or Inf.*node 7"),
    ("x-not-tensor", lambda p: {"x": "features"}, "x", "torch.Tensor"),
    ("x-strings", lambda p: {"x": np.array([["a"]])}, "x", "numeric"),
    ("y-short", lambda p: {"y": p["y"][:-1]}, "y", r"shape \[60\]"),
    ("y-float", lambda p: {"y": p["y"].float()}, "y", "integer"),
    ("y-below-minus-one", _with("y", 3, -2), "y", "node 3 has label -2"),
    ("edge-index-3-rows", lambda p: {"edge_index": torch.zeros(3, 4, dtype=torch.int64)}, "edge_index",
     r"shape \[2, num_edges\]"),
    ("edge-index-1d", lambda p: {"edge_index": p["edge_index"][0]}, "edge_index", r"shape \[2, num_edges\]"),
    ("edge-index-float", lambda p: {"edge_index": p["edge_index"].float()}, "edge_index", "integer"),
    ("edge-index-past-n", _with("edge_index", (1, 0), 60), "edge_index", "node index 60 but there are 60"),
    ("edge-index-negative", _with("edge_index", (0, 3), -1), "edge_index", "negative"),
    ("train-unlabelled", _train_unlabelled, "train_idx", "unlabelled"),
    ("splits-overlap", _overlap, "test_idx", "also in train_idx"),
    ("index-past-n", _with("val_idx", 0, 60), "val_idx", "node index 60"),
    ("index-negative", _with("test_idx", 0, -3), "test_idx", "negative"),
    ("index-duplicate", lambda p: {"train_idx": torch.cat([p["train_idx"], p["train_idx"][:1]])}, "train_idx",
     "more than once"),
    ("index-float", lambda p: {"train_idx": p["train_idx"].float()}, "train_idx", "integer node indices or a bool"),
    ("index-2d", lambda p: {"train_idx": p["train_idx"].view(2, -1)}, "train_idx", "1-D"),
    ("train-empty", lambda p: {"train_idx": torch.empty(0, dtype=torch.int64)}, "train_idx", "empty"),
    ("test-empty", lambda p: {"test_idx": torch.empty(0, dtype=torch.int64)}, "test_idx", "empty"),
    ("graph-val-empty", lambda p: {"val_idx": None}, "val_idx", "empty.*validation"),
    ("mask-short", _mask(59), "train_idx", r"mask must have shape \[60\]"),
    ("mask-2d", _mask((60, 2)), "train_idx", r"mask must have shape \[60\]"),
    ("mask-float", _mask(60, torch.float32), "train_idx", "integer node indices or a bool mask"),
]
BAD_OPTIONS = [
    ("label-above-num-classes", {"num_classes": 2}, "y", "label 2 but num_classes is 2"),
    ("num-classes-one", {"num_classes": 1}, "num_classes", ">= 2"),
    ("num-classes-float", {"num_classes": 3.0}, "num_classes", "int"),
    ("edge-weight-short", {"edge_weight": torch.ones(5)}, "edge_weight", "one weight per edge"),
    ("edge-weight-nan", {"edge_weight": torch.full((302,), float("nan"))}, "edge_weight", "NaN"),
]


@pytest.mark.parametrize("change, field, problem", [c[1:] for c in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
def test_bad_tensors_raise_naming_the_source_and_field(change, field, problem):
    parts = tensors()
    parts.update(change(parts))
    with pytest.raises(ValueError, match=rf"^tensors: {field}: .*{problem}"):
        Dataset.from_tensors(**parts)


@pytest.mark.parametrize("options, field, problem", [c[1:] for c in BAD_OPTIONS], ids=[c[0] for c in BAD_OPTIONS])
def test_bad_options_raise_naming_the_source_and_field(options, field, problem):
    assert random_graph_data()[1].shape[1] == 302  # the edge_weight cases assume it
    with pytest.raises(ValueError, match=rf"^tensors: {field}: .*{problem}"):
        build(**options)


def test_edge_weight_without_edges_is_rejected():
    with pytest.raises(ValueError, match="tensors: edge_weight: .*no edge_index"):
        build(edge_index=None, edge_weight=torch.ones(3))


def test_a_single_class_is_rejected():
    with pytest.raises(ValueError, match="tensors: y: .*at least 2"):
        build(y=torch.zeros(60, dtype=torch.int64))


def test_direct_construction_stays_positional_and_unvalidated():
    # The benchmark suite and older callers build Datasets positionally; source defaults to name.
    x, edge_index, y, tr, va, te = random_graph_data()
    data = Dataset("tiny", x, y, tr, va, te, 3, Graph.from_edge_index(edge_index, 60), edge_index, 0, {"k": 1})
    assert data.source == "tiny" and data.edge_weight is None and data.extra == {"k": 1}
    moved = data.to("cpu")
    assert moved.source == "tiny" and moved.extra == {"k": 1} and moved.extra is not data.extra


def test_built_and_validated_on_the_device_of_x(device):
    parts = [t.to(device) for t in random_graph_data()]
    data = Dataset.from_tensors(*parts)
    assert data.x.device == parts[0].device and data.graph.device == parts[0].device
    assert data.train_idx.device == parts[0].device
    assert data.fingerprint() == Dataset.from_tensors(*random_graph_data()).fingerprint()
    bad = list(parts)
    bad[5] = torch.cat([parts[5], parts[3][:1]])
    with pytest.raises(ValueError, match="tensors: test_idx: .*also in train_idx"):
        Dataset.from_tensors(*bad)
