"""``ffkernels.fit(..., distributed=...)``: one rank's part of a distributed run.

Every rank calls :func:`fit_distributed` (``torchrun`` or ``ffkernels train --nproc P`` starts
them): it joins the process group, loads what this rank trains on (its graph part, or the
data for the MLP modes), runs the algorithm's distributed trainer on the one training engine
(options, early stopping, checkpoints), and returns the :class:`~ffkernels.api.Trained`
model, identical on every rank, with a report of what was communicated. Modes:

- ``partition`` (graph algorithms; ``sf``): node-partitioned greedy training, one halo
  exchange per layer (:mod:`.graph_sf`);
- ``data`` (``ff``, ``ff-hard``, ``symba``, ``cff``): data-parallel mini-batches (:mod:`.mlp`);
- ``pipeline`` (``ff``, ``symba``): one layer per rank, activations streamed forward (:mod:`.mlp`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .context import DEFAULT_TIMEOUT, DistContext

MODES = ("partition", "data", "pipeline")


def _trainers() -> dict:
    from .graph_ffvn import PartitionedFFVNTrainer
    from .graph_sf import PartitionedSFTrainer
    from .mlp import DataParallelMLPTrainer, PipelineFFTrainer
    return {("sf", "partition"): PartitionedSFTrainer, ("ff-vn", "partition"): PartitionedFFVNTrainer,
            ("ff", "data"): DataParallelMLPTrainer, ("ff-hard", "data"): DataParallelMLPTrainer,
            ("symba", "data"): DataParallelMLPTrainer, ("cff", "data"): DataParallelMLPTrainer,
            ("ff", "pipeline"): PipelineFFTrainer, ("symba", "pipeline"): PipelineFFTrainer}


def supported() -> list:
    """``[(algo, mode), ...]`` that can run distributed."""
    return sorted(_trainers())


@dataclass
class DistributedSettings:
    """How a run is spread over ranks.

    Attributes:
        mode: ``partition``, ``data`` or ``pipeline`` (default: ``partition`` for graph
            algorithms, ``data`` for MLP ones).
        partitions: the directory ``ffkernels partition`` wrote (``partition`` mode).
        timeout: seconds a collective may take before the run fails, naming the rank that
            died or stopped responding.
        backend: ``gloo`` or ``nccl`` (default: gloo for CPU tensors, NCCL for CUDA).
        queue: pipelined mode: batches in flight between two ranks.
    """
    mode: str | None = None
    partitions: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    backend: str | None = None
    queue: int = 4

    @classmethod
    def of(cls, value) -> "DistributedSettings":
        """From ``True``, a mode name, a dict of these fields or a DistributedSettings."""
        if isinstance(value, cls):
            out = value
        elif value is True:
            out = cls()
        elif isinstance(value, str):
            out = cls(mode=value)
        elif isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ValueError(f"distributed: unknown setting(s) {sorted(unknown)} "
                                 f"(settings: {', '.join(cls.__dataclass_fields__)})")
            out = cls(**value)
        else:
            raise TypeError(f"distributed must be True, a mode ({', '.join(MODES)}), a dict or DistributedSettings, "
                            f"got {value!r}")
        if out.mode is not None and out.mode not in MODES:
            raise ValueError(f"distributed mode must be one of {list(MODES)}, got {out.mode!r}")
        if not (isinstance(out.timeout, (int, float)) and out.timeout > 0):
            raise ValueError(f"distributed timeout must be a positive number of seconds, got {out.timeout!r}")
        return out


def rank_file(path: str | None, rank: int) -> str | None:
    """Rank ``r``'s own checkpoint file (pipelined mode): ``PATH`` for rank 0, ``PATH.rankR`` otherwise."""
    if path is None or rank == 0:
        return path
    return f"{path}.rank{rank}"


def _rank_settings(settings, mode: str, rank: int):
    """This rank's copy of the run settings: who writes and reads which checkpoint, who logs."""
    from dataclasses import replace
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
    save, resume = settings.save, settings.resume
    if resume is None and save is not None and restarted:  # torchrun --max-restarts: continue the killed run
        mine = rank_file(save, rank) if mode == "pipeline" else save
        if os.path.isfile(mine):
            resume = save
    if mode == "pipeline":  # every rank checkpoints its own layer's training state
        save, resume = rank_file(save, rank), rank_file(resume, rank)
    elif rank != 0:  # replicas: rank 0 writes, every rank reads the same file
        save = None
    return replace(settings, save=save, resume=resume, save_every=settings.save_every if save else None,
                   log=settings.log if rank == 0 else None,
                   tensorboard=settings.tensorboard if rank == 0 else None, progress=settings.progress and rank == 0)


