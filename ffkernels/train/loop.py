"""The one training loop every algorithm runs on.

:func:`run` drives a registered algorithm's :class:`~ffkernels.train.registry.Trainer` stage by
stage (one stage per layer for greedy schedules, one for simultaneous ones) and owns what
every algorithm needs the same way:

- epochs, validation every ``val_every`` epochs and on a stage's last epoch, early stopping
  after ``patience`` validations without improvement, restore of the stage's best state;
- the RNG (a forked, seeded stream: the caller's global RNG state is left as it was) and the
  intra-op thread count;
- checkpoints (``save``): after every improvement (or every ``save_every`` validations), at the
  end of every stage and at the end of the run, written atomically; ``resume`` continues a
  run and ends bitwise equal to the uninterrupted one; Ctrl-C finishes the current epoch,
  saves and raises :class:`TrainingInterrupted`;
- per-epoch records (history, ``log`` JSON lines, ``tensorboard``), progress bars, and the
  checks that stop a run early with a clear message (non-finite loss, out of memory).
"""
from __future__ import annotations

import contextlib
import copy
import math
import signal
import threading
import time
from dataclasses import dataclass, field

import torch

from .checkpoint import (CheckpointError, check_compatible, check_writable, optimizer_state_to, read_checkpoint,
                         save_checkpoint)
from .metrics import EpochLog, available_memory_bytes, tensorboard_available
from .progress import Progress


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the current epoch finished and (with ``save``) was checkpointed."""

    def __init__(self, message: str, checkpoint: str | None):
        super().__init__(message)
        self.message, self.checkpoint = message, checkpoint


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite: the run diverged."""


