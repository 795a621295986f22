"""The public training API: ``ffkernels.fit`` -> :class:`Trained`, ``ffkernels.load_model``.

::

    import ffkernels
    trained = ffkernels.fit("cora_ml", algo="sf", model="gcn", layers=4, hidden=128)
    trained.metrics["test_accuracy"]          # the run's final metrics
    labels = trained.predict("cora_ml")       # class per node, [N]
    h = trained.embed("cora_ml")              # per-layer node embeddings
    trained.save("model.pt")
    again = ffkernels.load_model("model.pt")  # on any device

``data`` is anything :func:`ffkernels.datasets.resolve` accepts: a bundled name, a
``Dataset``, a PyG ``Data``, a path to an ``.npz`` or an OGB directory. See ``docs/api.md``.
"""
from __future__ import annotations

import os

import torch

from . import __version__

MODEL_FORMAT = "ffkernels-model-v1"


def _resolve_data(data, split: int, device):
    from .datasets import resolve
    return resolve(data, split=split, device=device)


def _algorithms():
    from .train.registry import load_algorithms
    return load_algorithms()


def _spec(algo: str):
    from .train.registry import get_algorithm
    return get_algorithm(algo)


def resolve_run_options(algo: str, given: dict) -> dict:
    """The complete, checked options of ``algo`` from what a caller gave (None = default)."""
    from .train.options import resolve_options
    spec = _spec(algo)
    others = {name: s.options for name, s in _algorithms().items() if name != algo}
    return resolve_options(spec.options, given, others)


def backend_name(device) -> str:
    """The ops backend that serves this device's float32 tensors (for reports)."""
    from . import backends
    return backends.resolve("aggregate", None, torch.device(device), torch.float32).NAME


class Trained:
    """A trained model: its layers, the resolved options, the history and the final metrics.

    Attributes:
        algo: the algorithm's name; ``options``: every resolved option of the run.
        model: the algorithm's model (a ``torch.nn.Module``; ``layers`` its layers).
        history: one dict per epoch (stage, epoch, loss, validation score, ...).
        stages: one dict per stage (epochs, best epoch, best validation score, seconds).
        metrics: the final ``val_*``/``test_*`` metrics on the training data's split.
        report: everything about the run (timing, versions, data) as a JSON-ready dict.
    """

    def __init__(self, algo: str, options: dict, model, history: list, stages: list, metrics: dict,
                 report: dict | None = None):
        self.algo, self.options, self.model = algo, dict(options), model
        self.history, self.stages, self.metrics = list(history), list(stages), dict(metrics)
        self.report = dict(report or {})

    @property
    def layers(self):
        return self.model.layers

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def task(self) -> str:
        return _spec(self.algo).task

    def _data(self, data, split: int):
        ds = _resolve_data(data, split, self.device)
        want = self.model.dims["num_features"]
        if ds.num_features != want:
            raise ValueError(f"data has {ds.num_features} features per node, but this {self.algo} model was "
                             f"trained on {want}")
        return ds

    @torch.no_grad()
    def predict(self, data, split: int = 0, **kwargs) -> torch.Tensor:
        """Class per node ``[N]`` (link models: ``pairs=[2, M]`` -> scores ``[M]``). How each
        algorithm predicts (which nodes its inference conditions on) is in ``docs/api.md``."""
        return self.model.predict(self._data(data, split), **kwargs)

    @torch.no_grad()
    def embed(self, data, split: int = 0, concat: bool = False):
        """Node embeddings of every layer (a list of ``[N, D_l]``), or concatenated ``[N, sum D_l]``."""
        out = self.model.embed(self._data(data, split))
        return torch.cat(out, dim=1) if concat else out

    @torch.no_grad()
    def evaluate(self, data, split: int = 0) -> dict:
        """``{"val_<metric>", "test_<metric>", ...}`` on ``data``'s split (the training data's
        split gives exactly :attr:`metrics`)."""
        return self.model.evaluate(self._data(data, split))

    def to(self, device) -> "Trained":
        self.model.to(device)
        return self

    def state(self) -> dict:
        return {"format": MODEL_FORMAT, "ffkernels_version": __version__, "algo": self.algo, "options": self.options,
                "dims": self.model.dims, "model": self.model.state_dict(), "history": self.history,
                "stages": self.stages, "metrics": self.metrics, "report": self.report}

    def save(self, path) -> None:
        """Write the model (parameters, options, history, metrics) to ``path`` atomically."""
        from .train.checkpoint import atomic_save, check_writable
        check_writable(path, "path")
        state = self.state()
        state["model"] = {k: v.detach().cpu() for k, v in state["model"].items()}
        atomic_save(state, os.fspath(path))

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.metrics.items() if k.startswith(("val_", "test_"))}
        return f"Trained(algo={self.algo!r}, model={self.options.get('model')!r}, metrics={shown})"


