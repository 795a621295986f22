"""``python -m ffkernels``: the command line (see :mod:`ffkernels.cli`)."""
import sys

from .cli import main

sys.exit(main())
