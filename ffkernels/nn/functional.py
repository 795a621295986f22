"""Small functional pieces shared by the layers and algorithms (no autograd needed)."""
from __future__ import annotations

import torch

NORMALIZATIONS = ("l2", "rms", "none")


def check_normalize(kind) -> None:
    """Raise ``ValueError`` unless ``kind`` names a row normalisation (or is None)."""
    if kind is not None and kind not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)} or None, got {kind!r}")


def normalize_rows(x: torch.Tensor, kind: str | None = "l2", eps: float = 1e-8, inplace: bool = False) -> torch.Tensor:
    """Row normalisation applied to every layer's input (docs/algorithms.md#notation).

    ``l2``: ``x / (||x||_2 + eps)`` (ForwardGNN); ``rms``: ``x / (sqrt(mean(x^2)) + eps)``
    (Hinton); ``none``/None: ``x`` unchanged. ``inplace=True`` overwrites ``x`` (for an input
    that is not needed afterwards: saves one copy of it).
    """
    if kind is None or kind == "none":
        return x
    if kind == "l2":
        norm = x.norm(dim=1, keepdim=True)
    elif kind == "rms":
        norm = x.pow(2).mean(dim=1, keepdim=True).sqrt_()
    else:
        raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)}, got {kind!r}")
    norm.add_(eps)
    return x.div_(norm) if inplace else x / norm
