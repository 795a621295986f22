"""The :class:`Dataset` container every trainer consumes."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..graph import Graph


@dataclass
class Dataset:
    """A node-classification (or MLP) dataset on one device.

    Attributes:
        name: dataset name.
        x: ``[N, F]`` float32 dense features.
        y: ``[N]`` int64 labels (-1 = unlabelled).
        train_idx, val_idx, test_idx: int64 node indices of the split (``val_idx`` may be
            empty for MLP data).
        num_classes: number of classes.
        graph: the :class:`ffkernels.Graph` (None for MLP data).
        edge_index: ``[2, E]`` int64 (None for MLP data).
        split: which split the indices belong to.
    """
    name: str
    x: torch.Tensor
    y: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor
    num_classes: int
    graph: Graph | None = None
    edge_index: torch.Tensor | None = None
    split: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def to(self, device) -> "Dataset":
        device = torch.device(device)
        return Dataset(self.name, self.x.to(device), self.y.to(device), self.train_idx.to(device),
                       self.val_idx.to(device), self.test_idx.to(device), self.num_classes,
                       None if self.graph is None else self.graph.to(device),
                       None if self.edge_index is None else self.edge_index.to(device), self.split,
                       dict(self.extra))

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, split={self.split}, nodes={self.num_nodes}, features={self.num_features}, "
                f"classes={self.num_classes}, edges={0 if self.graph is None else self.graph.num_edges}, "
                f"train/val/test={len(self.train_idx)}/{len(self.val_idx)}/{len(self.test_idx)})")
