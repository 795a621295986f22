"""Training checkpoints: one ``torch.save`` file with everything needed to resume exactly.

A checkpoint holds the algorithm, its resolved options, the dataset's fingerprint, where the
run stands (stage, epoch, whether that stage is finished), every parameter of the model, the
current stage's optimiser and early-stopping state, the trainer's own state (generators,
top-down states), the RNG state and the history so far. Cached tensors (frozen layers'
outputs, prepared inputs) are never stored: resume recomputes them from the parameters.

Only tensors, numbers, strings and containers of them are stored, and files are read with
``torch.load(weights_only=True)``: loading a checkpoint from elsewhere cannot run code.
Writes are atomic (temporary file + rename), so an interrupted save never leaves a truncated
checkpoint behind.
"""
from __future__ import annotations

import os
import tempfile

import torch

FORMAT = "ffkernels-checkpoint-v2"
#: Options that may differ between a checkpoint and the run resuming it (they do not change
#: what was computed so far): a longer ``epochs`` continues a run, ``threads`` is a machine setting.
RESUMABLE_CHANGES = ("epochs", "threads")


class CheckpointError(ValueError):
    """The checkpoint file is missing, unreadable, truncated or belongs to another run."""


def check_writable(path: str, name: str) -> None:
    """``ValueError`` naming ``name`` unless ``path`` can be written (checked before any work)."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{name} must be a file path, got {path!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{name}: {path!r} is a directory, not a file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"{name}: directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"{name}: {path!r} is not writable")


def atomic_save(obj, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename: never a truncated file."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=directory)
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_checkpoint(path: str, state: dict) -> None:
    """Write ``state`` (plus the format tag) to ``path`` atomically."""
    atomic_save(dict(state, format=FORMAT), path)


def read_checkpoint(path: str, what: str = "resume") -> dict:
    """Read a file written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        CheckpointError: no such file, unreadable or truncated, or not an ffkernels checkpoint.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise CheckpointError(f"{what}: no checkpoint file at {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a truncated or foreign file
        reason = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise CheckpointError(f"{what}: cannot read {path!r} (truncated or not a checkpoint: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{what}: {path!r} is not an ffkernels training checkpoint")
    return state


def check_compatible(state: dict, path: str, algo: str, options: dict, fingerprint: str) -> None:
    """``CheckpointError`` unless ``state`` was written by the same algorithm, options and data."""
    if state.get("algo") != algo:
        raise CheckpointError(f"resume: {path!r} was written by algo {state.get('algo')!r}, not {algo!r}")
    saved = state.get("options", {})
    for key in sorted(set(saved) | set(options)):
        if key in RESUMABLE_CHANGES:
            continue
        if saved.get(key) != options.get(key):
            raise CheckpointError(f"resume: {path!r} has {key}={saved.get(key)!r} but this run has "
                                  f"{key}={options.get(key)!r}")
    if state.get("data_fingerprint") != fingerprint:
        raise CheckpointError(f"resume: {path!r} was trained on another dataset ({state.get('data_source')!r}, "
                              f"fingerprint {state.get('data_fingerprint')}) than this run's ({fingerprint})")


def optimizer_state_to(state: dict, device) -> dict:
    """Move an optimiser ``state_dict``'s tensors to ``device`` (checkpoints load on CPU)."""
    out = {"param_groups": state["param_groups"], "state": {}}
    for key, value in state["state"].items():
        out["state"][key] = {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v)
                             for k, v in value.items()}
    if "master" in state:  # nn.optim.Float32Master's float32 copies of 16-bit parameters
        out["master"] = [m.to(device) for m in state["master"]]
    return out


__all__ = ["FORMAT", "CheckpointError", "check_writable", "atomic_save", "save_checkpoint", "read_checkpoint", "check_compatible",
           "optimizer_state_to", "RESUMABLE_CHANGES"]
