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


def keep_mask(shape, p: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """A boolean dropout mask: each entry True (kept) with probability ``1 - p``.

    Drawn as 16-bit uniform lanes, four per 64-bit random word, so the generator is called once
    per four entries (``torch.rand(shape) >= p`` calls it once per entry: about 5x slower on
    one CPU thread at 2.5e5 entries). ``p`` is rounded to a multiple of ``1/65536`` (the rate
    differs from ``p`` by at most 7.7e-6).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    shape = tuple(shape) if not isinstance(shape, int) else (shape,)
    n = 1
    for s in shape:
        n *= int(s)
    words = torch.randint(-2 ** 63, 2 ** 63 - 1, ((n + 3) // 4,), dtype=torch.int64, generator=generator,
                          device=device)
    lanes = words.view(torch.int16)[:n]  # uniform on [-32768, 32767]
    return (lanes >= round(p * 65536) - 32768).view(shape)


def draw_seed(generator: torch.Generator | None = None) -> int:
    """One seed for :func:`ffkernels.ops.dropout` from ``generator``: a trainer draws one per mask
    from its own (checkpointed) generator, so a resumed run draws the same masks."""
    return int(torch.randint(0, 2 ** 63 - 1, (), generator=generator, dtype=torch.int64))
