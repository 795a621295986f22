"""The op micro-benchmarks: a thin wrapper of ``ffkernels.benchmarking.ops_suite`` (the code ships
in the package, so ``ffkernels bench --suite ops`` runs the same from an installed wheel).

    python benchmarks/bench_ops.py [--quick] [--threads N] [--only GROUPS] [--out table.md] [--json out.json]
    ffkernels bench --suite ops [--quick] [--threads N] ...                     # the same
    pytest benchmarks/bench_ops.py --benchmark-columns=min,median               # pytest-benchmark view

``FFKERNELS_BENCH_SMALL=1`` selects the quick sizes for the pytest-benchmark view.
"""
from __future__ import annotations

import os
import sys

import pytest

from ffkernels.benchmarking import ops_suite

SMALL = os.environ.get("FFKERNELS_BENCH_SMALL") == "1"


@pytest.fixture(scope="module")
def cases():
    import ffkernels

    if not ffkernels.available_backends()["cpu"]["available"]:
        pytest.skip(ffkernels.available_backends()["cpu"]["reason"])
    return {(c.op, i.name): (c, i) for c in ops_suite.build_cases(SMALL, "cpu")[0] for i in c.impls}


def _names():
    s = "aggregate sum", "aggregate gcn", "goodness_loss_grad ff", "sf_loss_grad"
    return [(op, impl) for op in s for impl in ("ffkernels", "ffkernels inplace=True", "torch.sparse.mm (CSR)",
                                                 "eager torch (reference)", "dst.copy_(h) (limit)")]


@pytest.mark.parametrize("op,impl", _names())
def test_op(benchmark, cases, op, impl):
    if (op, impl) not in cases:
        pytest.skip("no such implementation for this op")
    case, im = cases[(op, impl)]
    benchmark.group = op
    benchmark.extra_info["bytes"] = case.nbytes
    setup = (lambda: (im.restore(), ((), {}))[1]) if im.restore else None
    benchmark.pedantic(im.fn, setup=setup, rounds=5, warmup_rounds=1)


if __name__ == "__main__":
    sys.exit(ops_suite.main())
