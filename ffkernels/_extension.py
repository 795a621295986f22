"""Loading the compiled extension ``ffkernels._C`` (C++ CPU kernels, CUDA C++ when built).

Importing ``ffkernels._C`` registers the ``torch.ops.ffkernels.*`` custom ops. The package
still imports and works (reference and Triton backends) when the extension is missing.
"""
from __future__ import annotations

import torch  # noqa: F401  (loads libc10/libtorch, which ffkernels._C links against)

_state = {"module": None, "error": None, "tried": False}


def extension():
    """The loaded ``ffkernels._C`` module, or None when it could not be loaded."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            from . import _C  # noqa: F401  (registers torch.ops.ffkernels.*)
            _state["module"] = _C
        except Exception as exc:  # ImportError, or an undefined symbol from a torch mismatch
            _state["error"] = f"the compiled extension ffkernels._C could not be loaded ({exc}); reinstall with `pip install --no-build-isolation .`"
    return _state["module"]


def extension_error() -> str | None:
    extension()
    return _state["error"]
