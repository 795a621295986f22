"""OGB node-property-prediction datasets already on disk, in OGB's raw CSV layout.

Nothing is downloaded: point :func:`load_ogb` at a directory OGB (or you) unpacked::

    <root>/raw/edge.csv.gz          E rows "src,dst" (no header)
    <root>/raw/node-feat.csv.gz     N rows of F comma-separated floats
    <root>/raw/node-label.csv.gz    N rows, one label each; empty or NaN = unlabelled
    <root>/split/<name>/train.csv.gz, valid.csv.gz, test.csv.gz   one node index per line

Uncompressed ``.csv`` files are accepted as well.
"""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
import torch

from ._checks import Labels, assemble, check_edge_index, fail

RAW_FILES = ("edge", "node-feat", "node-label")
SPLIT_FILES = {"train": "train", "val": "valid", "test": "test"}


def _find(directory: Path, stem: str, where: str) -> Path:
    for candidate in (directory / f"{stem}.csv.gz", directory / f"{stem}.csv"):
        if candidate.is_file():
            return candidate
    fail(where, f"missing file {directory / stem}.csv.gz")


def _open_text(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _table(path: Path, dtype, label: str) -> np.ndarray:
    """A comma-separated numeric table, always 2-D (``[0, 0]`` for an empty file)."""
    try:
        with _open_text(path) as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # numpy warns on an empty file; we check sizes ourselves
            table = np.loadtxt(handle, delimiter=",", dtype=dtype, ndmin=2)
    except (ValueError, OSError, EOFError) as err:
        fail(label, f"could not be parsed as comma-separated numbers ({err})")
    return table if table.size else np.zeros((0, 0), dtype=dtype)


def _labels(path: Path, label: str) -> np.ndarray:
    """One label per line; empty lines and NaN mean unlabelled (-1). Blank lines are rows here."""
    try:
        with _open_text(path) as handle:
            lines = handle.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as err:
        fail(label, f"could not be read ({err})")
    for number, line in enumerate(lines):
        if "," in line:
            fail(label, f"line {number + 1} has several columns; only single-label classification is supported")
    text = np.array([line.strip() or "nan" for line in lines])
    try:
        values = text.astype(np.float64) if len(lines) else np.zeros(0)
    except ValueError:
        bad = next(i for i, s in enumerate(text) if not _is_number(s))
        fail(label, f"line {bad + 1} is not a number: {lines[bad]!r}")
    unlabelled = np.isnan(values)
    known = values[~unlabelled]
    if (known != np.round(known)).any() or np.isinf(known).any():
        bad = int(np.flatnonzero(~unlabelled & ((values != np.round(values)) | np.isinf(values)))[0])
        fail(label, f"line {bad + 1} holds {lines[bad]!r}; labels must be integer class ids")
    return np.where(unlabelled, -1, values).astype(np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def ogb_split_names(root) -> list:
    """The split directories under ``<root>/split``, sorted by name."""
    root = Path(root)
    split_dir = root / "split"
    if not split_dir.is_dir():
        fail(str(root), "missing directory split/ (expected split/<name>/{train,valid,test}.csv.gz)")
    names = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir())
    if not names:
        fail(str(split_dir), "holds no split directory (expected split/<name>/{train,valid,test}.csv.gz)")
    return names


def choose_split_name(root, split_name) -> str:
    names = ogb_split_names(root)
    if split_name is None:
        if len(names) > 1:
            fail(str(Path(root) / "split"), f"holds several splits {names}; pick one with split_name=")
        return names[0]
    if split_name not in names:
        fail(str(Path(root) / "split"), f"has no split {split_name!r}; available: {names}")
    return split_name


def load_ogb(path, split_name: str | None = None, undirected: bool = True):
    """Load an OGB node-property-prediction directory (raw CSV layout) as a :class:`Dataset`.

    Args:
        path: the dataset directory (the one holding ``raw/`` and ``split/``).
        split_name: which ``split/<name>`` to use; may be omitted when there is only one.
        undirected: add every edge's reverse and drop duplicate edges (the usual GCN setup on
            ogbn-arxiv, whose raw edges are directed citations); False keeps the file's edges
            as they are, in file order.

    Raises:
        ValueError: naming the file and the field (missing files, bad rows, labels, splits).
    """
    root = Path(path)
    where = str(root)
    if not root.is_dir():
        fail(where, "is not a directory")
    raw = root / "raw"
    if not raw.is_dir():
        fail(where, "missing directory raw/ (expected raw/edge.csv.gz, raw/node-feat.csv.gz, "
                    "raw/node-label.csv.gz and split/<name>/)")
    files = {stem: _find(raw, stem, where) for stem in RAW_FILES}
    split_name = choose_split_name(root, split_name)
    split_files = {kind: _find(root / "split" / split_name, stem, where) for kind, stem in SPLIT_FILES.items()}
    rel = {key: str(file.relative_to(root)) for key, file in list(files.items()) + list(split_files.items())}
    labels = Labels(where, x=f"{rel['node-feat']} (x)", y=f"{rel['node-label']} (y)",
                    edge_index=f"{rel['edge']} (edge_index)",
                    **{kind: f"{rel[kind]} ({kind} split)" for kind in SPLIT_FILES})

    x = _table(files["node-feat"], np.float32, labels["x"])
    num_nodes = x.shape[0]
    y = _labels(files["node-label"], labels["y"])
    edges = _table(files["edge"], np.int64, labels["edge_index"])
    if edges.size and edges.shape[1] != 2:
        fail(labels["edge_index"], f"rows must be 'src,dst' (2 columns), got {edges.shape[1]} columns")
    edge_index = torch.from_numpy(edges.reshape(-1, 2).T.copy())
    if undirected:
        # Range-check first: the (src * N + dst) dedupe key is only meaningful for valid indices.
        edge_index = check_edge_index(edge_index, num_nodes, labels["edge_index"])
        both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
        key = torch.unique(both[0] * num_nodes + both[1])
        edge_index = torch.stack([key // num_nodes, key % num_nodes])
    splits = {}
    for kind, file in split_files.items():
        table = _table(file, np.int64, labels[kind])
        if table.size and table.shape[1] != 1:
            fail(labels[kind], f"must hold one node index per line, got {table.shape[1]} columns")
        splits[kind] = table.reshape(-1)
    return assemble(x, edge_index, y, splits["train"], splits["val"], splits["test"], labels, name=root.name,
                    source=where, extra={"split_name": split_name, "undirected": bool(undirected)})
