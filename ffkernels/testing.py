"""Helpers for testing code that uses ffkernels (and for ffkernels' own tests).

- :func:`usable_backends` / :func:`require_backend`: which kernel backends can run an op for a
  device and dtype here, so one test can check every usable backend against the reference;
- :data:`DEVICES`: ``["cpu"]`` plus ``"cuda"`` when a GPU is present.

Importing this module does not import triton; to run the Triton backend on a CPU-only machine,
set ``TRITON_INTERPRET=1`` before anything imports triton (ffkernels' ``tests/conftest.py`` does).
"""
from __future__ import annotations

import importlib

import torch

from .backends import BACKEND_NAMES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNEL_BACKENDS = tuple(name for name in BACKEND_NAMES if name != "reference")


def backend_module(name: str):
    """The module implementing backend ``name`` (``NAME``, ``supports``, the op functions)."""
    return importlib.import_module("ffkernels.backends")._module(name)


def usable_backends(op: str, device, dtype, include_reference: bool = False) -> list:
    """Backends that are available here and support ``op`` for ``dtype`` tensors on ``device``."""
    from . import backends
    device = torch.device(device)
    names = []
    for name, info in backends().items():
        if not info["available"] or (name == "reference" and not include_reference):
            continue
        if backend_module(name).supports(op, device, dtype):
            names.append(name)
    return names


def require_backend(backend: str, op: str, device, dtype) -> None:
    """Skip the calling pytest test when ``backend`` cannot run ``op`` here (with the reason)."""
    import pytest

    from . import backends
    info = backends()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend} unavailable: {info['reason']}")
    if not backend_module(backend).supports(op, torch.device(device), dtype):
        pytest.skip(f"backend {backend} does not support {op} for {dtype} on {torch.device(device).type}")




def build_trainer(algo: str, data, **options):
    """The registered ``algo``'s :class:`~ffkernels.train.Trainer` on ``data`` with its model
    built from ``options`` (resolved as ``ffkernels.fit`` resolves them), without training:
    for tests that drive or inspect single steps."""
    from .api import resolve_run_options
    from .train.registry import get_algorithm
    spec = get_algorithm(algo)
    resolved = resolve_run_options(algo, options)
    dims = {"num_features": data.num_features, "num_classes": data.num_classes}
    model = spec.model(resolved, dims, spec.variant).to(data.x.device)
    return spec.trainer(spec, resolved, data, model)


__all__ = ["DEVICES", "KERNEL_BACKENDS", "backend_module", "usable_backends", "require_backend", "build_trainer"]
