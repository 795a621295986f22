"""The error messages quoted in docs/data.md are the ones users get."""
from __future__ import annotations

import gzip
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ffkernels.datasets import Dataset, load_npz, load_ogb
from ffkernels.testing import random_graph_data, write_npz, write_ogb_dir

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def quoted_errors():
    block = re.search(r"for example:\n\n```\n(.*?)```", DOC.read_text(), re.S).group(1)
    return block.strip().split("\n")


def error_of(call):
    with pytest.raises(ValueError) as info:
        call()
    return str(info.value)


def test_docs_quote_three_errors():
    assert len(quoted_errors()) == 3


def test_npz_overlap_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    assert 17 in train_idx.tolist()  # the quoted message is about node 17, a training node of the fixture
    write_npz("my_graph.npz", x, edge_index, y, train_idx, val_idx, torch.cat([torch.tensor([17]), test_idx]))
    assert error_of(lambda: load_npz("my_graph.npz")) == quoted_errors()[0]


def test_ogb_label_message(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = write_ogb_dir(Path("dataset/ogbn_arxiv"), *random_graph_data())
    labels = root / "raw" / "node-label.csv.gz"
    with gzip.open(labels, "rt") as handle:
        lines = handle.read().split("\n")
    lines[4] = "1.5"
    with gzip.open(labels, "wt") as handle:
        handle.write("\n".join(lines))
    assert error_of(lambda: load_ogb("dataset/ogbn_arxiv")) == quoted_errors()[1]


def test_pyg_unlabelled_message():
    x, edge_index, y = random_graph_data()[:3]
    y = y.clone()
    y[40] = -1
    train = torch.zeros(60, 3, dtype=torch.bool)
    train[[3, 40], 2] = True
    val = torch.zeros(60, dtype=torch.bool)
    val[5] = True
    test = torch.zeros(60, dtype=torch.bool)
    test[6] = True
    graph = SimpleNamespace(x=x, edge_index=edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)
    assert error_of(lambda: Dataset.from_pyg(graph, split=2)) == quoted_errors()[2]
