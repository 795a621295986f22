"""Triton-specific tests: tile/block edge cases that the generic op tests (test_ops.py) do not
reach: several GEMM N-tiles, the two-pass goodness path for wide rows, rows longer than one
edge tile, more than one feature tile, int64 indices, bitwise determinism, the custom ops.

Runs on CUDA when present, else on CPU tensors through the Triton interpreter (the shared
conftest sets ``TRITON_INTERPRET=1`` there); skipped when the triton backend is unusable.
Shapes are tiny: the interpreter is slow.
"""
from __future__ import annotations

import pytest
import torch

import ffkernels
from ffkernels import ops
from ffkernels.graph import Graph

_triton = ffkernels.available_backends()["triton"]
pytestmark = pytest.mark.skipif(not _triton["available"], reason=f"triton backend: {_triton['reason']}")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _close(a, b, tol=1e-4):
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a.float(), b.float(), rtol=tol, atol=tol)


def _graph(num_nodes, edge_index, index_dtype=None):
    g = Graph.from_edge_index(edge_index.to(DEVICE), num_nodes)
    if index_dtype is not None and g.index_dtype != index_dtype:
        g = Graph(g.rowptr.to(index_dtype), g.col.to(index_dtype), g.edge_perm, g.num_nodes, g.in_degree,
                  g.deg_inv_sqrt)
    return g


def _skewed_graph(seed=0, num_nodes=12):
    """Random edges plus one destination with 70 in-edges (several edge tiles), an isolated
    node, a self loop and duplicate edges."""
    gen = torch.Generator().manual_seed(seed)
    rand = torch.randint(0, num_nodes - 1, (2, 30), generator=gen)
    hub = torch.stack([torch.randint(0, num_nodes - 1, (70,), generator=gen), torch.full((70,), 3)])
    extra = torch.tensor([[5, 5, 5, 2], [5, 6, 6, 1]])
    return torch.cat([rand, hub, extra], dim=1)  # node num_nodes - 1 never appears: isolated


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "gcn"])
def test_aggregate_long_rows_and_two_feature_tiles(index_dtype, reduce):
    n = 12
    ei = _skewed_graph(num_nodes=n)
    g = _graph(n, ei, index_dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 130, generator=gen).to(DEVICE)  # > 128: two feature tiles, masked tail
    w = torch.rand(ei.shape[1], generator=gen).to(DEVICE) - 0.3  # negative weights too
    for edge_weight in (None, w):
        out = ops.aggregate(g, x, reduce, edge_weight, backend="triton")
        ref = ops.aggregate(g, x, reduce, edge_weight, backend="reference")
        _close(out, ref)
    if reduce == "max":  # all-negative messages: the max is negative, not clipped at 0
        neg = -x.abs() - 1.0
        _close(ops.aggregate(g, neg, "max", backend="triton"), ops.aggregate(g, neg, "max", backend="reference"))


