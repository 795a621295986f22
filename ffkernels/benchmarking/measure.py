"""Measuring one training call: wall time and peak memory (CPU: peak RSS; CUDA: allocator peak).

CPU peak memory is the kernel's high-water mark ``VmHWM``, reset just before the training call by
writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0). Where that is not permitted, a
background thread samples ``VmRSS`` every 2 ms instead (it can miss short spikes; the record says
which method was used). Each variant runs in its own fresh process (see :mod:`.suite`), so one
variant's freed-but-cached memory never counts against another.
"""
from __future__ import annotations

import re
import threading
import time

import torch

_FIELD = {}


def status_kb(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), or None off Linux."""
    try:
        with open("/proc/self/status") as fh:
            text = fh.read()
    except OSError:
        return None
    pattern = _FIELD.setdefault(field, re.compile(rf"^{field}:\s+(\d+)\s+kB", re.M))
    m = pattern.search(text)
    return int(m.group(1)) if m else None


class TrainingMeasurement:
    """``with TrainingMeasurement(device) as m: train()`` then read ``m.seconds``, ``m.peak_bytes``
    (growth of the peak over the memory in use at entry), ``m.peak_total_bytes`` and ``m.base_bytes``."""

    def __init__(self, device: str = "cpu"):
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
