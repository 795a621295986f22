"""Shared test setup: run the Triton backend under its interpreter when there is no GPU,
and list the backends usable for a given op / device / dtype (so every backend that is
usable here -- cpu, triton, cuda -- is checked against the reference by the same tests).
"""
from __future__ import annotations

import importlib
import os

import torch

# Must happen before anything imports triton: Triton reads it at import time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

import ffkernels  # noqa: E402

# ``ffkernels.backends`` the attribute is the function; the registry module is this one.
_registry = importlib.import_module("ffkernels.backends")


def backend_module(name: str):
    """The module implementing backend ``name`` (``NAME``, ``supports``, the op functions)."""
    return _registry._module(name)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNEL_BACKENDS = ("cpu", "triton", "cuda")  # everything but the reference itself


def usable_backends(op: str, device, dtype, include_reference: bool = False) -> list[str]:
    """Backends that are available here and support ``op`` for ``dtype`` tensors on ``device``."""
    device = torch.device(device)
    names = []
    for name, info in ffkernels.backends().items():
        if not info["available"] or (name == "reference" and not include_reference):
            continue
        if backend_module(name).supports(op, device, dtype):
            names.append(name)
    return names


def require_backend(backend: str, op: str, device, dtype) -> None:
    """Skip the calling test when ``backend`` cannot run ``op`` here."""
    info = ffkernels.backends()[backend]
    if not info["available"]:
        pytest.skip(f"backend {backend} unavailable: {info['reason']}")
    if not backend_module(backend).supports(op, torch.device(device), dtype):
        pytest.skip(f"backend {backend} does not support {op} for {dtype} on {torch.device(device).type}")


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(params=KERNEL_BACKENDS)
def backend(request):
    """A non-reference backend name (tests call require_backend to skip unusable ones)."""
    return request.param


@pytest.fixture
def one_thread():
    """One intra-op thread for a test: the training runs in the tests are small-matrix and
    scatter bound, and a second OpenMP thread stalls whenever another process holds a core
    (measured on the 2-core machine: index_add_ 0.2 ms on 1 thread, 176 ms on 2 under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
