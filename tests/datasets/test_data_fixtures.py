"""The fixture writers in ffkernels.testing: a small learnable graph and its on-disk forms."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from ffkernels.testing import random_graph_data, write_npz, write_ogb_dir


def test_seeded_and_well_formed():
    a, b, c = random_graph_data(seed=0), random_graph_data(seed=0), random_graph_data(seed=1)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert not torch.equal(a[0], c[0])
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data(num_nodes=90, num_features=5, num_classes=4)
    assert x.shape == (90, 5) and x.dtype == torch.float32 and y.shape == (90,) and edge_index.shape[0] == 2
    src, dst = edge_index
    assert bool((src != dst).all())
    keys = src * 90 + dst
    assert torch.unique(keys).numel() == keys.numel()  # no duplicates
    assert torch.equal(torch.sort(keys)[0], torch.sort(dst * 90 + src)[0])  # symmetric
    splits = torch.cat([train_idx, val_idx, test_idx])
    assert torch.unique(splits).numel() == 90  # disjoint and covering
    for idx in (train_idx, val_idx, test_idx):
        assert torch.equal(torch.unique(y[idx]), torch.arange(4))  # every class in every split


def test_learnable_from_features_and_homophilous():
    x, edge_index, y, train_idx, _, test_idx = random_graph_data()
    centroids = torch.stack([x[train_idx][y[train_idx] == c].mean(0) for c in range(3)])
    predicted = torch.cdist(x[test_idx], centroids).argmin(1)
    assert float((predicted == y[test_idx]).float().mean()) > 0.9
    assert float((y[edge_index[0]] == y[edge_index[1]]).float().mean()) > 0.7


def test_too_few_nodes():
    with pytest.raises(ValueError, match=r"num_nodes >= 3 \* num_classes = 9, got 8"):
        random_graph_data(num_nodes=8, num_classes=3)


def test_writers_produce_the_documented_files(tmp_path):
    parts = random_graph_data()
    with np.load(write_npz(tmp_path / "a.npz", *parts, csr=True)) as archive:
        assert set(archive.files) == {"x_indptr", "x_indices", "x_data", "x_shape", "y", "edge_index", "train_idx",
                                      "val_idx", "test_idx"}
    root = write_ogb_dir(tmp_path / "ogb", *parts)
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*.csv.gz"))
    assert files == ["raw/edge.csv.gz", "raw/node-feat.csv.gz", "raw/node-label.csv.gz",
                     "split/random/test.csv.gz", "split/random/train.csv.gz", "split/random/valid.csv.gz"]
    with gzip.open(root / "raw" / "edge.csv.gz", "rt") as handle:
        first = handle.readline().strip()
    assert first == f"{int(parts[1][0, 0])},{int(parts[1][1, 0])}"
