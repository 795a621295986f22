""":func:`resolve`: one entry point from "what the user named" to a validated :class:`Dataset`."""
from __future__ import annotations

import os
from pathlib import Path

from .bundled import DATASETS, NUM_SPLITS, load
from .dataset import Dataset
from .npz import load_npz, npz_num_splits
from .ogb import load_ogb, ogb_split_names
from .pyg import from_pyg, looks_like_pyg, pyg_num_splits

_ACCEPTED = ("a bundled dataset name, a Dataset, a PyG Data, or a path to an .npz file or an OGB "
             "directory (raw/ + split/)")


def _as_path(source):
    """The source as a Path when it names one (a bundled name wins over a same-named file)."""
    if isinstance(source, str):
        if source in DATASETS:
            return None
        if not os.path.exists(source):
            raise ValueError(f"{source!r} is neither a bundled dataset ({', '.join(DATASETS)}) nor an existing "
                             "path (.npz file or OGB directory)")
        return Path(source)
    if isinstance(source, os.PathLike):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"{path}: no such file or directory")
        return path
    return None


def _check_file_kind(path: Path) -> str:
    if path.is_dir():
        return "ogb"
    if path.suffix == ".npz":
        return "npz"
    raise ValueError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; expected an .npz "
                     "file or an OGB directory")


def _ogb_split(path: Path, split):
    """``split`` for an OGB directory: a split directory name, or its position in sorted names."""
    names = ogb_split_names(path)
    if isinstance(split, str):
        return split, names.index(split) if split in names else 0
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < len(names):
        raise ValueError(f"{path}: split {split!r} out of range: split/ holds {len(names)} split(s) {names} "
                         f"(0..{len(names) - 1}, in name order)")
    return names[split], split


def resolve(source, split=0, device="cpu") -> Dataset:
    """Turn whatever names the data into a validated :class:`Dataset` on ``device``.

    Args:
        source: a bundled name (``cora``, ``citeseer``, ``cora_ml``, ``digits``), a
            :class:`Dataset` (returned as is, moved to ``device``), a PyG ``Data`` (or any object
            with its attributes), or a path (``str`` or :class:`pathlib.Path`) to an ``.npz``
            file or an OGB directory. A string equal to a bundled name means the bundled data;
            pass ``Path("cora")`` or ``"./cora"`` for a file or directory of that name.
        split: the split number (``0 .. num_splits(source) - 1``). For an OGB directory with
            several ``split/<name>`` folders, split ``k`` is the ``k``-th name in sorted order;
            the name itself is accepted too, and ends up in ``data.extra["split_name"]``.
        device: where to put the tensors.

    Raises:
        ValueError: an unknown name, a path that does not exist, a bad split, or data that fails
            validation (the message names the file or source and the field).
        TypeError: a source of none of the accepted kinds.
    """
    if isinstance(source, Dataset):
        if split not in (0, source.split):
            raise ValueError(f"a Dataset holds one split (its split {source.split}); got split={split!r}")
        return source.to(device)
    path = _as_path(source)
    if path is None and isinstance(source, str):
        return load(source, split=split, device=device)
    if path is not None:
        if _check_file_kind(path) == "npz":
            return load_npz(path, split=split).to(device)
        split_name, position = _ogb_split(path, split)
        data = load_ogb(path, split_name=split_name)
        data.split = position
        return data.to(device)
    if looks_like_pyg(source):
        return from_pyg(source, split=split).to(device)
    raise TypeError(f"source must be {_ACCEPTED}; got {type(source).__name__}")


def num_splits(source) -> int:
    """How many splits ``source`` offers (1 for a single split), reading as little as it can.

    Bundled names: the known count; a Dataset: 1; a PyG Data: S of its ``[N, S]`` masks; an
    ``.npz``: from its key names, without loading arrays; an OGB directory: the number of
    ``split/<name>`` folders.
    """
    if isinstance(source, Dataset):
        return 1
    path = _as_path(source)
    if path is None and isinstance(source, str):
        return NUM_SPLITS[source]
    if path is not None:
        if _check_file_kind(path) == "npz":
            return npz_num_splits(path)
        return len(ogb_split_names(path))
    if looks_like_pyg(source):
        return pyg_num_splits(source)
    raise TypeError(f"source must be {_ACCEPTED}; got {type(source).__name__}")
