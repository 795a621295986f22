"""Shared test setup: run the Triton backend under its interpreter when there is no GPU, and
the fixtures every suite uses. Helpers live in :mod:`ffkernels.testing` (import them from there)."""
from __future__ import annotations

import os

import torch

# Must happen before anything imports triton: Triton reads it at import time.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from ffkernels.testing import DEVICES, KERNEL_BACKENDS  # noqa: E402


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


# Multi-process tests (ranks on 127.0.0.1, time-boxed collectives, torchrun) share one pytest-xdist
# worker (``--dist loadgroup``), so that two of them never run at once: on a 2-core machine their
# ranks would starve each other past the timeouts they assert.
MULTI_PROCESS = ("tests/distributed/", "tests/benchmarking/test_distributed_suite.py",
                 "tests/algorithms/test_memory_depth.py", "tests/benchmarking/test_time_to_accuracy.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.replace("\\", "/")
        if any(path.startswith(p) for p in MULTI_PROCESS) or "nproc" in item.name:
            item.add_marker(pytest.mark.xdist_group("processes"))


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per worker: two workers already fill the two cores
    torch.set_num_threads(1)
