"""Dataset.from_pyg with a real torch_geometric Data and with a plain object of the same attributes."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from ffkernels.datasets import Dataset
from ffkernels.testing import random_graph_data

NUM_SPLITS = 4


def split_masks(num_nodes=60, num_splits=NUM_SPLITS, seed=1):
    """``[N, S]`` train/val masks (disjoint per column) and one shared ``[N]`` test mask, as WikiCS ships."""
    gen = torch.Generator().manual_seed(seed)
    test = torch.zeros(num_nodes, dtype=torch.bool)
    test[40:] = True
    train = torch.zeros(num_nodes, num_splits, dtype=torch.bool)
    val = torch.zeros(num_nodes, num_splits, dtype=torch.bool)
    for k in range(num_splits):
        perm = torch.randperm(40, generator=gen)
        train[perm[:25], k] = True
        val[perm[25:], k] = True
    return train, val, test


def pyg_data(**attrs):
    geometric = pytest.importorskip("torch_geometric.data")
    return geometric.Data(**attrs)


def plain(**attrs):
    return SimpleNamespace(**attrs)


@pytest.fixture(params=["torch_geometric", "plain"])
def make(request):
    return pyg_data if request.param == "torch_geometric" else plain


def test_split_k_is_mask_column_k(make):
    x, edge_index, y = random_graph_data()[:3]
    train, val, test = split_masks()
    data = make(x=x, edge_index=edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)
    seen = set()
    for k in range(NUM_SPLITS):
        ds = Dataset.from_pyg(data, split=k)
        assert torch.equal(ds.train_idx, torch.nonzero(train[:, k]).view(-1))
        assert torch.equal(ds.val_idx, torch.nonzero(val[:, k]).view(-1))
        assert torch.equal(ds.test_idx, torch.nonzero(test).view(-1))
        assert ds.split == k and ds.source == "PyG Data"
        assert torch.equal(ds.x, x) and torch.equal(ds.edge_index, edge_index) and torch.equal(ds.y, y)
        seen.add(ds.fingerprint())
    assert len(seen) == NUM_SPLITS
    with pytest.raises(ValueError, match=r"PyG Data: split 4 out of range.*4 split"):
        Dataset.from_pyg(data, split=NUM_SPLITS)


def test_index_tensors_edge_weight_and_column_labels(make):
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    weight = torch.rand(edge_index.shape[1])
    # y as [N, 1], as PyG's OGB datasets give it
    data = make(x=x, edge_index=edge_index, y=y.view(-1, 1), edge_weight=weight, train_idx=train_idx,
                val_idx=val_idx, test_idx=test_idx)
    ds = Dataset.from_pyg(data)
    assert torch.equal(ds.edge_weight, weight) and torch.equal(ds.y, y)
    assert ds.fingerprint() == Dataset.from_tensors(x, edge_index, y, train_idx, val_idx, test_idx,
                                                    edge_weight=weight).fingerprint()


def test_mlp_data_without_edges_or_validation(make):
    x, _, y, train_idx, _, test_idx = random_graph_data()
    ds = Dataset.from_pyg(make(x=x, y=y, train_idx=train_idx, test_idx=test_idx))
    assert ds.graph is None and ds.val_idx.numel() == 0


def _base():
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    train, val, test = split_masks()
    return dict(x=x, edge_index=edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)


@pytest.mark.parametrize("change, field, problem", [
    (lambda a: a.pop("x"), "x", "missing"),
    (lambda a: a.pop("y"), "y", "missing"),
    (lambda a: a.pop("train_mask"), "train_mask / train_idx", "missing"),
    (lambda a: a.update(train_mask=a["train_mask"][:50]), "train_mask", r"shape \[num_nodes=60, num_splits\]"),
    (lambda a: a.update(train_mask=a["train_mask"].t().contiguous()), "train_mask", "num_nodes=60"),
    (lambda a: a.update(val_mask=a["val_mask"][:, :2]), "train_mask, val_mask", "disagree"),
    (lambda a: a.update(test_mask=a["test_mask"][:59]), "test_mask", r"shape \[60\]"),
    (lambda a: a.update(test_mask=a["test_mask"].float()), "test_mask", "integer node indices or a bool mask"),
    (lambda a: a.update(y=a["y"].float()), "y", "integer"),
    (lambda a: a.update(edge_index=a["edge_index"] + 1), "edge_index", "node index 60"),
    (lambda a: a.update(edge_weight=torch.ones(3)), "edge_weight", "one weight per edge"),
    (lambda a: a.update(test_mask=a["test_mask"] | a["train_mask"][:, 0]), "test_mask", "also in train_mask"),
], ids=["no-x", "no-y", "no-train", "mask-rows", "mask-transposed", "masks-disagree", "mask-1d-short",
        "mask-float", "y-float", "edge-past-n", "edge-weight-short", "overlap"])
def test_bad_attributes_raise_naming_pyg_data_and_the_attribute(make, change, field, problem):
    attrs = _base()
    change(attrs)
    with pytest.raises(ValueError, match=rf"^PyG Data: {field}.*{problem}"):
        Dataset.from_pyg(make(**attrs), split=0)


def test_column_label_names_the_split_column():
    attrs = _base()
    attrs["train_mask"] = attrs["train_mask"].clone()
    attrs["train_mask"][45, 2] = True  # node 45 is a test node
    Dataset.from_pyg(plain(**attrs), split=1)
    with pytest.raises(ValueError, match=r"PyG Data: test_mask: node 45 is also in train_mask\[:, 2\]"):
        Dataset.from_pyg(plain(**attrs), split=2)


def test_attribute_errors_of_the_object_mean_absent():
    class Strict:  # like PyG's Data, raises AttributeError for keys it lacks
        def __init__(self, **attrs):
            self.attrs = attrs

        def __getattr__(self, name):
            try:
                return self.__dict__["attrs"][name]
            except KeyError:
                raise AttributeError(name) from None

    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    ds = Dataset.from_pyg(Strict(x=x, edge_index=edge_index, y=y, train_idx=train_idx, val_idx=val_idx,
                                 test_idx=test_idx))
    assert ds.edge_weight is None and torch.equal(ds.test_idx, test_idx)
