"""Backend registry: which implementations of the ops are usable here, and which to pick.

Four backends share one semantics (the ``reference`` one) and one test-suite:

- ``reference``: plain torch, any device, the specification and the fallback;
- ``cpu``: the C++/OpenMP kernels of the compiled extension ``ffkernels._C``;
- ``triton``: Triton kernels for CUDA tensors (CPU tensors only under ``TRITON_INTERPRET=1``);
- ``cuda``: CUDA C++ kernels of the extension, for the ops where they beat Triton.

A backend module exposes ``NAME``, ``availability() -> str | None`` (None = usable, else the
reason it is not), ``supports(op, device, dtype) -> bool`` and the kernel-level op functions.

:func:`available` (also ``ffkernels.available_backends()``) reports which backends are usable.
:func:`resolve` is called on every op call, also inside ``torch.compile`` traces: it only
reads dictionaries filled once per process (no imports, no file-system probes), so a traced
layer does not break its graph there.
"""
from __future__ import annotations

import os
import sys
import types
import warnings

import torch

# Imported eagerly: all four are cheap (none imports triton or builds anything), and an
# import inside resolve() would break torch.compile graphs.
from . import cpu_backend, cuda_backend, reference, triton_backend

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
    ("sf_loss_grad", "cuda"): ("triton", "cuda", "reference"),
}

_modules = {"reference": reference, "cpu": cpu_backend, "triton": triton_backend, "cuda": cuda_backend}
# name -> reason (None = usable); computed once per process: availability does not change
# while a process runs, and re-probing it on every op call costs imports and syscalls.
_availability: dict = {}
# (op, backend, device type, dtype, FFKERNELS_BACKEND) -> backend module.
_resolved: dict = {}


def _module(name: str):
    return _modules[name]


def _reason(name: str):
    if name not in _availability:
        try:
            _availability[name] = _modules[name].availability()
        except Exception as exc:  # a backend that cannot even be probed is unusable, not fatal
            _availability[name] = f"failed to import: {exc}"
    return _availability[name]


def available() -> dict:
    """Which backends are usable here, and for each one that is not, why.

    Returns:
        ``{name: {"available": bool, "reason": str | None}}`` for
        ``reference``, ``cpu``, ``triton`` and ``cuda``.
    """
    out = {}
    for name in BACKEND_NAMES:
        reason = _reason(name)
        out[name] = {"available": reason is None, "reason": reason}
    return out


def backends() -> dict:
    """Deprecated name of :func:`available` (it shadowed the package ``ffkernels.backends``
    when exported as ``ffkernels.backends``); use ``ffkernels.available_backends()``."""
    warnings.warn("ffkernels.backends.backends() is deprecated: use ffkernels.available_backends()",
                  DeprecationWarning, stacklevel=2)
    return available()


class _RegistryModule(types.ModuleType):
    """``ffkernels.backends`` is this module; calling it (the old ``ffkernels.backends()``)
    still works during the rename, with a DeprecationWarning."""

    def __call__(self):
        warnings.warn("ffkernels.backends() is deprecated: use ffkernels.available_backends()",
                      DeprecationWarning, stacklevel=2)
        return available()


sys.modules[__name__].__class__ = _RegistryModule


def _resolve_uncached(op: str, backend: str | None, device_type: str, dtype: torch.dtype):
    if backend is not None:
        if backend not in BACKEND_NAMES:
            raise ValueError(f"backend must be one of {list(BACKEND_NAMES)} or None, got {backend!r}")
        module = _modules[backend]
        reason = _reason(backend)
        if reason is not None:
            raise ValueError(f"backend={backend!r} is not usable here: {reason}")
        if not module.supports(op, torch.device(device_type), dtype):
            raise ValueError(f"backend={backend!r} does not support {op} for {dtype} tensors on {device_type}")
        return module
    order = OP_PREFERENCE.get((op, device_type), PREFERENCE.get(device_type, ("reference",)))
    for name in order:
        module = _modules[name]
        if _reason(name) is None and module.supports(op, torch.device(device_type), dtype):
            return module
    return reference


def resolve(op: str, backend: str | None, device: torch.device, dtype: torch.dtype):
    """Return the backend module to run ``op`` for tensors on ``device`` of ``dtype``.

    ``backend=None`` picks the fastest usable one (``FFKERNELS_BACKEND`` overrides the
    default); a named backend that cannot serve raises ``ValueError`` with the reason.
    """
    env = os.environ.get("FFKERNELS_BACKEND") or None
    key = (op, backend, device.type, dtype, env)
    module = _resolved.get(key)
    if module is None:
        module = _resolve_uncached(op, backend if backend is not None else env, device.type, dtype)
        _resolved[key] = module
    return module


def resolve_or_reference(op: str, backend: str | None, device: torch.device, dtype: torch.dtype):
    """:func:`resolve` for the unchecked kernel cores that trainers call every step: when
    ``backend`` is None and ``FFKERNELS_BACKEND`` names a backend without ``op``, the reference
    serves it (a named ``backend`` that cannot still raises)."""
    try:
        return resolve(op, backend, device, dtype)
    except ValueError:
        if backend is not None:
            raise
        return reference


def clear_cache() -> None:
    """Forget the availability and resolution caches (after changing the environment in a test)."""
    _availability.clear()
    _resolved.clear()
