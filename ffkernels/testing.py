"""Helpers for testing code that uses ffkernels (and for ffkernels' own tests).

- :func:`usable_backends` / :func:`require_backend`: which kernel backends can run an op for a
  device and dtype here, so one test can check every usable backend against the reference;
- :data:`DEVICES`: ``["cpu"]`` plus ``"cuda"`` when a GPU is present.

Importing this module does not import triton; to run the Triton backend on a CPU-only machine,
set ``TRITON_INTERPRET=1`` before anything imports triton (ffkernels' ``tests/conftest.py`` does).
"""
from __future__ import annotations

import torch

from . import backends as _registry
from .backends import BACKEND_NAMES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNEL_BACKENDS = tuple(name for name in BACKEND_NAMES if name != "reference")


def backend_module(name: str):
    """The module implementing backend ``name`` (``NAME``, ``supports``, the op functions)."""
    return _registry._module(name)


def usable_backends(op: str, device, dtype, include_reference: bool = False) -> list:
    """Backends that are available here and support ``op`` for ``dtype`` tensors on ``device``."""
    device = torch.device(device)
    names = []
    for name, info in _registry.available().items():
        if not info["available"] or (name == "reference" and not include_reference):
            continue
        if backend_module(name).supports(op, device, dtype):
            names.append(name)
    return names


def require_backend(backend: str, op: str, device, dtype) -> None:
    """Skip the calling pytest test when ``backend`` cannot run ``op`` here (with the reason)."""
    import pytest

    info = _registry.available()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend} unavailable: {info['reason']}")
    if not backend_module(backend).supports(op, torch.device(device), dtype):
        pytest.skip(f"backend {backend} does not support {op} for {dtype} on {torch.device(device).type}")


__all__ = ["DEVICES", "KERNEL_BACKENDS", "backend_module", "usable_backends", "require_backend"]
