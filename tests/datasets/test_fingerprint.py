"""Dataset.fingerprint: equal content -> equal digest, any change to the problem -> a new one."""
from __future__ import annotations

import re

import pytest
import torch

from ffkernels.datasets import Dataset, load
from ffkernels.testing import random_graph_data

FIELDS = ("x", "edge_index", "y", "train_idx", "val_idx", "test_idx")


def make(num_classes=None, edge_weight=None, **changes):
    parts = dict(zip(FIELDS, random_graph_data()))
    parts.update(changes)
    return Dataset.from_tensors(**parts, num_classes=num_classes, edge_weight=edge_weight)


def test_identical_data_gives_the_identical_short_hex_digest():
    a, b = make(), make()
    assert a.x is not b.x
    assert a.fingerprint() == b.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", a.fingerprint())


def test_name_and_source_do_not_count():
    parts = dict(zip(FIELDS, random_graph_data()))
    named_a, named_b = Dataset.from_tensors(**parts, name="a"), Dataset.from_tensors(**parts, name="b")
    assert named_a.fingerprint() == named_b.fingerprint()


def _bump(tensor, index, delta):
    t = tensor.clone()
    t[index] += delta
    return t


def _move_first_test_node_to_val(parts):
    return {"val_idx": torch.cat([parts["val_idx"], parts["test_idx"][:1]]), "test_idx": parts["test_idx"][1:]}


CHANGES = {
    "one-feature": lambda p: {"x": _bump(p["x"], (10, 3), 1e-3)},
    "one-label": lambda p: {"y": _bump(p["y"], int(p["test_idx"][0]), 1) % 3},
    "one-edge-target": lambda p: {"edge_index": torch.cat([p["edge_index"][:, :-1],
                                                           torch.tensor([[0], [int(p["edge_index"][1, -1]) - 1]])], 1)},
    "edge-dropped": lambda p: {"edge_index": p["edge_index"][:, 1:]},
    "edge-order": lambda p: {"edge_index": p["edge_index"].flip(1)},
    "no-edges": lambda p: {"edge_index": None},
    "split-moved": _move_first_test_node_to_val,
    "train-order": lambda p: {"train_idx": p["train_idx"].flip(0)},
    "feature-columns": lambda p: {"x": p["x"][:, :-1]},
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_any_change_to_the_data_changes_the_fingerprint(name):
    parts = dict(zip(FIELDS, random_graph_data()))
    assert make().fingerprint() != make(**CHANGES[name](parts)).fingerprint()


def test_num_classes_and_edge_weight_count():
    base = make().fingerprint()
    assert make(num_classes=4).fingerprint() != base
    ones = make(edge_weight=torch.ones(302))
    assert ones.fingerprint() != base
    assert make(edge_weight=torch.full((302,), 2.0)).fingerprint() != ones.fingerprint()


def test_cached_kept_by_to_and_reset_by_reassignment():
    data = make()
    digest = data.fingerprint()
    assert data._fingerprint == digest
    data.x.mul_(2)  # documented: in-place edits are not tracked
    assert data.fingerprint() == digest
    assert data.to("cpu")._fingerprint == digest
    data.x = data.x.clone()
    assert data._fingerprint is None and data.fingerprint() != digest


def test_device_independent(device):
    data = make()
    moved = make().to(device)
    moved._fingerprint = None
    assert moved.fingerprint() == data.fingerprint()


def test_bundled_fingerprints_are_pinned():
    # Checkpoints store these: a change to the hashing scheme must be deliberate (and this test updated).
    assert load("cora").fingerprint() == "2b1190413ceee66b"
    assert load("cora_ml", split=1).fingerprint() == "12950f68d7dfa523"
    assert load("cora_ml", split=0).fingerprint() != load("cora_ml", split=1).fingerprint()
