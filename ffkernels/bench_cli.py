"""``ffkernels bench``: a thin alias of :mod:`ffkernels.benchmarking.cli` (the command line that
``ffkernels.cli`` imports by this name)."""
from __future__ import annotations

import sys

from .benchmarking.cli import SUITES, build_parser, main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
