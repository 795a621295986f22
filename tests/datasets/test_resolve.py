"""resolve and num_splits: every kind of source, the errors for unknown ones."""
from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ffkernels.datasets import DATASETS, Dataset, load, num_splits, resolve
from ffkernels.testing import random_graph_data, write_npz, write_ogb_dir


def test_bundled_names_load_the_bundled_data():
    data = resolve("cora_ml", split=2)
    assert data.source == "cora_ml" and data.split == 2
    assert data.fingerprint() == load("cora_ml", split=2).fingerprint()
    assert num_splits("cora_ml") == 5 and num_splits("digits") == 1


def test_a_dataset_is_returned_on_the_device(device):
    data = Dataset.from_tensors(*random_graph_data())
    moved = resolve(data, device=device)
    assert moved.x.device.type == torch.device(device).type and moved.graph.device.type == moved.x.device.type
    assert moved.fingerprint() == data.fingerprint() and num_splits(data) == 1
    with pytest.raises(ValueError, match="a Dataset holds one split"):
        resolve(data, split=1)


def test_pyg_like_objects():
    x, edge_index, y = random_graph_data()[:3]
    train = torch.zeros(60, 3, dtype=torch.bool)
    val = torch.zeros(60, 3, dtype=torch.bool)
    for k in range(3):
        train[k * 10:k * 10 + 10, k] = True
        val[40 + k, k] = True
    test = torch.zeros(60, dtype=torch.bool)
    test[50:] = True
    source = SimpleNamespace(x=x, edge_index=edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)
    assert num_splits(source) == 3
    data = resolve(source, split=2)
    assert torch.equal(data.train_idx, torch.arange(20, 30)) and data.source == "PyG Data"


@pytest.mark.parametrize("as_str", [True, False], ids=["str", "Path"])
def test_npz_paths(tmp_path, as_str):
    x, edge_index, y = random_graph_data()[:3]
    splits = [random_graph_data(seed=s)[3:] for s in range(2)]
    path = write_npz(tmp_path / "mine.npz", x, edge_index, y, *([s[i] for s in splits] for i in range(3)))
    source = str(path) if as_str else path
    assert num_splits(source) == 2
    data = resolve(source, split=1)
    assert torch.equal(data.train_idx, splits[1][0]) and data.source == str(path) and data.split == 1
    with pytest.raises(ValueError, match="split 2 out of range"):
        resolve(source, split=2)


def test_num_splits_reads_key_names_only(tmp_path):
    parts = [t.numpy() for t in random_graph_data()]
    path = tmp_path / "lazy.npz"
    # An object-array x cannot be read without pickle: counting splits must not touch it.
    np.savez(path, x=np.array([object()] * 60), edge_index=parts[1], y=parts[2],
             **{f"{kind}_idx_{k}": part for k in range(4) for kind, part in zip(("train", "val", "test"), parts[3:])})
    assert num_splits(path) == 4
    with pytest.raises(ValueError, match="x: cannot be read without pickle"):
        resolve(path)


def test_ogb_directories_split_by_sorted_name(tmp_path):
    parts = random_graph_data()
    root = write_ogb_dir(tmp_path / "ogbn_toy", *parts, split_name="time")
    assert num_splits(str(root)) == 1
    assert resolve(str(root)).extra["split_name"] == "time"
    other = random_graph_data(seed=3)[3:]
    write_ogb_dir(root, *parts[:3], *other, split_name="random")
    assert num_splits(root) == 2
    first, second = resolve(root, split=0), resolve(root, split=1)
    assert first.extra["split_name"] == "random" and torch.equal(first.train_idx, other[0]) and first.split == 0
    assert second.extra["split_name"] == "time" and torch.equal(second.train_idx, parts[3]) and second.split == 1
    by_name = resolve(root, split="time")
    assert by_name.fingerprint() == second.fingerprint() and by_name.split == 1
    with pytest.raises(ValueError, match=r"split 2 out of range.*\['random', 'time'\]"):
        resolve(root, split=2)


def test_a_bundled_name_wins_over_a_same_named_path(tmp_path, monkeypatch):
    write_npz(tmp_path / "cora", *random_graph_data())
    os.replace(tmp_path / "cora.npz", tmp_path / "cora")
    monkeypatch.chdir(tmp_path)
    assert resolve("cora").source == "cora"
    with pytest.raises(ValueError, match="unsupported file type"):  # a Path is always a path
        resolve(Path("cora"))


def test_unknown_sources():
    with pytest.raises(ValueError, match=rf"'coraa' is neither a bundled dataset \({re.escape(', '.join(DATASETS))}\)"):
        resolve("coraa")
    with pytest.raises(ValueError, match="no such file or directory"):
        resolve(Path("/nonexistent/data.npz"))
    with pytest.raises(ValueError, match="neither a bundled dataset"):
        num_splits("coraa")
    with pytest.raises(TypeError, match="source must be a bundled dataset name"):
        resolve(42)
    with pytest.raises(TypeError, match="source must be"):
        num_splits(SimpleNamespace(x=torch.zeros(3, 2)))


def test_unsupported_file_type(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data.csv: unsupported file type '.csv'"):
        resolve(csv)
