"""Training checkpoints: one ``torch.save`` file holding everything needed to resume exactly.

A checkpoint is a dict with ``format`` (:data:`FORMAT`), ``algo`` and algorithm-defined state
(layer index, epoch, every layer's parameters, optimiser and early-stopping state, RNG state).
Cached tensors (frozen layers' outputs, prepared inputs) are never stored: they are recomputed
deterministically from the stored parameters on resume.
"""
from __future__ import annotations

import os
import tempfile

import torch

FORMAT = "ffkernels-checkpoint-v1"


class CheckpointError(ValueError):
    """The checkpoint file is missing, unreadable or belongs to another run."""


def save_checkpoint(path: str, state: dict) -> None:
    """Write ``state`` atomically (temporary file + rename), so an interrupted save never
    leaves a truncated checkpoint behind."""
    state = dict(state)
    state["format"] = FORMAT
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", dir=directory)
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str, algo: str | None = None, expect: dict | None = None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the file.
        algo: if given, the checkpoint must come from this algorithm.
        expect: ``{key: value}`` that must match the stored ``run`` description (e.g. dataset,
            model, layers, hidden, split, seed), so a run never resumes someone else's state.

    Raises:
        CheckpointError: missing/unreadable file, wrong format or a mismatching run.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"resume: no checkpoint file at {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise CheckpointError(f"resume: cannot read checkpoint {path!r}: {exc.__class__.__name__}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"resume: {path!r} is not an ffkernels checkpoint")
    if algo is not None and state.get("algo") != algo:
        raise CheckpointError(f"resume: {path!r} was written by algo {state.get('algo')!r}, not {algo!r}")
    run = state.get("run", {})
    for key, value in (expect or {}).items():
        if key in run and run[key] != value:
            raise CheckpointError(f"resume: checkpoint has {key}={run[key]!r} but this run has {key}={value!r}")
    return state


def optimizer_state_to(state: dict, device) -> dict:
    """Move an optimiser ``state_dict``'s tensors to ``device`` (checkpoints load on CPU)."""
    out = {"param_groups": state["param_groups"], "state": {}}
    for key, value in state["state"].items():
        out["state"][key] = {k: (v.to(device) if isinstance(v, torch.Tensor) and k != "step" else v)
                             for k, v in value.items()}
    return out


__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "optimizer_state_to"]
