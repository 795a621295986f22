"""In-place goodness (``goodness_loss_grad(..., inplace=True)``) and the caller buffers of
``linear_goodness_step`` (``h_out=``, ``grad_z_out=``): same results as the reference, the
returned tensors are the caller's storage, and no ``[N, D]`` tensor is allocated."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from ffkernels import ops
from ffkernels.backends import reference
from ffkernels.testing import assert_close, goodness_inputs, interpreted, linear_inputs, require_backend

LOSS_CASES = [("ff", "sum"), ("ff", "mean"), ("symba", "sum"), ("symba", "mean")]
BACKENDS = ("reference", "cpu", "triton", "cuda")


def largest_allocation(fn, device) -> int:
    """Bytes of the largest single tensor allocation made while ``fn`` runs (CPU: the profiler's
    memory events, which include allocations inside the compiled ops; CUDA: the allocator's peak)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max([e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0], default=0)


@pytest.fixture
def small_reference_chunks(monkeypatch):
    # The reference works in row chunks of at most this many elements: make the test's [N, D]
    # span many chunks, so that a chunk-sized temporary is not mistaken for an [N, D] one.
    monkeypatch.setattr(reference, "_INPLACE_CHUNK_ELEMENTS", 256)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("loss,goodness", LOSS_CASES)
@pytest.mark.parametrize("name", BACKENDS)
def test_inplace_goodness_matches_reference(name, device, loss, goodness, dtype, small_reference_chunks):
    require_backend(name, "goodness_loss_grad", device, dtype)
    n, d = (40, 33) if interpreted(name, device) else (300, 129)
    for positives in ("mixed", "all", "none"):
        z, positive, pairs = goodness_inputs(n, d, dtype, device, positives=positives)
        h = torch.relu(z)
        kw = dict(theta=0.9, goodness=goodness, loss=loss, temperature=0.8, alpha=3.0,
                  pairs=pairs if loss == "symba" else None)
        expected = ops.goodness_loss_grad(h, positive, backend="reference", **kw)
        buf = h.clone()
        ptr = buf.data_ptr()
        total, g, grad = ops.goodness_loss_grad(buf, positive, backend=name, inplace=True, **kw)
        assert grad is buf and grad.data_ptr() == ptr  # grad_z lives in h's storage
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        assert_close(total, expected[0], acc if dtype != torch.bfloat16 else dtype)
        assert_close(g, expected[1], acc if dtype != torch.bfloat16 else dtype)
        assert_close(grad, expected[2], dtype)


@pytest.mark.parametrize("loss", ["ff", "symba"])
@pytest.mark.parametrize("name", BACKENDS)
def test_inplace_goodness_allocates_no_row_sized_tensor(name, device, loss, small_reference_chunks):
    require_backend(name, "goodness_loss_grad", device, torch.float32)
    if interpreted(name, device):
        pytest.skip("the Triton interpreter copies its arguments to host buffers: only a GPU run can tell")
    z, positive, pairs = goodness_inputs(512, 96, device=device)
    h = torch.relu(z)
    nbytes = h.numel() * h.element_size()
    pairs = pairs if loss == "symba" else None
    ops.goodness_loss_grad(h.clone(), positive, loss=loss, pairs=pairs, backend=name, inplace=True)  # warm-up
    assert largest_allocation(lambda: ops.goodness_loss_grad(h, positive, loss=loss, pairs=pairs, backend=name,
                                                              inplace=True), device) < nbytes // 4
    # the check can fail: the allocating variant makes an [N, D] tensor
    assert largest_allocation(lambda: ops.goodness_loss_grad(h, positive, loss=loss, pairs=pairs, backend=name),
                              device) >= nbytes


def test_inplace_goodness_bad_inputs():
    z, positive, _ = goodness_inputs(10, 6)
    h = torch.relu(z)
    with pytest.raises(ValueError, match="inplace.*contiguous"):
        ops.goodness_loss_grad(h.t().contiguous().t(), positive, inplace=True)
    with pytest.raises(TypeError, match="inplace"):
        ops.goodness_loss_grad(h, positive, inplace=1)
    with pytest.raises(RuntimeError, match="no autograd"):
        ops.goodness_loss_grad(h.requires_grad_(True), positive, inplace=True)


def test_inplace_goodness_repeatable(backend, device):
    require_backend(backend, "goodness_loss_grad", device, torch.float32)
    z, positive, pairs = goodness_inputs(200, 40, device=device)
    h = torch.relu(z)
    for loss in ("ff", "symba"):
        kw = dict(loss=loss, pairs=pairs if loss == "symba" else None, backend=backend)
        a, b = h.clone(), h.clone()
        ra = ops.goodness_loss_grad(a, positive, inplace=True, **kw)
        rb = ops.goodness_loss_grad(b, positive, inplace=True, **kw)
        assert all(torch.equal(x, y) for x, y in zip(ra, rb))
        assert torch.equal(a, ops.goodness_loss_grad(h, positive, **kw)[2])  # same bits as the allocating path


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("loss,goodness", LOSS_CASES)
@pytest.mark.parametrize("name", BACKENDS)
def test_linear_step_caller_buffers(name, device, loss, goodness, dtype):
    require_backend(name, "linear_goodness_step", device, dtype)
    shape = (30, 17, 20) if interpreted(name, device) else (64, 33, 129)
    x, w, b, positive, pairs = linear_inputs(*shape, dtype=dtype, device=device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    kw = dict(theta=0.5, goodness=goodness, loss=loss, pairs=pairs if loss == "symba" else None)
    expected = ops.linear_goodness_step(x, w, b, positive, backend="reference", **kw)
    for which in ("both", "h_out", "grad_z_out"):
        h_buf = torch.full((shape[0], shape[2]), 7.0, dtype=dtype, device=device) if which != "grad_z_out" else None
        z_buf = torch.full((shape[0], shape[2]), 7.0, dtype=acc, device=device) if which != "h_out" else None
        got = ops.linear_goodness_step(x, w, b, positive, backend=name, h_out=h_buf, grad_z_out=z_buf, **kw)
        if h_buf is not None:
            assert got[4].data_ptr() == h_buf.data_ptr()
        if z_buf is not None:  # holds grad_z = dloss/dz afterwards
            ref_grad = ops.goodness_loss_grad(expected[4].to(acc), positive, backend="reference", **kw)[2]
            torch.testing.assert_close(z_buf.double(), ref_grad.double(), rtol=3e-2 if dtype == torch.bfloat16 else 1e-4,
                                       atol=1e-3 if dtype == torch.bfloat16 else 1e-5)
        for a, e in zip(got, expected):
            if e is None:
                assert a is None
            elif dtype == torch.bfloat16:
                torch.testing.assert_close(a.double(), e.double(), rtol=3e-2, atol=3e-2 * float(e.abs().max()) + 1e-3)
            else:
                assert_close(a, e, dtype if a.dtype == dtype else acc)


def test_linear_step_buffers_allocate_no_output(device):
    require_backend("cpu", "linear_goodness_step", device, torch.float32)
    if torch.device(device).type != "cpu":
        pytest.skip("cpu backend")
    x, w, b, positive, _ = linear_inputs(2048, 16, 64)
    h_buf, z_buf = torch.empty(2048, 64), torch.empty(2048, 64)
    nbytes = h_buf.numel() * 4
    run = lambda: ops.linear_goodness_step(x, w, b, positive, backend="cpu", h_out=h_buf, grad_z_out=z_buf)  # noqa: E731
    run()
    assert largest_allocation(run, device) < nbytes // 4
    assert largest_allocation(lambda: ops.linear_goodness_step(x, w, b, positive, backend="cpu"), device) >= nbytes


def test_linear_step_buffer_bad_inputs():
    x, w, b, positive, _ = linear_inputs(10, 5, 4)
    with pytest.raises(ValueError, match="h_out"):
        ops.linear_goodness_step(x, w, b, positive, h_out=torch.empty(10, 5))
    with pytest.raises(TypeError, match="h_out"):
        ops.linear_goodness_step(x, w, b, positive, h_out=torch.empty(10, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="grad_z_out"):
        ops.linear_goodness_step(x, w, b, positive, grad_z_out=torch.empty(10, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="grad_z_out"):
        ops.linear_goodness_step(x, w, b, positive, grad_z_out=torch.empty(4, 10).t())
    buf = torch.empty(10, 4)
    with pytest.raises(ValueError, match="share memory"):
        ops.linear_goodness_step(x, w, b, positive, h_out=buf, grad_z_out=buf)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "gcn"])
@pytest.mark.parametrize("name", BACKENDS)
def test_aggregate_out_buffer(name, device, reduce):
    from ffkernels.testing import edge_weights, features, make_graph
    require_backend(name, "aggregate", device, torch.float32)
    g = make_graph("hub", device, small=interpreted(name, device))
    x = features(g.num_nodes, 33, device=device)
    w = edge_weights(g)
    for ew in (None, w):
        buf = torch.full_like(x, 7.0)
        got = ops.aggregate(g, x, reduce, ew, backend=name, out=buf)
        assert got is buf
        assert torch.equal(buf, ops.aggregate(g, x, reduce, ew, backend=name))  # same bits as allocating
        exact = ops.aggregate(g, x.double(), reduce, None if ew is None else ew.double(), backend="reference")
        # a 2500-edge hub row in float32: sums carry ~sqrt(E) eps |x| of rounding on any backend
        torch.testing.assert_close(buf, exact.float(), rtol=2e-4, atol=5e-3)


def test_aggregate_out_allocates_no_output_and_checks_its_buffer():
    from ffkernels.testing import features, make_graph
    require_backend("cpu", "aggregate", "cpu", torch.float32)
    g = make_graph("random")
    x = features(g.num_nodes, 256)
    buf = torch.empty_like(x)
    nbytes = x.numel() * x.element_size()
    ops.aggregate(g, x, "gcn", out=buf)
    assert largest_allocation(lambda: ops.aggregate(g, x, "gcn", out=buf), "cpu") < nbytes // 4
    assert largest_allocation(lambda: ops.aggregate(g, x, "gcn"), "cpu") >= nbytes
    with pytest.raises(ValueError, match="out"):
        ops.aggregate(g, x, out=buf[:-1])
    with pytest.raises(TypeError, match="out"):
        ops.aggregate(g, x, out=buf.double())
    with pytest.raises(ValueError, match="out"):
        ops.aggregate(g, x, out=torch.empty(256, g.num_nodes).t())
    with pytest.raises(ValueError, match="out"):
        ops.aggregate(g, x, out=x)
    with pytest.raises(RuntimeError, match="autograd"):
        ops.aggregate(g, x.clone().requires_grad_(True), out=buf)
    torch.library.opcheck(torch.ops.ffkernels.aggregate_out.default,
                          (g.rowptr, g.col, x, None, "gcn", g.deg_inv_sqrt, torch.empty_like(x)))
