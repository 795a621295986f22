"""The datasets shipped inside the package (nothing is ever downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..graph import Graph
from .dataset import Dataset

DATA_DIR = Path(__file__).resolve().parent / "data"
GRAPH_DATASETS = ("cora", "citeseer", "cora_ml")
MLP_DATASETS = ("digits",)
DATASETS = GRAPH_DATASETS + MLP_DATASETS
NUM_SPLITS = {"cora": 1, "citeseer": 1, "cora_ml": 5, "digits": 1}


def _dense_features(data) -> np.ndarray:
    indptr, indices, values = data["x_indptr"], data["x_indices"], data["x_data"]
    n, f = (int(v) for v in data["x_shape"])
    x = np.zeros((n, f), dtype=np.float32)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    x[rows, indices] = values
    return x


def load(name: str, split: int = 0, device="cpu") -> Dataset:
    """Load a bundled dataset.

    Args:
        name: ``cora``, ``citeseer``, ``cora_ml`` or ``digits``.
        split: split number (``cora_ml``: 0..4; others: 0).
        device: where to put the tensors.

    Raises:
        ValueError: unknown name or split out of range.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"name must be one of {list(DATASETS)}, got {name!r}")
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < NUM_SPLITS[name]:
        raise ValueError(f"split must be an int in [0, {NUM_SPLITS[name]}) for {name}, got {split!r}")
    with np.load(DATA_DIR / f"{name}.npz") as data:
        if name == "digits":
            x = torch.from_numpy(data["x"].astype(np.float32) / 16.0)
            y = torch.from_numpy(data["y"])
            ds = Dataset(name, x, y, torch.from_numpy(data["train_idx"]), torch.empty(0, dtype=torch.int64),
                         torch.from_numpy(data["test_idx"]), int(y.max()) + 1, source=name)
            return ds.to(device)
        x = _dense_features(data)
        if name == "cora_ml":
            # The ForwardGNN paper row-normalises the raw binary features (row / row sum).
            sums = x.sum(axis=1, keepdims=True)
            x = x / np.where(sums > 0, sums, 1.0)
        y = torch.from_numpy(data["y"].astype(np.int64))
        suffix = f"_{split}" if name == "cora_ml" else ""
        idx = {k: torch.from_numpy(data[f"{k}_idx{suffix}"].astype(np.int64)) for k in ("train", "val", "test")}
        edge_index = torch.from_numpy(data["edge_index"].astype(np.int64))
    graph = Graph.from_edge_index(edge_index, x.shape[0])
    ds = Dataset(name, torch.from_numpy(x), y, idx["train"], idx["val"], idx["test"], int(y.max()) + 1,
                 graph, edge_index, split, source=name)
    return ds.to(device)