def test_aggregate_non_contiguous_input_and_determinism():
    n = 12
    g = _graph(n, _skewed_graph(seed=3, num_nodes=n))
    base = torch.randn(7, n, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    x = base.t()  # [n, 7], not contiguous
    assert not x.is_contiguous()
    first = ops.aggregate(g, x, "gcn", backend="triton")
    second = ops.aggregate(g, x, "gcn", backend="triton")
    assert torch.equal(first, second)  # bitwise repeatable: no atomics
    _close(first, ops.aggregate(g, x.contiguous(), "gcn", backend="reference"))


def test_aggregate_no_edges():
    g = _graph(5, torch.zeros(2, 0, dtype=torch.int64))
    x = torch.randn(5, 3).to(DEVICE)
    for reduce in ("sum", "mean", "max"):
        assert torch.equal(ops.aggregate(g, x, reduce, backend="triton"), torch.zeros_like(x))
    _close(ops.aggregate(g, x, "gcn", backend="triton"), x)  # (A + I) with A = 0, D = 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_goodness_two_pass_wide_rows(dtype):
    from ffkernels.triton import goodness as tg
    d = tg.MAX_SINGLE_TILE_D + 3  # wider than one register tile: read twice
    gen = torch.Generator().manual_seed(4)
    h = torch.relu(torch.randn(9, d, generator=gen)).mul(0.05).to(dtype).to(DEVICE)
    positive = (torch.rand(9, generator=gen) > 0.5).to(DEVICE)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for goodness in ("sum", "mean"):
        got = ops.goodness_loss_grad(h, positive, 2.0, goodness, backend="triton")
        ref = ops.goodness_loss_grad(h, positive, 2.0, goodness, backend="reference")
        for a, b in zip(got, ref):
            _close(a, b, tol)


def test_goodness_all_rows_positive():
    h = torch.relu(torch.randn(5, 6, generator=torch.Generator().manual_seed(5))).to(DEVICE)
    positive = torch.ones(5, dtype=torch.bool, device=DEVICE)
    for a, b in zip(ops.goodness_loss_grad(h, positive, backend="triton"),
                    ops.goodness_loss_grad(h, positive, backend="reference")):
        _close(a, b)


def test_gemm_epilogue_several_n_tiles():
    """Force 16-wide N tiles on Dout = 40 (3 tiles, the last one masked): partial sums of
    squares per tile must add up to the row goodness."""
    import ffkernels.triton.ops  # noqa: F401  (registers torch.ops.ffkernels_triton)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(21, 19, generator=gen).to(DEVICE)
    w = (torch.randn(40, 19, generator=gen) * 0.3).to(DEVICE)
    b = (torch.randn(40, generator=gen) * 0.1).to(DEVICE)
    h, partial = torch.ops.ffkernels_triton.linear_relu_sumsq(x, w, b, 16)
    assert partial.shape == (21, 3)
    ref_h = torch.relu(x @ w.t() + b)
    _close(h, ref_h)
    _close(partial.sum(1), (ref_h * ref_h).sum(1))
    _close(partial[:, 2], (ref_h[:, 32:] ** 2).sum(1))


@pytest.mark.parametrize("loss", ["ff", "symba"])
def test_linear_step_wide_output_multi_tile_path(loss):
    """Dout > MAX_FUSED_DOUT takes the partial-goodness + row-scaling path."""
    from ffkernels.triton import linear as tl_linear
    dout = tl_linear.MAX_FUSED_DOUT + 5
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(10, 6, generator=gen).to(DEVICE)
    w = (torch.randn(dout, 6, generator=gen) * 0.3).to(DEVICE)
    b = (torch.randn(dout, generator=gen) * 0.1).to(DEVICE)
    positive = (torch.arange(10) < 5).to(DEVICE)
    pairs = torch.stack([torch.arange(5), torch.arange(5, 10)], 1).to(DEVICE) if loss == "symba" else None
    got = ops.linear_goodness_step(x, w, b, positive, 2.0, "mean", loss, 1.0, pairs, backend="triton")
    ref = ops.linear_goodness_step(x, w, b, positive, 2.0, "mean", loss, 1.0, pairs, backend="reference")
    for a, r in zip(got, ref):
        _close(a, r)


def test_custom_ops_registered_with_fake_kernels():
    from torch._subclasses.fake_tensor import FakeTensorMode
    import ffkernels.triton.ops  # noqa: F401
    names = ("aggregate", "ff_goodness_loss_grad", "row_goodness", "scale_rows", "linear_relu_goodness_ff",
             "linear_relu_sumsq")
    for name in names:
        assert hasattr(torch.ops.ffkernels_triton, name), name
    with FakeTensorMode():
        x = torch.empty(8, 5)
        w = torch.empty(7, 5)
        h, g, terms, grad = torch.ops.ffkernels_triton.linear_relu_goodness_ff(
            x, w, None, torch.empty(8, dtype=torch.bool), 1.0, 2.0, 1.0)
        assert h.shape == (8, 7) and g.shape == (8,) and grad.shape == (8, 7)
        out = torch.ops.ffkernels_triton.aggregate(torch.empty(9, dtype=torch.int32),
                                                   torch.empty(20, dtype=torch.int32), x, None, "sum", None)
        assert out.shape == (8, 5)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "gcn"])
def test_aggregate_long_row_edge_split(reduce):
    """Rows longer than the split chunk are reduced in edge chunks and combined in order:
    same result as the reference, and bitwise repeatable."""
    from ffkernels.triton import aggregate as tagg
    n = 12
    ei = _skewed_graph(seed=8, num_nodes=n)  # node 3 has >= 70 in-edges: 3+ chunks of 24
    g = _graph(n, ei)
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(n, 5, generator=gen).to(DEVICE)
    w = torch.rand(ei.shape[1], generator=gen).to(DEVICE)
    weight_csr = w.index_select(0, g.edge_perm).contiguous()
    scale = ops.gcn_deg_inv_sqrt(g, weight_csr) if reduce == "gcn" else None
    plan = tagg.split_plan(g.rowptr, 24)
    assert plan.num_long >= 1 and plan.chunk_start.numel() >= 3
    first = tagg.aggregate(g.rowptr, g.col, x, weight_csr, reduce, scale, split_chunk=24)
    again = tagg.aggregate(g.rowptr, g.col, x, weight_csr, reduce, scale, split_chunk=24)
    assert torch.equal(first, again)
    # kernel level (the graph has a self loop: the op's gcn would use PyG's normalisation instead)
    from ffkernels.backends import reference
    _close(first, reference.aggregate(g.rowptr, g.col, x, weight_csr, reduce, scale))


