"""Progress of a training run on stderr: a ``tqdm`` bar per stage and a summary line per stage.

Bars show only on a terminal (``tqdm(disable=None)``); stage summaries are written whenever
progress is enabled, so a run logged to a file still says how far it got. ``enabled=False``
(``--quiet``, ``fit(progress=False)``) prints nothing.
"""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._bar = None

    def start_stage(self, label: str, total: int, initial: int = 0) -> None:
        if not self.enabled:
            return
        self.close()
        self._bar = tqdm(total=total, initial=initial, desc=label, unit="epoch", leave=False, file=self.stream,
                         disable=None, dynamic_ncols=True)

    def update(self, loss: float, best: float | None) -> None:
        if self._bar is None:
            return
        post = {"loss": f"{loss:.4f}"}
        if best is not None:
            post["best val"] = f"{best:.4f}"
        self._bar.set_postfix(post, refresh=False)
        self._bar.update(1)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


__all__ = ["Progress"]