class EarlyStopping:
    """Keep the best validation score and the module state that produced it.

    ``step(score, module, epoch)`` returns ``(improved, stop)``: ``stop`` after ``patience``
    validations without improvement (ties are no improvement). ``restore(module)`` loads the
    best state back.
    """

    def __init__(self, patience: int = 100):
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        self.patience = patience
        self.best_score = float("-inf")
        self.best_epoch = -1
        self.best_state = None
        self.bad_validations = 0
        self.validations = 0

    @property
    def stopped(self) -> bool:
        return self.bad_validations >= self.patience

    def step(self, score: float, module, epoch: int = -1):
        self.validations += 1
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad_validations = score, epoch, 0
            self.best_state = copy.deepcopy(module.state_dict())
            return True, False
        self.bad_validations += 1
        return False, self.stopped

    def restore(self, module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("patience", "best_score", "best_epoch", "best_state",
                                               "bad_validations", "validations")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


@dataclass
class RunSettings:
    """How a run is carried out (as opposed to what it computes, which the options say).

    Attributes:
        save: checkpoint file written during training (atomically).
        save_every: checkpoint every this many validations; None: at every improvement.
        resume: checkpoint file to continue from.
        stop_after_epochs: stop (and checkpoint) after this many epochs in total.
        progress: progress bars and stage summaries on stderr.
        log: append one JSON line per epoch to this file.
        tensorboard: write loss / validation scalars to this TensorBoard directory.
        probe: after every validation also record ``trainer.probe(stage)`` (the test metric of
            the current state, for time-to-accuracy benchmarks) as ``probe`` in the history; its
            time is excluded from the history's ``elapsed`` (training seconds since the start).
    """
    save: str | None = None
    save_every: int | None = None
    resume: str | None = None
    stop_after_epochs: int | None = None
    progress: bool = True
    log: str | None = None
    tensorboard: str | None = None
    probe: bool = False

    def check(self) -> None:
        """Everything that can be checked before any work, each error naming the setting."""
        for name in ("save", "log"):
            if getattr(self, name) is not None:
                check_writable(getattr(self, name), name)
        for name in ("save_every", "stop_after_epochs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if self.save_every is not None and self.save is None:
            raise ValueError("save_every needs save (a checkpoint file)")
        if self.tensorboard is not None:
            reason = tensorboard_available()
            if reason:
                raise ValueError(f"tensorboard: {reason}")
            import os
            parent = os.path.dirname(os.path.abspath(self.tensorboard))
            if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
                raise ValueError(f"tensorboard: cannot create a directory in {parent!r}")


@dataclass
class RunResult:
    """What :func:`run` returns (``stopped``: ended by ``stop_after_epochs``, metrics empty)."""
    model: object
    options: dict
    history: list
    stages: list
    metrics: dict
    stopped: bool
    total_epochs: int
    setup_seconds: float
    train_seconds: float
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- run-wide context
@contextlib.contextmanager
def intra_op_threads(threads: int | None, device: torch.device):
    """Run with ``threads`` intra-op CPU threads (None: torch's setting), then restore.

    One thread is every algorithm's default: their per-step work is small (GEMMs and sparse
    ops of milliseconds), and on a 2-core machine where another process holds a core two
    OpenMP threads made the Cora-ML SF run 15x slower (146 s against 9.8 s, same result).
    """
    if threads is None or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device):
    """A private RNG stream seeded with ``seed``; the caller's global RNG state is restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class _DeferredInterrupt:
    """Turn the first Ctrl-C into a flag checked after each epoch (a second one interrupts at once)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True
            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# ---------------------------------------------------------------------------- checks
def check_data(spec, data) -> None:
    """The dataset has what the algorithm's task needs (checked before any work)."""
    if spec.task in ("node", "link") and data.graph is None:
        raise ValueError(f"algo {spec.name!r} trains on a graph, but dataset {data.name!r} has no edge_index")
    if spec.task in ("node", "mlp"):
        if data.train_idx.numel() == 0:
            raise ValueError(f"dataset {data.name!r} has an empty training split")
        if data.num_classes < 2:
            raise ValueError(f"dataset {data.name!r} has {data.num_classes} class(es); classification needs >= 2")


def check_memory(options: dict, data) -> None:
    """Refuse sizes that cannot fit before allocating them (``hidden=10**7`` must be an error,
    not a traceback): parameters with their gradient and two Adam moments, plus a few
    ``[N, hidden]`` activations, against the memory the device has available."""
    hidden, layers = options.get("hidden", 0), options.get("layers", 1)
    params = data.num_features * hidden + max(layers - 1, 0) * hidden * hidden
    need = 4 * (4 * params + 3 * data.num_nodes * hidden)
    have = available_memory_bytes(data.x.device)
    if have is not None and need > have:
        raise ValueError(f"hidden={hidden} with layers={layers} needs about {need / 2**30:.1f} GiB for "
                         f"parameters and activations on {data.x.device}, more than the "
                         f"{have / 2**30:.1f} GiB available; lower hidden or layers")


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


# ---------------------------------------------------------------------------- the loop
class _Run:
    def __init__(self, spec, options, data, settings, trainer, model, device, ckpt):
        self.spec, self.options, self.data, self.settings = spec, options, data, settings
        self.trainer, self.model, self.device, self.ckpt = trainer, model, device, ckpt
        main = trainer.is_main_process
        self.progress = Progress(settings.progress and main)
        self.history = list(ckpt["history"]) if ckpt else []
        self.stages = list(ckpt["stages"]) if ckpt else []
        self.total_epochs = ckpt["position"]["total_epochs"] if ckpt else 0
        self.log = EpochLog(self.history, settings.log if main else None, settings.tensorboard if main else None)
        self.fingerprint = data.fingerprint()
        self.clock_start, self.probe_seconds = time.perf_counter(), 0.0

    def _save(self, stage, epoch, stage_done, stopper=None, done=False) -> None:
        trainer = self.trainer
        trainer.before_checkpoint()
        state = {
            "algo": self.spec.name, "options": self.options, "data_fingerprint": self.fingerprint,
            "data_source": self.data.source,
            "position": {"stage": stage, "epoch": epoch, "stage_done": stage_done, "done": done,
                         "total_epochs": self.total_epochs},
            "model": self.model.state_dict(),
            "optimizers": [] if stage_done else [opt.state_dict() for opt in trainer.stage_optimizers(stage)],
            "stopper": None if stopper is None else stopper.state_dict(),
            "trainer": trainer.state_dict(), "rng": _rng_state(self.device),
            "history": self.history, "stages": self.stages,
        }
        save_checkpoint(self.settings.save, state)

    def _restore_position(self, stage: int, stopper=None) -> None:
        ckpt = self.ckpt
        if stopper is not None:
            for opt, st in zip(self.trainer.stage_optimizers(stage), ckpt["optimizers"]):
                opt.load_state_dict(optimizer_state_to(st, self.device))
            stopper.load_state_dict(ckpt["stopper"])
        self.trainer.load_state_dict(ckpt["trainer"])
        _set_rng_state(ckpt["rng"], self.device)

    def execute(self) -> tuple:
        trainer, opts, settings = self.trainer, self.options, self.settings
        start_stage, resume_mid = 0, None
        if self.ckpt is not None:
            pos = self.ckpt["position"]
            self.model.load_state_dict(self.ckpt["model"])
            finished = pos["stage"] + 1 if pos["stage_done"] else pos["stage"]
            for s in range(finished):  # recompute what the finished stages cached, from their parameters
                trainer.begin_stage(s)
                trainer.end_stage(s)
            start_stage = finished
            if pos["stage_done"]:
                self._restore_position(finished - 1)
            else:
                resume_mid = pos
        for s in range(start_stage, trainer.num_stages):
            stopped = self._stage(s, resume_mid if resume_mid is not None and s == resume_mid["stage"] else None)
            if stopped:
                return True
            if settings.save:
                self._save(s, 0, True, done=s == trainer.num_stages - 1)
            limit = settings.stop_after_epochs
            if limit is not None and self.total_epochs >= limit and s < trainer.num_stages - 1:
                return True
        return False

    def _stage(self, s: int, resume_pos: dict | None) -> bool:
        """Train stage ``s``; True when the run stops here (``stop_after_epochs``)."""
        trainer, opts, settings = self.trainer, self.options, self.settings
        trainer.begin_stage(s)
        module = trainer.stage_module(s)
        stopper = EarlyStopping(opts["patience"])
        first = 1
        if resume_pos is not None:
            self._restore_position(s, stopper)
            first = resume_pos["epoch"] + 1
        label = trainer.stage_label(s)
        max_epochs, val_every = opts["epochs"], opts["val_every"]
        self.progress.start_stage(label, max_epochs, initial=first - 1)
        start = time.perf_counter()
        epoch = first - 1
        finished = stopper.stopped or first > max_epochs
        while not finished:
            epoch += 1
            try:
                loss = float(trainer.train_epoch(s, epoch))
            except Exception as exc:
                if _is_out_of_memory(exc):
                    raise MemoryError(f"out of memory in {label}, epoch {epoch} ({str(exc).splitlines()[0][:200]}); "
                                      f"lower hidden, layers or the batch size") from None
                raise
            self.total_epochs += 1
            if not math.isfinite(loss):
                self.progress.close()
                raise NonFiniteLossError(f"non-finite training loss ({loss}) in {label}, epoch {epoch}: the run "
                                         f"diverged (lr={opts.get('lr')}); lower the learning rate")
            validated = epoch % val_every == 0 or epoch == max_epochs
            score, improved, stop = None, False, False
            if validated:
                score = float(trainer.validate(s))
                improved, stop = stopper.step(score, module, epoch)
            best = stopper.best_score if stopper.best_state is not None else None
            entry = {"stage": s, "stage_label": label, "epoch": epoch, "total_epochs": self.total_epochs,
                     "loss": loss, "val": score, "best_val": best, "seconds": time.perf_counter() - start}
            if settings.probe and validated:
                probe_start = time.perf_counter()
                entry["probe"] = trainer.probe(s)
                self.probe_seconds += time.perf_counter() - probe_start
            entry["elapsed"] = time.perf_counter() - self.clock_start - self.probe_seconds
            self.log.record(entry)
            self.progress.update(loss, best)
            finished = stop or epoch >= max_epochs
            if settings.save and validated and (improved if settings.save_every is None
                                                else stopper.validations % settings.save_every == 0):
                self._save(s, epoch, False, stopper)
            limit = settings.stop_after_epochs
            if limit is not None and self.total_epochs >= limit and not finished:
                if settings.save:
                    self._save(s, epoch, False, stopper)
                self.progress.close()
                return True
            if trainer.any_process(self._interrupt.requested):
                self.progress.close()
                where = f"{label}, epoch {epoch}"
                if settings.save:
                    self._save(s, epoch, False, stopper)
                    raise TrainingInterrupted(f"interrupted after {where}; checkpoint saved to {settings.save} "
                                              f"(continue with resume={settings.save!r})", settings.save)
                raise TrainingInterrupted(f"interrupted after {where} (no checkpoint: use save= to keep one)", None)
        if stopper.best_state is None:  # resumed past the end of a stage without a validation
            stopper.step(float(trainer.validate(s)), module, epoch)
        stopper.restore(module)
        trainer.end_stage(s)
        self.progress.close()
        self.stages.append({"stage": s, "label": label, "epochs": epoch, "best_epoch": stopper.best_epoch,
                            "best_val": stopper.best_score, "seconds": time.perf_counter() - start})
        self.progress.message(f"{label}: {epoch} epochs, best validation {stopper.best_score:.4f} at epoch "
                              f"{stopper.best_epoch} ({time.perf_counter() - start:.1f} s)")
        return False


def run(spec, options: dict, data, settings: RunSettings | None = None, trainer=None,
        trainer_kwargs: dict | None = None) -> RunResult:
    """Train ``spec``'s algorithm with resolved ``options`` on ``data`` (already on its device).

    ``trainer``: another Trainer class for the same algorithm and model (the distributed
    trainers), built with ``trainer_kwargs`` as extra keyword arguments.

    Raises:
        ValueError: a setting, the data or a checkpoint to resume does not fit (before any work).
        NonFiniteLossError, MemoryError: the run diverged or ran out of memory (naming where).
        TrainingInterrupted: Ctrl-C (after saving a checkpoint when ``settings.save`` is set).
    """
    settings = settings or RunSettings()
    settings.check()
    if trainer is None:  # a distributed trainer's part is checked when it is loaded
        check_data(spec, data)
    ckpt = None
    if settings.resume is not None:
        ckpt = read_checkpoint(settings.resume)
        check_compatible(ckpt, settings.resume, spec.name, options, data.fingerprint())
    check_memory(options, data)
    device = data.x.device
    dims = {"num_features": data.num_features, "num_classes": data.num_classes}
    # torch.optim imports torch._dynamo the first time an optimiser is built in a process (its
    # add_param_group is wrapped to disable dynamo): ~1.5-2 s once, on a 2-core machine. Paid here,
    # before the clock, so train_seconds is the training's own time in every run of a process.
    import torch._dynamo  # noqa: F401
    with seeded_rng(options["seed"], device), intra_op_threads(options["threads"], device):
        start = time.perf_counter()
        model = spec.model(options, dims, spec.variant).to(device)
        trainer = (trainer or spec.trainer)(spec, options, data, model, **(trainer_kwargs or {}))
        setup_seconds = time.perf_counter() - start
        state = _Run(spec, options, data, settings, trainer, model, device, ckpt)
        try:
            with _DeferredInterrupt() as interrupt:
                state._interrupt = interrupt
                stopped = state.execute()
                metrics, extra = {}, {}
                if not stopped:
                    metrics = trainer.final_metrics()
                    extra = trainer.finish()
        finally:
            state.progress.close()
            state.log.close()
        train_seconds = time.perf_counter() - start
    return RunResult(model, options, state.history, state.stages, metrics, stopped, state.total_epochs,
                     setup_seconds, train_seconds, extra)


__all__ = ["run", "RunSettings", "RunResult", "EarlyStopping", "TrainingInterrupted", "NonFiniteLossError",
           "CheckpointError", "intra_op_threads", "seeded_rng", "check_data", "check_memory"]
