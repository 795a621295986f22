"""Users' own graphs train with ``ffkernels.fit`` and with the command line: a PyG ``Data`` built
from a random graph, an ``.npz`` the user writes and an OGB-format directory."""
from __future__ import annotations

import csv
import json

import pytest
import torch

import ffkernels
from ffkernels.cli import main
from ffkernels.datasets import Dataset
from ffkernels.testing import random_graph_data, write_npz, write_ogb_dir

OPTS = dict(layers=2, hidden=16, epochs=30, patience=50, lr=1e-2, progress=False)


@pytest.fixture(scope="module")
def graph():
    return random_graph_data(num_nodes=150, num_features=12, num_classes=3, seed=2)


def _sources(graph, tmp_path):
    x, edge_index, y, train_idx, val_idx, test_idx = graph
    npz = write_npz(tmp_path / "mine.npz", x, edge_index, y, train_idx, val_idx, test_idx)
    ogb = write_ogb_dir(tmp_path / "ogb_mine", x, edge_index, y, train_idx, val_idx, test_idx)
    return {"npz": str(npz), "ogb": str(ogb), "tensors": Dataset.from_tensors(x, edge_index, y, train_idx, val_idx,
                                                                              test_idx)}


def test_pyg_data_trains_and_predicts(graph, one_thread):
    tg = pytest.importorskip("torch_geometric.data")  # an optional third-party package, not ours
    x, edge_index, y, train_idx, val_idx, test_idx = graph
    n = x.shape[0]
    masks = {name: torch.zeros(n, dtype=torch.bool).index_fill_(0, idx, True)
             for name, idx in (("train_mask", train_idx), ("val_mask", val_idx), ("test_mask", test_idx))}
    data = tg.Data(x=x, edge_index=edge_index, y=y, **masks)
    trained = ffkernels.fit(data, "sf", **OPTS)
    assert trained.metrics["test_accuracy"] > 0.6, trained.metrics  # 3 classes: chance 1/3
    pred = trained.predict(data)
    assert pred.shape == (n,) and pred.dtype == torch.int64
    assert float((pred[test_idx] == y[test_idx]).double().mean()) == pytest.approx(trained.metrics["test_accuracy"])
    emb = trained.embed(data, concat=True)
    assert emb.shape == (n, 2 * 16)


@pytest.mark.parametrize("kind", ["npz", "ogb", "tensors"])
def test_user_files_and_tensors_train_with_fit(graph, tmp_path, kind, one_thread):
    source = _sources(graph, tmp_path)[kind]
    trained = ffkernels.fit(source, "sf", **OPTS)
    assert trained.metrics["test_accuracy"] > 0.6, (kind, trained.metrics)
    assert trained.evaluate(source) == trained.metrics


@pytest.mark.parametrize("kind", ["npz", "ogb"])
def test_user_files_train_and_predict_with_the_cli(graph, tmp_path, kind):
    source = _sources(graph, tmp_path)[kind]
    model, report, preds = tmp_path / "m.pt", tmp_path / "r.json", tmp_path / "p.csv"
    assert main(["train", "--dataset", source, "--layers", "2", "--hidden", "16", "--epochs", "30", "--lr", "0.01",
                 "--quiet", "--save-model", str(model), "--json", str(report)]) == 0
    rep = json.loads(report.read_text())
    assert rep["data_source"] == source and rep["test_accuracy"] > 0.6
    assert main(["predict", str(model), "--dataset", source, "--out", str(preds), "--quiet"]) == 0
    rows = list(csv.reader(preds.open()))
    assert rows[0] == ["node", "prediction"] and len(rows) == graph[0].shape[0] + 1


def test_predict_refuses_data_of_another_width(graph, tmp_path, one_thread):
    trained = ffkernels.fit(_sources(graph, tmp_path)["tensors"], "sf", **dict(OPTS, epochs=2))
    other = random_graph_data(num_nodes=60, num_features=5, num_classes=3, seed=1)
    with pytest.raises(ValueError, match="5 features per node.*trained on 12"):
        trained.predict(Dataset.from_tensors(*other))


def test_bad_user_file_is_a_one_line_cli_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    import numpy as np
    np.savez(bad, x=np.zeros((4, 2), dtype=np.float32))
    assert main(["train", "--dataset", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.npz" in err, err
