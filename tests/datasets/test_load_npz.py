"""load_npz: round trips through write_npz (dense, CSR, several splits, MLP data) and every file error."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ffkernels.datasets import DATA_DIR, load, load_npz
from ffkernels.testing import random_graph_data, write_npz


def assert_same(data, x, edge_index, y, train_idx, val_idx, test_idx):
    assert torch.equal(data.x, x) and torch.equal(data.y, y)
    assert (data.edge_index is None) if edge_index is None else torch.equal(data.edge_index, edge_index)
    assert torch.equal(data.train_idx, train_idx) and torch.equal(data.test_idx, test_idx)
    assert torch.equal(data.val_idx, val_idx)


@pytest.mark.parametrize("csr", [False, True], ids=["dense", "csr"])
def test_round_trip(tmp_path, csr):
    parts = random_graph_data()
    path = write_npz(tmp_path / "graph.npz", *parts, csr=csr)
    data = load_npz(path)
    assert_same(data, *parts)
    assert data.name == "graph" and data.source == str(path) and data.graph.num_edges == parts[1].shape[1]


def test_csr_with_zero_rows_and_edge_weight(tmp_path):
    x, edge_index, *rest = random_graph_data()
    x[[0, 17, 59]] = 0.0  # empty CSR rows, including the first and the last
    weight = torch.rand(edge_index.shape[1])
    data = load_npz(write_npz(tmp_path / "g.npz", x, edge_index, *rest, csr=True, edge_weight=weight))
    assert torch.equal(data.x, x) and torch.equal(data.edge_weight, weight)


def test_several_splits_round_trip(tmp_path):
    x, edge_index, y = random_graph_data()[:3]
    # Other seeds' splits are valid here too: they are disjoint and every node is labelled.
    splits = [random_graph_data(seed=s)[3:] for s in range(3)]
    train, val, test = ([s[i] for s in splits] for i in range(3))
    assert not torch.equal(train[0], train[1])
    path = write_npz(tmp_path / "multi.npz", x, edge_index, y, train, val, test)
    for k in range(3):
        data = load_npz(path, split=k)
        assert data.split == k
        assert_same(data, x, edge_index, y, train[k], val[k], test[k])
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: split 3 out of range.*3 split"):
        load_npz(path, split=3)


def test_mlp_data_without_edges_and_validation(tmp_path):
    x, _, y, train_idx, _, test_idx = random_graph_data()
    data = load_npz(write_npz(tmp_path / "mlp.npz", x, None, y, train_idx, None, test_idx))
    assert data.graph is None and data.edge_index is None and data.val_idx.numel() == 0
    assert torch.equal(data.train_idx, train_idx)


@pytest.mark.parametrize("name", ["cora", "citeseer"])
def test_bundled_files_read_like_load(name):
    # The bundled files are in the same key format: the generic reader must agree with load().
    mine, bundled = load_npz(DATA_DIR / f"{name}.npz"), load(name)
    assert_same(mine, bundled.x, bundled.edge_index, bundled.y, bundled.train_idx, bundled.val_idx, bundled.test_idx)
    assert mine.fingerprint() == bundled.fingerprint()


def test_bundled_cora_ml_splits():
    mine, bundled = load_npz(DATA_DIR / "cora_ml.npz", split=3), load("cora_ml", split=3)
    assert torch.equal(mine.train_idx, bundled.train_idx) and torch.equal(mine.test_idx, bundled.test_idx)
    assert not torch.equal(mine.train_idx, load("cora_ml", split=2).train_idx)


def write(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def base_arrays():
    x, edge_index, y, train_idx, val_idx, test_idx = (t.numpy() for t in random_graph_data())
    return dict(x=x, edge_index=edge_index, y=y, train_idx=train_idx, val_idx=val_idx, test_idx=test_idx)


def _csr_arrays():
    arrays = base_arrays()
    x = arrays.pop("x")
    rows, cols = np.nonzero(x)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=60))])
    return dict(arrays, x_indptr=indptr, x_indices=cols, x_data=x[rows, cols], x_shape=np.array([60, 8]))


def _drop(*keys):
    return lambda a: [a.pop(k) for k in keys]


def _set(key, value):
    return lambda a: a.update({key: value(a) if callable(value) else value})


BAD_FILES = [
    ("no-y", base_arrays, _drop("y"), "y", "missing key"),
    ("no-train", base_arrays, _drop("train_idx"), "train_idx", "missing key"),
    ("graph-no-val", base_arrays, _drop("val_idx"), "val_idx", "missing key"),
    ("no-features", base_arrays, _drop("x"), "x_indptr, x_indices, x_data, x_shape", "missing key"),
    ("csr-partial", _csr_arrays, _drop("x_data"), "x_data", "missing key"),
    ("csr-indptr", _csr_arrays, _set("x_indptr", lambda a: a["x_indptr"][:-1]), "x_indptr", "61 non-decreasing"),
    ("csr-column", _csr_arrays, _set("x_indices", lambda a: a["x_indices"] + 8), "x_indices", r"\[0, 8\)"),
    ("csr-shape", _csr_arrays, _set("x_shape", np.array([60.0, 8.0])), "x_shape", "two non-negative ints"),
    ("x-3d", base_arrays, _set("x", np.zeros((60, 2, 2), np.float32)), "x", "2-D"),
    ("x-nan", base_arrays, _set("x", lambda a: np.where(np.arange(60)[:, None] == 9, np.nan, a["x"])), "x",
     "node 9"),
    ("y-shape", base_arrays, _set("y", lambda a: a["y"][:30]), "y", r"shape \[60\]"),
    ("edge-float", base_arrays, _set("edge_index", lambda a: a["edge_index"].astype(np.float32)), "edge_index",
     "integer"),
    ("edge-transposed", base_arrays, _set("edge_index", lambda a: a["edge_index"].T.copy()), "edge_index",
     r"shape \[2, num_edges\]"),
    ("label-unlabelled", base_arrays, _set("y", lambda a: np.where(np.isin(np.arange(60), a["test_idx"][:1]), -1,
                                                                   a["y"])), "test_idx", "unlabelled"),
    ("overlap", base_arrays, _set("val_idx", lambda a: np.concatenate([a["val_idx"], a["train_idx"][:2]])),
     "val_idx", "also in train_idx"),
    ("past-n", base_arrays, _set("test_idx", lambda a: np.append(a["test_idx"], 60)), "test_idx", "node index 60"),
    ("negative", base_arrays, _set("train_idx", lambda a: np.append(a["train_idx"], -1)), "train_idx", "negative"),
    ("train-empty", base_arrays, _set("train_idx", np.zeros(0, np.int64)), "train_idx", "empty"),
    ("split-gap", base_arrays, lambda a: a.update(train_idx_0=a["train_idx"], test_idx_0=a["test_idx"],
                                                   val_idx_0=a["val_idx"], train_idx_2=a["train_idx"]),
     "train_idx_1", "missing key"),
    ("suffixed-field", base_arrays, lambda a: a.update(train_idx_0=a["train_idx"], val_idx_0=a["val_idx"],
                                                       test_idx_0=a["train_idx"]), "test_idx_0", "also in"),
    ("object-array", base_arrays, _set("y", lambda a: np.array([object()] * 60)), "y", "without pickle"),
]


@pytest.mark.parametrize("arrays, change, field, problem", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_naming_the_file_and_key(tmp_path, arrays, change, field, problem):
    contents = arrays()
    change(contents)
    path = write(tmp_path, **contents)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: {re.escape(field)}: .*{problem}"):
        load_npz(path)


def test_not_an_npz(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match=rf"{re.escape(str(text))}: not a readable .npz"):
        load_npz(text)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="single array"):
        load_npz(single)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")
