"""The :class:`Dataset` container every trainer consumes."""
from __future__ import annotations

import hashlib
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
        extra: free-form metadata (e.g. ``split_name`` for OGB data).
        edge_weight: optional ``[E]`` float32 weight per edge, in ``edge_index`` order (the
            order :func:`ffkernels.ops.aggregate` expects); None when the data has none.
        source: where the data came from, for reports: the bundled name, the file or
            directory path, ``"tensors"`` or ``"PyG Data"`` (defaults to ``name``).

    Build one from your own data with :meth:`from_tensors`, :meth:`from_pyg`,
    :func:`ffkernels.datasets.load_npz`, :func:`ffkernels.datasets.load_ogb` or
    :func:`ffkernels.datasets.resolve`; those validate every field. Constructing the class
    directly validates nothing.
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
    edge_weight: torch.Tensor | None = None
    source: str | None = None
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.source is None:
            self.source = self.name

    def __setattr__(self, key, value):
        # Reassigning a field that defines the problem makes the cached fingerprint stale.
        if key in _CONTENT_FIELDS and self.__dict__.get("_fingerprint") is not None:
            object.__setattr__(self, "_fingerprint", None)
        object.__setattr__(self, key, value)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_tensors(cls, x, edge_index, y, train_idx, val_idx, test_idx, *, num_classes: int | None = None,
                     name: str = "tensors", edge_weight=None) -> "Dataset":
        """Validate tensors (or numpy arrays) and build a Dataset on ``x``'s device.

        Tensors that need no conversion are kept, not copied (as PyG does): edit them in place
        afterwards and :meth:`fingerprint` no longer describes the data.

        Args:
            x: ``[N, F]`` real features (converted to float32; NaN/Inf rejected).
            edge_index: ``[2, E]`` integer (row 0 source, row 1 destination), or None for MLP data.
            y: ``[N]`` (or ``[N, 1]``) integer labels, -1 for unlabelled nodes.
            train_idx, val_idx, test_idx: int node indices or ``[N]`` bool masks; pairwise
                disjoint, every node labelled. ``val_idx`` may be None/empty for MLP data only.
            num_classes: class count (default ``max(y) + 1``); every label must be below it.
            name: the dataset's name in reports.
            edge_weight: optional ``[E]`` real weights, in ``edge_index`` order.

        Raises:
            ValueError: naming ``tensors`` and the field (see ``docs/data.md`` for the checks).
        """
        from ._checks import Labels, assemble
        return assemble(x, edge_index, y, train_idx, val_idx, test_idx, Labels("tensors"), num_classes=num_classes,
                        name=name, source="tensors", edge_weight=edge_weight)

    @classmethod
    def from_pyg(cls, data, split: int = 0) -> "Dataset":
        """Build a Dataset from a PyG ``Data`` (or any object with the same attributes).

        Reads ``x``, ``edge_index``, ``y``, optional ``edge_weight``, and the split from
        ``train_mask``/``val_mask``/``test_mask`` (``[N]``, or ``[N, S]`` for S splits: column
        ``split`` is taken) or else ``train_idx``/``val_idx``/``test_idx``. torch_geometric need
        not be installed.

        Raises:
            ValueError: naming ``PyG Data`` and the attribute.
        """
        from .pyg import from_pyg
        return from_pyg(data, split)

    # ------------------------------------------------------------------ properties
    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def to(self, device) -> "Dataset":
        device = torch.device(device)
        moved = Dataset(self.name, self.x.to(device), self.y.to(device), self.train_idx.to(device),
                        self.val_idx.to(device), self.test_idx.to(device), self.num_classes,
                        None if self.graph is None else self.graph.to(device),
                        None if self.edge_index is None else self.edge_index.to(device), self.split,
                        dict(self.extra), None if self.edge_weight is None else self.edge_weight.to(device),
                        self.source)
        moved._fingerprint = self._fingerprint  # same content, so the same digest (it is device independent)
        return moved

    def fingerprint(self) -> str:
        """A 16-hex-digit digest of the content that defines the problem, computed once.

        Covers the shapes, dtypes and bytes of ``x``, ``y``, ``edge_index``, ``edge_weight``
        and the three split index tensors, plus ``num_classes``; not ``name`` or ``source``, so
        the same data loaded from a file or from tensors agrees. Independent of the device.
        Reassigning a field resets the cache; modifying a tensor in place does not, so
        build a new Dataset after editing tensors.
        """
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=8)
            digest.update(f"num_classes={int(self.num_classes)};".encode())
            for key in ("x", "y", "edge_index", "edge_weight", "train_idx", "val_idx", "test_idx"):
                _hash_tensor(digest, key, getattr(self, key))
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, split={self.split}, nodes={self.num_nodes}, features={self.num_features}, "
                f"classes={self.num_classes}, edges={0 if self.graph is None else self.graph.num_edges}, "
                f"train/val/test={len(self.train_idx)}/{len(self.val_idx)}/{len(self.test_idx)})")


_CONTENT_FIELDS = frozenset({"x", "y", "edge_index", "edge_weight", "train_idx", "val_idx", "test_idx",
                             "num_classes"})


def _hash_tensor(digest, key: str, tensor) -> None:
    if tensor is None:
        digest.update(f"{key}=None;".encode())
        return
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    # Shape and dtype go in too: the same bytes as [2, 3] and [3, 2] are different data.
    digest.update(f"{key}:{flat.dtype}:{tuple(tensor.shape)};".encode())
    digest.update(flat.view(torch.uint8).numpy())
