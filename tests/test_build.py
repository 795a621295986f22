"""The tests must exercise the compiled kernels: fail loudly when ``ffkernels._C`` is missing
(e.g. ``python -m pytest`` from a clean checkout imports the unbuilt source tree), instead of
silently skipping every cpu-backend test."""
from __future__ import annotations

import os

import pytest

import ffkernels


def test_compiled_cpu_extension_is_loaded():
    if os.environ.get("FFKERNELS_ALLOW_NO_EXTENSION") == "1":
        pytest.skip("FFKERNELS_ALLOW_NO_EXTENSION=1")
    info = ffkernels.available_backends()["cpu"]
    assert info["available"], (
        f"{info['reason']}; the tests imported {ffkernels.__file__}: run `pytest` against the installed "
        f"package, or build in place with `pip install --no-build-isolation -e .`")


def test_build_info_is_consistent():
    from ffkernels._extension import extension
    ext = extension()
    if ext is None:
        pytest.skip("extension not built")
    assert isinstance(ext.has_cuda(), bool)
    assert ext.num_threads() >= 1
    assert ffkernels.__version__ in str(ext.build_info())