def test_custom_ops_opcheck():
    """Schemas and fake (meta) implementations agree with the real kernels (torch.compile needs
    the fake ones)."""
    import ffkernels.triton.ops  # noqa: F401
    opcheck = getattr(torch.library, "opcheck", None)
    if opcheck is None:
        pytest.skip("torch.library.opcheck needs torch >= 2.4")
    utils = ("test_schema", "test_faketensor")
    n = 6
    g = _graph(n, torch.tensor([[0, 1, 2, 3, 4, 5, 1], [1, 2, 3, 4, 5, 0, 0]]))
    x = torch.randn(n, 5).to(DEVICE)
    nt = torch.ops.ffkernels_triton
    opcheck(nt.aggregate, (g.rowptr, g.col, x, None, "gcn", g.deg_inv_sqrt), test_utils=utils)
    opcheck(nt.aggregate, (g.rowptr, g.col, x, torch.rand(7).to(DEVICE), "max", None), test_utils=utils)
    h = torch.relu(x)
    positive = (torch.arange(n) % 2 == 0).to(DEVICE)
    opcheck(nt.ff_goodness_loss_grad, (h, positive, 1.0, 2.0, 1.0), test_utils=utils)
    opcheck(nt.row_goodness, (h, 0.2), test_utils=utils)
    opcheck(nt.scale_rows, (h, torch.rand(n).to(DEVICE), 2.0, torch.float32), test_utils=utils)
    w = torch.randn(3, 5).to(DEVICE)
    b = torch.randn(3).to(DEVICE)
    opcheck(nt.linear_relu_goodness_ff, (x, w, b, positive, 1.0, 2.0, 1.0), test_utils=utils)
    opcheck(nt.linear_relu_sumsq, (x, w, None, 0), test_utils=utils)
    opcheck(nt.ff_goodness_loss_grad_, (h.clone(), positive, 1.0, 2.0, 1.0), test_utils=utils)
    opcheck(nt.scale_rows_, (h.clone(), torch.rand(n).to(DEVICE), 2.0), test_utils=utils)
    opcheck(nt.scale_rows_out, (h, torch.rand(n).to(DEVICE), 2.0, torch.empty_like(h)), test_utils=utils)
    opcheck(nt.linear_relu_goodness_ff_out, (x, w, b, positive, 1.0, 2.0, 1.0, torch.empty(n, 3).to(DEVICE),
                                             torch.empty(n, 3).to(DEVICE)), test_utils=utils)
    opcheck(nt.linear_relu_sumsq_out, (x, w, None, 0, torch.empty(n, 3).to(DEVICE)), test_utils=utils)
    opcheck(nt.aggregate_out, (g.rowptr, g.col, x, None, "gcn", g.deg_inv_sqrt, torch.empty_like(x)), test_utils=utils)


@pytest.mark.parametrize("name", ["triton", "cuda"])
def test_default_long_row_split_against_float64(name):
    """A hub with 3000 in-edges (over the default split chunk of 1024) on both GPU backends."""
    info = ffkernels.available_backends()[name]
    if not info["available"]:
        pytest.skip(f"backend {name}: {info['reason']}")
    from ffkernels.backends import _module
    if not _module(name).supports("aggregate", DEVICE, torch.float32):
        pytest.skip(f"backend {name} does not serve {DEVICE.type}")
    gen = torch.Generator().manual_seed(10)
    n = 40
    hub = torch.stack([torch.randint(0, n, (3000,), generator=gen), torch.full((3000,), 7)])
    ei = torch.cat([torch.randint(0, n, (2, 100), generator=gen), hub], dim=1)
    g = _graph(n, ei)
    x = torch.randn(n, 8, generator=gen).to(DEVICE)
    w = torch.rand(ei.shape[1], generator=gen).to(DEVICE)
    for reduce, weight in (("sum", None), ("max", w), ("gcn", w)):
        got = ops.aggregate(g, x, reduce, weight, backend=name)
        ref = ops.aggregate(g, x.double(), reduce, weight, backend="reference").float()
        _close(got, ref)
        assert torch.equal(got, ops.aggregate(g, x, reduce, weight, backend=name))