def check_dataset(manifest: dict, directory: str, data, split: int) -> None:
    """Refuse partitions made from another dataset or split than the run's (before training)."""
    recorded = manifest["dataset"]
    if recorded.get("split") != split:
        raise ValueError(f"partitions {directory!r} were made from split {recorded.get('split')}, this run trains "
                         f"split {split}")
    if data is None:
        return
    from ..datasets import Dataset
    if isinstance(data, Dataset):
        if data.fingerprint() != recorded.get("fingerprint"):
            raise ValueError(f"partitions {directory!r} were made from another dataset ({recorded.get('source')!r}, "
                             f"fingerprint {recorded.get('fingerprint')}) than this run's ({data.fingerprint()})")
        return
    if not isinstance(data, (str, os.PathLike)):
        raise TypeError("distributed partition mode takes data as a bundled name, a path or a Dataset (or None: the "
                        f"partitions' own), got {type(data).__name__}")
    given, source = os.fspath(data), str(recorded.get("source"))
    same = given == source or (os.path.exists(given) and os.path.exists(source)
                               and os.path.realpath(given) == os.path.realpath(source))
    if not same:
        raise ValueError(f"partitions {directory!r} were made from dataset {source!r}, not {given!r}")


def fit_distributed(data, spec, options: dict, settings, dist_settings: DistributedSettings, split: int, device):
    """This rank's part of ``ffkernels.fit(..., distributed=...)`` (see the module docstring)."""
    from ..api import Trained, backend_name, _resolve_data
    from ..train.loop import run
    from ..train.metrics import PeakMemory
    from .. import __version__
    mode = dist_settings.mode or ("partition" if spec.task in ("node", "link") else "data")
    trainers = _trainers()
    trainer = trainers.get((spec.name, mode))
    if trainer is None:
        raise ValueError(f"algo {spec.name!r} cannot run in distributed mode {mode!r}; supported: "
                         + ", ".join(f"{a} ({m})" for a, m in sorted(trainers)))
    ctx = DistContext(dist_settings.timeout, device, dist_settings.backend)
    try:
        rank_settings = _rank_settings(settings, mode, ctx.rank)
        kwargs = {"ctx": ctx}
        if mode == "partition":
            from .partition import load_partition, read_manifest
            if dist_settings.partitions is None:
                raise ValueError("distributed partition mode needs partitions=DIR (written by ffkernels partition, or "
                                 "ffkernels train --nproc P, which partitions first)")
            check_dataset(read_manifest(dist_settings.partitions), dist_settings.partitions, data, split)
            part = load_partition(dist_settings.partitions, ctx.rank, ctx.world_size)
            data_obj = part.to(ctx.device)
        else:
            data_obj = _resolve_data(data, split, ctx.device)
            if mode == "pipeline":
                kwargs["queue"] = dist_settings.queue
        with PeakMemory(ctx.device) as mem:
            result = run(spec, options, data_obj, rank_settings, trainer=trainer, trainer_kwargs=kwargs)
        mine = {"rank": ctx.rank, "peak_memory_bytes": int(mem.peak_bytes), "comm_seconds": ctx.comm_seconds,
                "comm_bytes": ctx.comm_bytes, "bytes_by_kind": dict(ctx.bytes_by_kind),
                "train_seconds": result.train_seconds}
        if "pipeline" in result.extra:
            mine["pipeline"] = result.extra.pop("pipeline")
        if "halo_bytes_per_layer" in result.extra:
            mine["halo_bytes_per_layer"] = result.extra.pop("halo_bytes_per_layer")
        ranks = ctx.all_gather_object(mine)
    finally:
        ctx.close()
    epochs = max(result.total_epochs, 1)
    one_time = ("halo exchange",)
    per_epoch = [sum(b for kind, b in r["bytes_by_kind"].items() if kind not in one_time) / epochs for r in ranks]
    report = {
        "algo": spec.name, "task": spec.task, "model": options["model"], "dataset": data_obj.name,
        "data_source": data_obj.source, "split": split, "device": str(ctx.device),
        "backend": backend_name(ctx.device), "options": options, "stopped": result.stopped,
        "epochs_per_layer": [st["epochs"] for st in result.stages], "total_epochs": result.total_epochs,
        "setup_seconds": result.setup_seconds, "train_seconds": result.train_seconds,
        "seconds_per_epoch": result.train_seconds / epochs,
        "versions": {"ffkernels": __version__, "torch": str(torch.__version__)},
        "distributed": {
            "mode": mode, "world_size": ctx.world_size, "process_group": ctx.backend,
            "partitions": dist_settings.partitions, "ranks": ranks,
            "bytes_per_epoch_per_rank": per_epoch,
            "halo_bytes_per_layer": [r.get("halo_bytes_per_layer") for r in ranks],
            "comm_seconds_fraction": [r["comm_seconds"] / r["train_seconds"] if r["train_seconds"] else None
                                      for r in ranks],
        },
    }
    report.update(result.metrics)
    report.update(result.extra)
    return Trained(spec.name, options, result.model, result.history, result.stages, result.metrics, report)


__all__ = ["fit_distributed", "DistributedSettings", "MODES", "supported", "rank_file", "check_dataset"]
