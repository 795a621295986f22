"""A dependency-free progress bar for long training runs (stderr, one line, throttled)."""
from __future__ import annotations

import sys
import time


class Progress:
    """``progress.update(label, step, total, **metrics)`` redraws one status line on stderr.

    Disabled (no output) when ``enabled`` is False; redraws at most every ``interval`` seconds.
    """

    def __init__(self, enabled: bool = True, stream=None, interval: float = 0.1):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.interval = interval
        self._last = 0.0
        self._open = False

    def update(self, label: str, step: int, total: int, force: bool = False, **metrics) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.interval and step < total:
            return
        self._last = now
        width = 24
        done = int(width * min(step, total) / max(total, 1))
        bar = "#" * done + "-" * (width - done)
        info = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())
        self.stream.write(f"\r{label} [{bar}] {step}/{total} {info}".ljust(100)[:160])
        self.stream.flush()
        self._open = True

    def close(self, message: str | None = None) -> None:
        if not self.enabled:
            return
        if self._open:
            self.stream.write("\n")
        if message:
            self.stream.write(message + "\n")
        self.stream.flush()
        self._open = False
