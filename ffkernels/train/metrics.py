"""What a run measures: accuracy and ROC-AUC, per-epoch records (history, JSON lines,
TensorBoard) and peak memory. One implementation of each, used by the engine, the
algorithms, the command line and the benchmark suites."""
from __future__ import annotations

import json
import re
import threading
import time

import torch


# ---------------------------------------------------------------------------- scores
def accuracy(scores: torch.Tensor, y: torch.Tensor, idx: torch.Tensor | None = None) -> float:
    """Fraction of rows whose prediction equals ``y`` (``0.0`` for no rows).

    Args:
        scores: ``[N, C]`` scores (argmax taken) or ``[N]`` predicted labels.
        y: ``[N]`` labels, or already restricted to ``idx`` (``[len(idx)]``).
        idx: optional row subset of both.
    """
    pred = scores.argmax(dim=1) if scores.dim() == 2 else scores
    if idx is not None:
        if y.shape[0] == pred.shape[0]:
            y = y[idx]
        pred = pred[idx]
    if pred.numel() == 0:
        return 0.0
    return float((pred == y.to(pred.device)).to(torch.float64).mean())


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Exact ROC-AUC: the Mann-Whitney statistic with tied scores given their average rank.

    Args:
        scores: ``[M]`` real scores. labels: ``[M]`` bool/0-1, True for positives.
    Returns ``nan`` when either class is empty.
    """
    scores = scores.detach().to(torch.float64).reshape(-1)
    labels = labels.reshape(-1).to(torch.bool)
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    sorted_scores, order = torch.sort(scores)
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)            # 1-based rank of each group's last item
    avg_rank = ends - (counts.to(torch.float64) - 1.0) / 2.0    # average rank inside the tie group
    ranks = torch.empty_like(scores)
    ranks[order] = avg_rank[inverse]
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def activation_sparsity(h: torch.Tensor, y: torch.Tensor, threshold: float = 0.5) -> dict:
    """How sparse and how class-specific one layer's post-ReLU activity is.

    Forward-Forward representations are reported to be very sparse, with category-specific
    ensembles of units (Tosato et al. 2023). For ``h`` ``[R, D]`` (rows of nodes or samples)
    and their labels ``y`` ``[R]``:

    - ``zero_fraction``: fraction of zero activations; ``active_per_row``: mean number of
      active units per row; ``dead_units``: fraction of units never active;
    - a class's *ensemble*: the units active on at least ``threshold`` of its rows;
      ``ensemble_size``: its mean size (fraction of units); ``ensemble_overlap``: the mean
      Jaccard overlap of the ensembles of every pair of classes (1: all classes use the same
      units; 0: disjoint ensembles).
    """
    active = h > 0
    r, d = active.shape
    out = {"zero_fraction": 1.0 - float(active.to(torch.float64).mean()) if h.numel() else 0.0,
           "active_per_row": float(active.sum(1).to(torch.float64).mean()) if r else 0.0,
           "dead_units": float((~active.any(0)).to(torch.float64).mean()) if d else 0.0}
    classes = [c for c in torch.unique(y).tolist() if c >= 0]
    ensembles = [active[y == c].to(torch.float64).mean(0) >= threshold for c in classes]
    out["ensemble_size"] = float(torch.stack(ensembles).to(torch.float64).mean()) if ensembles else 0.0
    overlaps = []
    for i in range(len(ensembles)):
        for j in range(i + 1, len(ensembles)):
            union = int((ensembles[i] | ensembles[j]).sum())
            overlaps.append(int((ensembles[i] & ensembles[j]).sum()) / union if union else 1.0)
    out["ensemble_overlap"] = sum(overlaps) / len(overlaps) if overlaps else None
    return out


# ---------------------------------------------------------------------------- per-epoch records
class EpochLog:
    """Where per-epoch records go: the run's history (always), a JSON-lines file (``log``)
    and TensorBoard (``tensorboard``: a directory, through ``torch.utils.tensorboard``)."""

    def __init__(self, history: list, log: str | None = None, tensorboard: str | None = None):
        self.history = history
        self._file = open(log, "a", buffering=1) if log else None  # line-buffered: readable while training
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # checked importable before training
            self._writer = SummaryWriter(tensorboard)

    def record(self, entry: dict) -> None:
        self.history.append(entry)
        if self._file is not None:
            self._file.write(json.dumps(entry, default=float) + "\n")
        if self._writer is not None:
            step = entry["total_epochs"]
            self._writer.add_scalar(f"loss/{entry['stage_label']}", entry["loss"], step)
            if entry.get("val") is not None:
                self._writer.add_scalar(f"val/{entry['stage_label']}", entry["val"], step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tensorboard_available() -> str | None:
    """None when ``torch.utils.tensorboard`` works here, else why not."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception as exc:  # ImportError, or tensorboard's own import errors
        return f"tensorboard logging needs the tensorboard package (pip install tensorboard): {exc}"
    return None


# ---------------------------------------------------------------------------- memory
_STATUS_FIELD = {}


def status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            text = fh.read()
    except OSError:
        return None
    pattern = _STATUS_FIELD.setdefault(field, re.compile(rf"^{field}:\s+(\d+)\s+kB", re.M))
    m = pattern.search(text)
    return int(m.group(1)) if m else None


class PeakMemory:
    """``with PeakMemory(device) as m: work()`` then read ``m.seconds``, ``m.peak_bytes`` (growth
    of the peak over what was in use at entry), ``m.peak_total_bytes``, ``m.base_bytes``, ``m.method``.

    CUDA: the allocator's peak (reset at entry). CPU: the kernel's high-water mark ``VmHWM``,
    reset at entry by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0); where that is
    not permitted, a thread samples ``VmRSS`` every 2 ms (it can miss short spikes).
    """

    def __init__(self, device="cpu"):
        self.device = str(device)
        self.cuda = self.device.startswith("cuda")
        self.method = None
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base_bytes = torch.cuda.memory_allocated()
            self.method = "torch.cuda.max_memory_allocated"
        else:
            self.base_bytes = (status_kb("VmRSS") or 0) * 1024
            try:
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
                self.method = "VmHWM (reset via clear_refs)"
            except OSError:
                self.method = "VmRSS sampled every 2 ms"
                self._max = self.base_bytes
                self._thread = threading.Thread(target=self._sample, daemon=True)
                self._thread.start()
        self._start = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            rss = status_kb("VmRSS")
            if rss is not None:
                self._max = max(self._max, rss * 1024)

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        if self.cuda:
            self.peak_total_bytes = torch.cuda.max_memory_allocated()
        elif self._thread is None:
            self.peak_total_bytes = (status_kb("VmHWM") or 0) * 1024
        else:
            self._stop.set()
            self._thread.join()
            self.peak_total_bytes = self._max
        self.peak_bytes = max(self.peak_total_bytes - self.base_bytes, 0)
        return False


def available_memory_bytes(device) -> int | None:
    """Memory a run on ``device`` can still allocate (CUDA: free device memory; CPU:
    ``MemAvailable``), or None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except Exception:
            return None
    try:
        with open("/proc/meminfo") as fh:
            m = re.search(r"^MemAvailable:\s+(\d+)\s+kB", fh.read(), re.M)
        return int(m.group(1)) * 1024 if m else None
    except OSError:
        return None


__all__ = ["accuracy", "roc_auc", "activation_sparsity", "EpochLog", "tensorboard_available", "PeakMemory", "status_kb",
           "available_memory_bytes"]