def load_model(path, device=None) -> Trained:
    """Restore a model written by :meth:`Trained.save` (``weights_only``: loading runs no code).

    Args:
        path: the file. device: where to put it (default: CPU).
    """
    if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
        raise ValueError(f"path: no model file at {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else exc.__class__.__name__
        raise ValueError(f"path: cannot read {path!r} (truncated or not an ffkernels model: {reason})") from None
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        if isinstance(state, dict) and str(state.get("format", "")).startswith("ffkernels-checkpoint"):
            raise ValueError(f"path: {path!r} is a training checkpoint (resume= / --resume), not a saved model "
                             f"(Trained.save / --save-model)")
        raise ValueError(f"path: {path!r} is not an ffkernels model")
    spec = _spec(state["algo"])
    model = spec.model(state["options"], state["dims"], spec.variant)
    model.load_state_dict(state["model"])
    if device is not None:
        model.to(device)
    return Trained(state["algo"], state["options"], model, state["history"], state["stages"], state["metrics"],
                   state.get("report"))


def fit(data="cora_ml", algo: str = "sf", model: str | None = None, layers: int | None = None,
        hidden: int | None = None, *, split: int = 0, device="cpu", save=None, save_every: int | None = None,
        resume=None, stop_after_epochs: int | None = None, progress: bool = True, log=None, tensorboard=None,
        probe: bool = False, distributed=None, **options) -> Trained:
    """Train ``algo`` on ``data`` and return the :class:`Trained` model.

    Args:
        data: a bundled name (``"cora_ml"``), a ``Dataset``, a PyG ``Data``, a path to an
            ``.npz`` file or an OGB node-property directory.
        algo: a registered algorithm (``ffkernels.train.load_algorithms()``).
        model: ``gcn``, ``sage``, ``gat`` or ``mlp`` (default: the algorithm's first model).
        layers, hidden: depth and width (default 4 and 128).
        split: which split of a multi-split dataset.
        device: ``cpu`` or ``cuda[:N]``.
        save, save_every, resume, stop_after_epochs: checkpoints (see ``docs/api.md``).
        progress: progress bars and stage summaries on stderr.
        log: append one JSON line per epoch to this file; tensorboard: a TensorBoard directory.
        probe: after every validation also record the test accuracy of the current state in
            ``Trained.history`` (``probe``, with ``elapsed``: training seconds so far, the
            probes' own time excluded), for time-to-accuracy measurements; an algorithm without
            a probe is a ``ValueError``.
        distributed: run as one rank of a ``torch.distributed`` job (launched by ``torchrun`` or
            ``ffkernels train --nproc``): ``True``, a mode (``"partition"``, ``"data"``,
            ``"pipeline"``) or a dict of :class:`ffkernels.distributed.DistributedSettings`
            fields (``partitions=DIR``, ``timeout=...``); see ``docs/distributed.md``. In
            partition mode ``data`` may be None (each rank loads only its part).
        **options: the algorithm's options (``epochs``, ``patience``, ``lr``, ``theta``, ...);
            an option the algorithm does not have is a ``ValueError``.
    """
    from .train.loop import RunSettings, run
    spec = _spec(algo)
    given = dict(options, model=model, layers=layers, hidden=hidden)
    resolved = resolve_run_options(algo, given)
    settings = RunSettings(save=save, save_every=save_every, resume=resume, stop_after_epochs=stop_after_epochs,
                           progress=progress, log=log, tensorboard=tensorboard, probe=bool(probe))
    settings.check()
    from .train.registry import Trainer, load_algorithms
    if probe and spec.trainer.probe is Trainer.probe:
        raise ValueError(f"probe=True: {algo} has no probe (the algorithms with one: "
                         f"{', '.join(n for n, s in load_algorithms().items() if s.trainer.probe is not Trainer.probe)})")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r}: CUDA is not available here")
    if distributed is not None and distributed is not False:
        from .distributed.run import DistributedSettings, fit_distributed
        return fit_distributed(data, spec, resolved, settings, DistributedSettings.of(distributed), split, device)
    ds = _resolve_data(data, split, device)
    result = run(spec, resolved, ds, settings)
    epochs = [st["epochs"] for st in result.stages]
    report = {
        "algo": algo, "task": spec.task, "model": resolved["model"], "dataset": ds.name,
        "data_source": ds.source, "split": split, "device": str(device),
        "backend": backend_name(device), "options": resolved, "stopped": result.stopped,
        "epochs_per_layer": epochs, "total_epochs": result.total_epochs,
        "setup_seconds": result.setup_seconds, "train_seconds": result.train_seconds,
        "seconds_per_epoch": result.train_seconds / result.total_epochs if result.total_epochs else None,
        "versions": {"ffkernels": __version__, "torch": str(torch.__version__)},
    }
    report.update(result.metrics)
    report.update(result.extra)
    return Trained(algo, resolved, result.model, result.history, result.stages, result.metrics, report)


__all__ = ["fit", "load_model", "Trained", "MODEL_FORMAT", "resolve_run_options", "backend_name"]
