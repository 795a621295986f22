"""``.npz`` files in the key format of the bundled datasets.

Keys: dense ``x`` or CSR ``x_indptr``/``x_indices``/``x_data``/``x_shape``; ``y``; optional
``edge_index`` (absent = MLP data) and ``edge_weight``; ``train_idx``/``val_idx``/``test_idx``,
or ``train_idx_0``, ``val_idx_0``, ... for several splits (``val_idx`` may be absent for MLP data).
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from ._checks import SPLIT_KINDS, Labels, assemble, check_split_number, fail

CSR_KEYS = ("x_indptr", "x_indices", "x_data", "x_shape")
_SUFFIXED = re.compile(r"^(train|val|test)_idx_(\d+)$")


def _open(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array (a .npy file), not an .npz archive of named arrays")
    return archive


def _split_keys(keys, where: str) -> list:
    """``[{kind: key}]`` per split: the ``_K``-suffixed keys when any exist, else the plain ones."""
    suffixed = {}
    for key in keys:
        match = _SUFFIXED.match(key)
        if match:
            suffixed.setdefault(int(match.group(2)), set()).add(match.group(1))
    if not suffixed:
        return [{kind: f"{kind}_idx" for kind in SPLIT_KINDS}]
    count = max(suffixed) + 1
    for k in range(count):
        if "train" not in suffixed.get(k, ()):  # a gap in the numbering is a missing split, not a shorter list
            fail(f"{where}: train_idx_{k}", f"missing key (the file has split keys up to _{count - 1})")
    return [{kind: f"{kind}_idx_{k}" for kind in SPLIT_KINDS} for k in range(count)]


def npz_num_splits(path) -> int:
    """How many splits an ``.npz`` offers (reads the key list only, no arrays)."""
    path = Path(path)
    with _open(path) as archive:
        return len(_split_keys(archive.files, str(path)))


def _read(archive, key: str, where: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as err:  # an object array, which allow_pickle=False refuses
        fail(f"{where}: {key}", f"cannot be read without pickle ({err}); store numeric arrays")


def _csr_features(archive, where: str) -> np.ndarray:
    missing = [key for key in CSR_KEYS if key not in archive.files]
    if missing:
        fail(f"{where}: {', '.join(missing)}", "missing key(s) (CSR features need "
                                               f"{', '.join(CSR_KEYS)}; or store dense features as 'x')")
    indptr, indices, values, shape = (_read(archive, key, where) for key in CSR_KEYS)
    if shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer) or (shape < 0).any():
        fail(f"{where}: x_shape", f"must be two non-negative ints [num_nodes, num_features], got {shape!r}")
    n, f = (int(v) for v in shape)
    for key, arr in (("x_indptr", indptr), ("x_indices", indices)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            fail(f"{where}: {key}", f"must be a 1-D integer array, got {arr.dtype} of shape {arr.shape}")
    if indptr.shape[0] != n + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any():
        fail(f"{where}: x_indptr", f"must be {n + 1} non-decreasing offsets starting at 0 (x_shape is {n} x {f})")
    nnz = int(indptr[-1])
    if indices.shape[0] != nnz or values.shape != (nnz,):
        fail(f"{where}: x_indices, x_data", f"must both have x_indptr[-1] = {nnz} entries, got "
                                            f"{indices.shape[0]} and {values.shape}")
    if nnz and (indices.min() < 0 or indices.max() >= f):
        fail(f"{where}: x_indices", f"column indices must be in [0, {f})")
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        fail(f"{where}: x_data", f"must be numbers, got {values.dtype}")
    x = np.zeros((n, f), dtype=np.float32)
    rows = np.repeat(np.arange(n), np.diff(indptr))
    np.add.at(x, (rows, indices), values.astype(np.float32))  # duplicate entries sum, as in scipy's CSR
    return x


def load_npz(path, split: int = 0):
    """Load an ``.npz`` in the bundled key format as a validated :class:`Dataset` (on the CPU).

    Args:
        path: the ``.npz`` file (read with ``allow_pickle=False``).
        split: which split, for files with ``train_idx_0``, ``train_idx_1``, ... keys.

    Raises:
        FileNotFoundError: no such file.
        ValueError: naming the file and the key (missing keys, bad shapes, labels, splits).
    """
    path = Path(path)
    where = str(path)
    with _open(path) as archive:
        keys = set(archive.files)
        per_split = _split_keys(keys, where)
        split = check_split_number(split, len(per_split), where)
        split_keys = per_split[split]
        has_graph = "edge_index" in keys
        required = ["y", split_keys["train"], split_keys["test"]] + ([split_keys["val"]] if has_graph else [])
        missing = [key for key in required if key not in keys]
        if missing:
            fail(f"{where}: {', '.join(missing)}", "missing key(s)")
        x = _read(archive, "x", where) if "x" in keys else _csr_features(archive, where)
        wanted = ["y", "edge_index", "edge_weight"] + list(split_keys.values())
        arrays = {key: _read(archive, key, where) for key in wanted if key in keys}
    labels = Labels(where, **split_keys)
    return assemble(x, arrays.get("edge_index"), arrays["y"], arrays[split_keys["train"]],
                    arrays.get(split_keys["val"]), arrays[split_keys["test"]], labels, name=path.stem,
                    source=where, edge_weight=arrays.get("edge_weight"), split=split)
