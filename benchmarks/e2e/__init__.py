"""End-to-end benchmark suite: fused ffkernels vs eager forward learning vs backprop.

The suite's code lives in the package, ``ffkernels.benchmarking`` (eager baselines, suite,
measurement, plots), so that ``ffkernels bench --suite e2e`` works from an installed wheel as
well as from this checkout; this folder holds the recorded results (``../RESULTS.md``) and is
importable for scripts that expect ``benchmarks.e2e``::

    python -m ffkernels bench --suite e2e [--quick] [--threads 1] [--json out.json] [--plot DIR]
"""
from ffkernels.benchmarking import eager_baselines, plots, suite  # noqa: F401
from ffkernels.benchmarking.suite import run_suite, suite_cases  # noqa: F401
