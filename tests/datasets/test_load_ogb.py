"""load_ogb: round trips through write_ogb_dir, split directory choice, undirected dedupe, file errors."""
from __future__ import annotations

import gzip
import re
import shutil

import pytest
import torch

from ffkernels.datasets import load_ogb
from ffkernels.testing import random_graph_data, write_ogb_dir


def with_unlabelled_nodes():
    """The fixture graph with its last 6 test nodes taken out of the split and unlabelled."""
    x, edge_index, y, train_idx, val_idx, test_idx = random_graph_data()
    y = y.clone()
    y[test_idx[-6:]] = -1
    return x, edge_index, y, train_idx, val_idx, test_idx[:-6]


@pytest.mark.parametrize("unlabelled", ["", "nan"], ids=["empty-line", "nan"])
def test_round_trip_keeps_file_edges_when_directed(tmp_path, unlabelled):
    parts = with_unlabelled_nodes()
    root = write_ogb_dir(tmp_path / "ogbn_toy", *parts, unlabelled=unlabelled)
    data = load_ogb(root, undirected=False)
    x, edge_index, y, train_idx, val_idx, test_idx = parts
    assert torch.equal(data.x, x)  # 9 significant digits read back to the same float32
    assert torch.equal(data.edge_index, edge_index) and torch.equal(data.y, y)
    assert torch.equal(data.train_idx, train_idx) and torch.equal(data.val_idx, val_idx)
    assert torch.equal(data.test_idx, test_idx)
    assert data.name == "ogbn_toy" and data.source == str(root)
    assert data.extra == {"split_name": "random", "undirected": False}


def test_undirected_adds_reverse_edges_and_drops_duplicates(tmp_path):
    x, edge_index, *rest = random_graph_data()
    one_way = edge_index[:, edge_index[0] < edge_index[1]]
    in_file = torch.cat([one_way, one_way[:, :5], one_way[:, :3].flip(0)], dim=1)  # duplicates both ways
    data = load_ogb(write_ogb_dir(tmp_path / "d", x, in_file, *rest))
    # The fixture's edges are symmetric, deduplicated and sorted: exactly what undirected=True rebuilds.
    assert torch.equal(data.edge_index, edge_index)
    assert data.extra["undirected"] is True
    directed = load_ogb(tmp_path / "d", undirected=False)
    assert directed.edge_index.shape[1] == in_file.shape[1]


def test_several_split_directories(tmp_path):
    parts = random_graph_data()
    root = write_ogb_dir(tmp_path / "d", *parts, split_name="time")
    other = random_graph_data(seed=5)[3:]
    write_ogb_dir(root, *parts[:3], *other, split_name="random")
    with pytest.raises(ValueError, match=r"split: holds several splits \['random', 'time'\]; pick one"):
        load_ogb(root)
    assert torch.equal(load_ogb(root, split_name="time").train_idx, parts[3])
    assert torch.equal(load_ogb(root, split_name="random").train_idx, other[0])
    with pytest.raises(ValueError, match=r"has no split 'year'; available: \['random', 'time'\]"):
        load_ogb(root, split_name="year")


def test_uncompressed_csv_is_accepted(tmp_path):
    parts = random_graph_data()
    root = write_ogb_dir(tmp_path / "d", *parts)
    packed = root / "raw" / "node-feat.csv.gz"
    with gzip.open(packed, "rb") as src, open(root / "raw" / "node-feat.csv", "wb") as dst:
        shutil.copyfileobj(src, dst)
    packed.unlink()
    assert torch.equal(load_ogb(root).x, parts[0])


def rewrite(path, text):
    with gzip.open(path, "wt") as handle:
        handle.write(text)


def read(path):
    with gzip.open(path, "rt") as handle:
        return handle.read()


def _replace_line(name, line, value):
    def change(root):
        path = root / name
        lines = read(path).split("\n")
        lines[line] = value
        rewrite(path, "\n".join(lines))
    return change


def _train_node_into_test(root):
    first_train = read(root / "split/random/train.csv.gz").split("\n")[0]
    rewrite(root / "split/random/test.csv.gz", first_train + "\n" + read(root / "split/random/test.csv.gz"))


def _remove(name):
    return lambda root: (root / name).unlink()


BAD_DIRS = [
    ("no-features", _remove("raw/node-feat.csv.gz"), "missing file .*raw/node-feat.csv.gz"),
    ("no-valid", _remove("split/random/valid.csv.gz"), "missing file .*split/random/valid.csv.gz"),
    ("no-split-dir", lambda r: shutil.rmtree(r / "split"), "missing directory split/"),
    ("no-raw-dir", lambda r: shutil.rmtree(r / "raw"), "missing directory raw/"),
    ("feature-nan", _replace_line("raw/node-feat.csv.gz", 4, ",".join(["nan"] * 8)),
     r"raw/node-feat.csv.gz \(x\): .*NaN or Inf.*node 4"),
    ("feature-text", _replace_line("raw/node-feat.csv.gz", 2, "a,b"),
     r"raw/node-feat.csv.gz \(x\): could not be parsed"),
    ("label-fraction", _replace_line("raw/node-label.csv.gz", 3, "1.5"),
     r"raw/node-label.csv.gz \(y\): line 4 holds '1.5'"),
    ("label-text", _replace_line("raw/node-label.csv.gz", 0, "cat"),
     r"raw/node-label.csv.gz \(y\): line 1 is not a number"),
    ("multi-label", _replace_line("raw/node-label.csv.gz", 0, "0,1"),
     r"raw/node-label.csv.gz \(y\): line 1 .*single-label"),
    ("labels-short", lambda r: rewrite(r / "raw/node-label.csv.gz", "0\n1\n"),
     r"raw/node-label.csv.gz \(y\): .*\[60\]"),
    ("edge-columns", _replace_line("raw/edge.csv.gz", 0, "1,2,3"),
     r"raw/edge.csv.gz \(edge_index\): could not be parsed"),
    ("edge-past-n", _replace_line("raw/edge.csv.gz", 0, "0,60"), r"raw/edge.csv.gz \(edge_index\): .*node index 60"),
    ("split-past-n", _replace_line("split/random/valid.csv.gz", 0, "75"),
     r"split/random/valid.csv.gz \(val split\): .*node index 75"),
    ("split-overlap", _train_node_into_test, r"split/random/test.csv.gz \(test split\): .*also in"),
    ("train-empty", lambda r: rewrite(r / "split/random/train.csv.gz", ""),
     r"split/random/train.csv.gz \(train split\): is empty"),
    ("split-columns", lambda r: rewrite(r / "split/random/train.csv.gz", "1,2\n3,4\n"),
     r"train.csv.gz \(train split\): .*one node"),
]


@pytest.mark.parametrize("undirected", [True, False], ids=["undirected", "directed"])
@pytest.mark.parametrize("change, message", [c[1:] for c in BAD_DIRS], ids=[c[0] for c in BAD_DIRS])
def test_bad_directories_raise_naming_the_file(tmp_path, change, message, undirected):
    root = write_ogb_dir(tmp_path / "d", *random_graph_data())
    change(root)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(root))}.*{message}"):
        load_ogb(root, undirected=undirected)


def test_not_a_directory(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        load_ogb(tmp_path / "absent")
