"""Small functional pieces shared by the layers and algorithms (no autograd needed)."""
from __future__ import annotations

import torch

NORMALIZATIONS = ("l2", "rms", "none")


def normalize_rows(x: torch.Tensor, kind: str | None = "l2", eps: float = 1e-8) -> torch.Tensor:
    """Row normalisation applied to every layer's input (ALGORITHMS.md section 0).

    ``l2``: ``x / (||x||_2 + eps)`` (ForwardGNN); ``rms``: ``x / (sqrt(mean(x^2)) + eps)``
    (Hinton); ``none``/None: ``x`` unchanged.
    """
    if kind is None or kind == "none":
        return x
    if kind == "l2":
        return x / (x.norm(dim=1, keepdim=True) + eps)
    if kind == "rms":
        return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)
    raise ValueError(f"normalize must be one of {list(NORMALIZATIONS)}, got {kind!r}")
