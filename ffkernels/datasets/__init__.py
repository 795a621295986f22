"""Datasets: the bundled ones (shipped inside the package: nothing is ever downloaded), your
own data (tensors, PyG ``Data``, ``.npz`` files, OGB directories on disk) and a generator.

- Graphs: ``cora``, ``citeseer`` (Planetoid public splits) and ``cora_ml`` (the ForwardGNN
  paper's five 64/16/20 splits, features row-normalised as the paper does).
- MLP data: ``digits`` (the 8x8 digits scikit-learn ships, from the UCI optdigits test set,
  BSD-3 licence; stored here as uint8 with a fixed seeded 80/20 train/test split, so
  scikit-learn is not needed).
- :func:`synthetic`: a seeded graph with learnable labels, 10^3 to 10^7 nodes.
- Your data: :meth:`Dataset.from_tensors`, :meth:`Dataset.from_pyg`, :func:`load_npz`,
  :func:`load_ogb`, or :func:`resolve`, which takes any of these sources (``docs/data.md``).
  Every field is validated; errors name the file (or source) and the field.
"""
from __future__ import annotations

from .bundled import DATA_DIR, DATASETS, GRAPH_DATASETS, MLP_DATASETS, NUM_SPLITS, load
from .dataset import Dataset
from .generator import synthetic
from .npz import load_npz
from .ogb import load_ogb
from .sources import num_splits, resolve

__all__ = ["Dataset", "load", "synthetic", "load_npz", "load_ogb", "resolve", "num_splits", "DATASETS",
           "GRAPH_DATASETS", "MLP_DATASETS", "NUM_SPLITS"]
