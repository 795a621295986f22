"""Backend registry: which implementations of the ops are usable here, and which to pick.

Four backends share one semantics (the ``reference`` one) and one test-suite:

- ``reference``: plain torch, any device, the specification and the fallback;
- ``cpu``: the C++/OpenMP kernels of the compiled extension ``ffkernels._C``;
- ``triton``: Triton kernels for CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``);
- ``cuda``: CUDA C++ kernels of the extension, for the ops where they beat Triton.

A backend module exposes ``NAME``, ``availability() -> str | None`` (None = usable, else the
reason it is not), ``supports(op, device, dtype) -> bool`` and the kernel-level op functions.
"""
from __future__ import annotations

import importlib
import os

import torch

BACKEND_NAMES = ("reference", "cpu", "triton", "cuda")

# For each op and device type: backends in order of preference (fastest first). The
# default backend is the first one that is usable here and supports the input dtype.
PREFERENCE = {
    # Triton on CPU tensors is only its interpreter (tests): never a default.
    "cpu": ("cpu", "reference"),
    "cuda": ("cuda", "triton", "reference"),
}
OP_PREFERENCE = {
    # Triton beats the CUDA C++ kernels for the fused dense epilogues; CUDA C++ only
    # implements the sparse aggregation.
    ("goodness_loss_grad", "cuda"): ("triton", "cuda", "reference"),
    ("linear_goodness_step", "cuda"): ("triton", "cuda", "reference"),
}

_modules: dict = {}


def _module(name: str):
    if name not in _modules:
        _modules[name] = importlib.import_module(f"ffkernels.backends.{name}_backend"
                                                 if name != "reference" else "ffkernels.backends.reference")
    return _modules[name]


def backends() -> dict:
    """Which backends are usable here, and for each one that is not, why.

    Returns:
        ``{name: {"available": bool, "reason": str | None}}`` for
        ``reference``, ``cpu``, ``triton`` and ``cuda``.
    """
    out = {}
    for name in BACKEND_NAMES:
        try:
            reason = _module(name).availability()
        except Exception as exc:  # a backend that cannot even be imported is unusable, not fatal
            reason = f"failed to import: {exc}"
        out[name] = {"available": reason is None, "reason": reason}
    return out


def resolve(op: str, backend: str | None, device: torch.device, dtype: torch.dtype):
    """Return the backend module to run ``op`` for tensors on ``device`` of ``dtype``.

    ``backend=None`` picks the fastest usable one (``FFKERNELS_BACKEND`` overrides the
    default); a named backend that cannot serve raises ``ValueError`` with the reason.
    """
    if backend is None:
        backend = os.environ.get("FFKERNELS_BACKEND") or None
    if backend is not None:
        if backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {list(BACKEND_NAMES)} or None, got {backend!r}")
        module = _module(backend)
        reason = module.availability()
        if reason is not None:
            raise ValueError(f"backend={backend!r} is not usable here: {reason}")
        if not module.supports(op, device, dtype):
            raise ValueError(f"backend={backend!r} does not support {op} for {dtype} tensors on {device.type}")
        return module
    order = OP_PREFERENCE.get((op, device.type), PREFERENCE.get(device.type, ("reference",)))
    for name in order:
        try:
            module = _module(name)
            if module.availability() is None and module.supports(op, device, dtype):
                return module
        except ImportError:
            continue
    return _module("reference")
