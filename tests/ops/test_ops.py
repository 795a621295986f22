"""Every op x every usable backend against the reference (ffkernels/backends/reference.py),
the reference's closed-form gradients against autograd, determinism of the cpu backend and
validation of bad inputs. Inputs are small: the Triton backend runs under its interpreter
on CPU-only machines.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ffkernels
from ffkernels import Graph, ops
from ffkernels.backends import reference
from ffkernels.testing import (GRAPHS, HALF_TOL, assert_close, backend_module, edge_weights, features,  # noqa: F401
                               goodness_inputs, interpreted, linear_inputs, make_graph, require_backend, tolerance)

FEATURES = (1, 3, 16, 127, 128, 129, 300)  # the AVX-512 kernel: tails, whole vectors, chunks of 128
REDUCES = ("sum", "mean", "max", "gcn")


# ----------------------------------------------------------------------------- aggregate
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("kind", GRAPHS)
def test_aggregate_matches_reference(backend, device, kind, reduce, weighted):
    require_backend(backend, "aggregate", device, torch.float32)
    small = interpreted(backend, device)
    g = make_graph(kind, device, small=small)
    w = edge_weights(g) if weighted else None
    for f in (1, 3, 129) if small else FEATURES:
        x = features(g.num_nodes, f, device=device, seed=f)
        assert_aggregate_matches(g, x, reduce, w, ops.aggregate(g, x, reduce, w, backend=backend))


def assert_aggregate_matches(g, x, reduce, w, actual):
    """``actual`` (a float32 aggregation of ``x``) against the float64 reference, with float32's
    tolerance widened by the rounding of a long float32 sum: each of a row's d additions rounds
    relative to its partial sum, so the error grows like 2^-24 sqrt(d) times the partials' size,
    bounded by the same aggregation of |x|. A fixed 1e-4 fails on the hub graph's 2500-edge row
    (its repeated sources make partial sums in the hundreds: the register kernels, which add edge
    by edge like torch, are 3.5e-3 off an entry of 212). Measured (AMD EPYC Zen 4, every ISA
    variant): the cpu kernels' worst entry uses 0.15 of this allowance; with one hub edge
    dropped, the hub row's entries are a median 24x over it."""
    tol = tolerance(torch.float32)
    w64 = None if w is None else w.double()
    expected = ops.aggregate(g, x.double(), reduce, w64, backend="reference")
    magnitude = ops.aggregate(g, x.double().abs(), reduce, None if w64 is None else w64.abs(), backend="reference")
    sqrt_degree = g.in_degree.to(torch.float64).clamp(min=1).sqrt()[:, None].to(x.device)
    assert actual.dtype == torch.float32 and actual.shape == expected.shape
    err = (actual.double() - expected).abs()
    bad = err > tol["atol"] + tol["rtol"] * expected.abs() + 2.0 ** -23 * sqrt_degree * magnitude
    f = x.shape[1]
    assert not bad.any(), (f"{reduce}, f={f}: {int(bad.sum())} of {bad.numel()} entries off, worst "
                           f"{float(err.max()):.3g} at {divmod(int(err.argmax()), f)}")


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_aggregate_non_contiguous_x(backend, device, layout):
    require_backend(backend, "aggregate", device, torch.float32)
    g = make_graph("random", device, small=interpreted(backend, device))
    x = features(g.num_nodes, 33, device=device, layout=layout)
    assert not x.is_contiguous()
    for reduce in REDUCES:
        # (the op on the reference backend: a graph with self loops gets PyG's GCN normalisation)
        expected = ops.aggregate(g, x.contiguous(), reduce, backend="reference")
        assert_close(ops.aggregate(g, x, reduce, backend=backend), expected, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("reduce", REDUCES)
def test_aggregate_dtypes(backend, device, dtype, reduce):
    require_backend(backend, "aggregate", device, dtype)
    for kind in ("random", "hub"):
        g = make_graph(kind, device, small=interpreted(backend, device))
        w = edge_weights(g, dtype=dtype)
        x = features(g.num_nodes, 37, dtype=dtype, device=device)
        for weight in (None, w):
            expected = ops.aggregate(g, x, reduce, weight, backend="reference")
            assert_close(ops.aggregate(g, x, reduce, weight, backend=backend), expected, dtype)


def test_aggregate_int64_indices(backend, device):
    require_backend(backend, "aggregate", device, torch.float32)
    g = make_graph("hub", device, small=interpreted(backend, device))
    g64 = Graph(g.rowptr.to(torch.int64), g.col.to(torch.int64), g.edge_perm, g.num_nodes)
    x = features(g.num_nodes, 20, device=device)
    for reduce in REDUCES:
        assert_close(ops.aggregate(g64, x, reduce, backend=backend),
                     ops.aggregate(g, x, reduce, backend="reference"), torch.float32)


def test_aggregate_values_by_hand():
    """The reference itself on a 3-node graph (0->1, 2->1, 1->1 with weights 1, 2, 3)."""
    g = Graph.from_edge_index(torch.tensor([[0, 2, 1], [1, 1, 1]]), 3)
    x = torch.tensor([[1.0], [10.0], [100.0]])
    w = torch.tensor([1.0, 2.0, 3.0])
    for name in ["reference", "cpu"]:
        if not ffkernels.available_backends()[name]["available"]:
            continue
        assert ops.aggregate(g, x, "sum", backend=name).flatten().tolist() == [0, 111, 0]
        assert ops.aggregate(g, x, "sum", w, backend=name).flatten().tolist() == [0, 231, 0]
        assert ops.aggregate(g, x, "mean", backend=name).flatten().tolist() == [0, 37, 0]
        assert ops.aggregate(g, x, "max", w, backend=name).flatten().tolist() == [0, 200, 0]
        # gcn, PyG's GCNConv normalisation: the self loop 1->1 is kept as node 1's one self loop
        # (not doubled), so D = [1, 3, 1]; with weights its weight 3 stays: D = [1, 1 + 2 + 3, 1]
        gcn = ops.aggregate(g, x, "gcn", backend=name).flatten()
        exp = torch.tensor([1.0, (1 * 1 + 1 * 100) / 3 ** 0.5 + 10 / 3, 100.0])
        torch.testing.assert_close(gcn, exp)
        gcn_w = ops.aggregate(g, x, "gcn", w, backend=name).flatten()
        exp_w = torch.tensor([1.0, (1 * 1 + 2 * 100) / 6 ** 0.5 + 3 * 10 / 6, 100.0])
        torch.testing.assert_close(gcn_w, exp_w)


def test_aggregate_gcn_equals_dense_formula():
    """PyG's GCN on a graph with duplicate edges and self loops: multi-edges add up, each node's
    self loops are replaced by one of weight 1 (tests/nn/test_edge_weights.py: against GCNConv)."""
    g = make_graph("dup_self")
    x = features(g.num_nodes, 5, dtype=torch.float64)
    a = g.to_torch_sparse_csr(dtype=torch.float64).to_dense()
    a.fill_diagonal_(1.0)
    d = a.sum(1).rsqrt()
    expected = d[:, None] * a * d[None, :] @ x
    torch.testing.assert_close(ops.aggregate(g, x, "gcn", backend="reference"), expected)
    if ffkernels.available_backends()["cpu"]["available"]:
        torch.testing.assert_close(ops.aggregate(g, x, "gcn", backend="cpu"), expected)


# ----------------------------------------------------------------------------- goodness
def autograd_loss(h, positive, theta, goodness, loss, temperature, alpha, pairs):
    """The local loss written directly (independently of the closed form), for autograd."""
    k = 1.0 if goodness == "sum" else 1.0 / max(h.shape[1], 1)
    g = k * (h * h).sum(1)
    if loss == "ff":
        s = (g - theta) / temperature
        total = h.new_zeros(())
        if positive.any():
            total = total + F.softplus(-s[positive]).mean()
        if (~positive).any():
            total = total + F.softplus(s[~positive]).mean()
        return total
    d = g[pairs[:, 0]] - g[pairs[:, 1]]
    return F.softplus(-alpha * d).sum() / max(pairs.shape[0], 1)


LOSS_CASES = [("ff", "sum"), ("ff", "mean"), ("symba", "sum"), ("symba", "mean")]


@pytest.mark.parametrize("loss,goodness", LOSS_CASES)
@pytest.mark.parametrize("positives", ["mixed", "all", "none"])
def test_reference_goodness_grad_equals_autograd(loss, goodness, positives):
    z, positive, pairs = goodness_inputs(37, 11, torch.float64, positives=positives)
    z.requires_grad_(True)
    h = torch.relu(z)
    theta, temperature, alpha = 0.7, 1.3, 4.0
    expected = autograd_loss(h, positive, theta, goodness, loss, temperature, alpha, pairs)
    (grad_auto,) = torch.autograd.grad(expected, z)
    total, g, grad_z = reference.goodness_loss_grad(h.detach(), positive, theta, goodness, loss, temperature,
                                                    alpha, pairs if loss == "symba" else None)
    assert abs(float(total) - float(expected)) <= 1e-6 * max(1.0, abs(float(expected)))
    rel = (grad_z - grad_auto).norm() / grad_auto.norm().clamp_min(1e-300)
    assert rel < 1e-6, rel


@pytest.mark.parametrize("loss,goodness", LOSS_CASES)
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (63, 3), (70, 127), (40, 129)])
def test_goodness_loss_grad_matches_reference(backend, device, loss, goodness, shape):
    require_backend(backend, "goodness_loss_grad", device, torch.float32)
    n, d = shape
    for positives in ("mixed", "all", "none"):
        z, positive, pairs = goodness_inputs(n, d, torch.float32, device, positives=positives)
        h = torch.relu(z)
        kw = dict(theta=0.9, goodness=goodness, loss=loss, temperature=0.8, alpha=3.0,
                  pairs=pairs if loss == "symba" else None)
        expected = ops.goodness_loss_grad(h, positive, backend="reference", **kw)
        actual = ops.goodness_loss_grad(h, positive, backend=backend, **kw)
        assert actual[0].dim() == 0
        for a, e in zip(actual, expected):
            assert_close(a, e, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("loss", ["ff", "symba"])
def test_goodness_loss_grad_dtypes(backend, device, dtype, loss):
    require_backend(backend, "goodness_loss_grad", device, dtype)
    z, positive, pairs = goodness_inputs(50, 33, dtype, device)
    h = torch.relu(z)
    kw = dict(theta=1.0, loss=loss, pairs=pairs if loss == "symba" else None)
    expected = ops.goodness_loss_grad(h, positive, backend="reference", **kw)
    actual = ops.goodness_loss_grad(h, positive, backend=backend, **kw)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert actual[0].dtype == acc and actual[1].dtype == acc and actual[2].dtype == dtype
    for a, e in zip(actual, expected):
        assert_close(a, e, dtype if a.dtype == dtype else (dtype if dtype == torch.float64 else torch.float32))


def test_goodness_backends_grad_equals_autograd(device):
    """Every backend's closed form (float64 where supported) against autograd."""
    for loss, goodness in LOSS_CASES:
        z, positive, pairs = goodness_inputs(45, 9, torch.float64, device)
        z.requires_grad_(True)
        h = torch.relu(z)
        expected = autograd_loss(h, positive, 1.1, goodness, loss, 1.0, 4.0, pairs)
        (grad_auto,) = torch.autograd.grad(expected, z)
        for name in ["reference", "cpu", "triton", "cuda"]:
            info = ffkernels.available_backends()[name]
            if not info["available"] or not backend_module(name).supports(
                    "goodness_loss_grad", device, torch.float64):
                continue
            total, _, grad_z = ops.goodness_loss_grad(h.detach(), positive, 1.1, goodness, loss, 1.0,
                                                      pairs if loss == "symba" else None, 4.0, backend=name)
            assert abs(float(total) - float(expected)) <= 1e-9 * max(1.0, abs(float(expected)))
            assert (grad_z - grad_auto).norm() / grad_auto.norm() < 1e-6, name


# ----------------------------------------------------------------------------- linear step
@pytest.mark.parametrize("loss,goodness", LOSS_CASES)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
def test_linear_goodness_step_equals_autograd(loss, goodness, with_bias):
    x, w, b, positive, pairs = linear_inputs(40, 13, 7, torch.float64)
    w.requires_grad_(True)
    b.requires_grad_(True)
    bias = b if with_bias else None
    h = torch.relu(F.linear(x, w, bias))
    expected = autograd_loss(h, positive, 0.8, goodness, loss, 1.0, 4.0, pairs)
    grads = torch.autograd.grad(expected, [w, b] if with_bias else [w])
    names = [n for n in ("reference", "cpu", "triton", "cuda") if ffkernels.available_backends()[n]["available"] and
             backend_module(n).supports("linear_goodness_step", x.device, torch.float64)]
    for name in names:
        total, g, gw, gb, hh = ops.linear_goodness_step(x, w.detach(), None if bias is None else b.detach(), positive,
                                                        0.8, goodness, loss, 1.0, pairs if loss == "symba" else None,
                                                        4.0, backend=name)
        assert abs(float(total) - float(expected)) < 1e-9, name
        assert (gw - grads[0]).norm() / grads[0].norm() < 1e-6, name
        if with_bias:
            assert (gb - grads[1]).norm() / grads[1].norm() < 1e-6, name
        else:
            assert gb is None
        torch.testing.assert_close(hh, h.detach())


@pytest.mark.parametrize("loss,goodness", LOSS_CASES)
@pytest.mark.parametrize("shape", [(0, 4, 3), (1, 1, 1), (50, 17, 129), (64, 129, 33)])
def test_linear_goodness_step_matches_reference(backend, device, loss, goodness, shape):
    require_backend(backend, "linear_goodness_step", device, torch.float32)
    x, w, b, positive, pairs = linear_inputs(*shape, device=device)
    for bias in (b, None):
        kw = dict(theta=0.5, goodness=goodness, loss=loss, pairs=pairs if loss == "symba" else None)
        expected = ops.linear_goodness_step(x, w, bias, positive, backend="reference", **kw)
        actual = ops.linear_goodness_step(x, w, bias, positive, backend=backend, **kw)
        for a, e in zip(actual, expected):
            if e is None:
                assert a is None
            else:
                assert_close(a, e, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_linear_goodness_step_dtypes(backend, device, dtype):
    require_backend(backend, "linear_goodness_step", device, dtype)
    x, w, b, positive, _ = linear_inputs(30, 24, 16, dtype, device)
    expected = ops.linear_goodness_step(x, w, b, positive, 1.0, backend="reference")
    actual = ops.linear_goodness_step(x, w, b, positive, 1.0, backend=backend)
    for a, e in zip(actual, expected):
        tol_dtype = dtype if a.dtype == dtype else (torch.float64 if dtype == torch.float64 else torch.float32)
        if dtype in HALF_TOL:  # half GEMM inputs: compare with a relative tolerance of the scale
            torch.testing.assert_close(a.double(), e.double(), rtol=3e-2, atol=3e-2 * float(e.abs().max()) + 1e-3)
        else:
            assert_close(a, e, tol_dtype)


# ----------------------------------------------------------------------------- cpu specifics
needs_cpu = pytest.mark.skipif(not ffkernels.available_backends()["cpu"]["available"],
                               reason=f"cpu backend: {ffkernels.available_backends()['cpu']['reason']}")


@needs_cpu
def test_cpu_backend_is_bitwise_repeatable():
    g = make_graph("hub")
    x = features(g.num_nodes, 129)
    w = edge_weights(g)
    z, positive, pairs = goodness_inputs(300, 129)
    h = torch.relu(z)
    xl, wl, bl, pl, prl = linear_inputs(64, 33, 17)

    def run_all():
        out = [ops.aggregate(g, x, r, ew, backend="cpu") for r in REDUCES for ew in (None, w)]
        out += list(ops.goodness_loss_grad(h, positive, backend="cpu"))
        out += list(ops.goodness_loss_grad(h, positive, loss="symba", pairs=pairs, backend="cpu"))
        return out

    threads = torch.get_num_threads()
    first = run_all()
    assert all(torch.equal(a, b) for a, b in zip(first, run_all()))
    lin = [ops.linear_goodness_step(xl, wl, bl, pl, backend="cpu") for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*lin))
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            assert all(torch.equal(a, b) for a, b in zip(first, run_all())), n
    finally:
        torch.set_num_threads(threads)


@needs_cpu
@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_cpu_isa_variants_match(monkeypatch, isa):
    """The portable and the AVX2 aggregate kernels (float32 sum/mean/gcn: AVX2's register
    kernel, 64 features a pass), forced at run time (the default is the machine's best: AVX-512
    where it has it), agree with the default and the reference at every width (tails, whole
    vectors, passes), weighted or not."""
    from ffkernels import _C
    g = make_graph("hub")
    w = edge_weights(g)
    best = _C.cpu_isa()
    cases = [(r, f, weight) for r in REDUCES for f in FEATURES for weight in (None, w)]
    xs = {f: features(g.num_nodes, f, seed=f) for f in FEATURES}
    fast = [ops.aggregate(g, xs[f], r, weight, backend="cpu") for r, f, weight in cases]
    monkeypatch.setenv("FFKERNELS_CPU_ISA", isa)
    assert _C.cpu_isa() == (isa if best != "baseline" else "baseline")
    for (r, f, weight), a in zip(cases, fast):
        b = ops.aggregate(g, xs[f], r, weight, backend="cpu")
        assert_aggregate_matches(g, xs[f], r, weight, a)
        assert_aggregate_matches(g, xs[f], r, weight, b)


@needs_cpu
@pytest.mark.parametrize("env", [{"FFKERNELS_HUGEPAGES": "0"}, {"FFKERNELS_PREFAULT": "0"}], ids=["no-hugepages", "no-prefault"])
def test_aggregate_large_fresh_output(monkeypatch, env):
    """A fresh output over 4 MiB is populated (and advised huge pages) before the kernel writes
    it: the same values, bitwise, as with either step turned off, and the reference's."""
    gen = torch.Generator().manual_seed(3)
    n = 20_000  # [20000, 64] float32: 5 MB, over the 4 MiB threshold
    g = Graph.from_edge_index(torch.randint(0, n, (2, 100_000), generator=gen), n)
    x = torch.randn(n, 64, generator=gen)
    default = ops.aggregate(g, x, "sum", backend="cpu")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert torch.equal(ops.aggregate(g, x, "sum", backend="cpu"), default)
    assert_close(default, ops.aggregate(g, x, "sum", backend="reference"), torch.float32)


@needs_cpu
def test_extension_build_info():
    from ffkernels import _C
    info = _C.build_info()
    assert info["version"] == ffkernels.__version__
    assert isinstance(_C.has_cuda(), bool) and info["cuda"] == _C.has_cuda()
    assert _C.num_threads() == torch.get_num_threads()
    assert {"aggregate", "goodness_loss_grad", "linear_goodness_step"} <= set(dir(torch.ops.ffkernels))


@needs_cpu
def test_custom_ops_opcheck():
    g = make_graph("random")
    x = features(g.num_nodes, 8)
    torch.library.opcheck(torch.ops.ffkernels.aggregate.default, (g.rowptr, g.col, x, None, "gcn", g.deg_inv_sqrt))
    z, positive, pairs = goodness_inputs(20, 6)
    torch.library.opcheck(torch.ops.ffkernels.goodness_loss_grad.default,
                          (torch.relu(z), positive, 1.0, "sum", "symba", 1.0, 4.0, pairs))
    torch.library.opcheck(torch.ops.ffkernels.goodness_loss_grad_.default,
                          (torch.relu(z), positive, 1.0, "mean", "ff", 1.0, 4.0, None))
    xl, wl, bl, pl, _ = linear_inputs(10, 5, 4)
    for bias in (bl, None):
        torch.library.opcheck(torch.ops.ffkernels.linear_goodness_step.default,
                              (xl, wl, bias, pl, 1.0, "mean", "ff", 1.0, 4.0, None))
        torch.library.opcheck(torch.ops.ffkernels.linear_goodness_step_out.default,
                              (xl, wl, bias, pl, 1.0, "mean", "ff", 1.0, 4.0, None, torch.empty(10, 4),
                               torch.empty(10, 4)))


@needs_cpu
def test_default_backend_for_cpu_tensors_is_cpu():
    from ffkernels.backends import resolve
    for op in ("aggregate", "goodness_loss_grad", "linear_goodness_step"):
        assert resolve(op, None, torch.device("cpu"), torch.float32).NAME == "cpu"


# ----------------------------------------------------------------------------- bad inputs
def test_aggregate_bad_inputs():
    g = make_graph("random")
    x = features(g.num_nodes, 4)
    with pytest.raises(TypeError, match="graph"):
        ops.aggregate(g.edge_index(), x)
    with pytest.raises(ValueError, match="x"):
        ops.aggregate(g, x[:-1])
    with pytest.raises(ValueError, match="x"):
        ops.aggregate(g, x[:, 0])
    with pytest.raises(TypeError, match="x"):
        ops.aggregate(g, x.to(torch.int64))
    with pytest.raises(TypeError, match="x"):
        ops.aggregate(g, torch.complex(x, x))
    with pytest.raises(TypeError, match="x"):
        ops.aggregate(g, x.numpy())
    with pytest.raises(ValueError, match="reduce"):
        ops.aggregate(g, x, "min")
    with pytest.raises(ValueError, match="edge_weight"):
        ops.aggregate(g, x, "sum", torch.ones(g.num_edges + 1))
    with pytest.raises(TypeError, match="edge_weight"):
        ops.aggregate(g, x, "sum", torch.ones(g.num_edges, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend"):
        ops.aggregate(g, x, backend="gpu")
    with pytest.raises(ValueError, match="backend"):
        ops.aggregate(g, x, backend="numpy")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_forcing_cuda_backend_on_cpu_tensors_raises():
    g = make_graph("random")
    x = features(g.num_nodes, 4)
    with pytest.raises(ValueError, match="cuda"):
        ops.aggregate(g, x, backend="cuda")
    h, positive, _ = goodness_inputs(10, 3)
    with pytest.raises(ValueError, match="cuda"):
        ops.goodness_loss_grad(h, positive, backend="cuda")


def test_bad_device_names():
    with pytest.raises((RuntimeError, ValueError), match="device|Device"):
        make_graph("random").to("tpu:banana")
    g = make_graph("random")
    x = features(g.num_nodes, 4, device="meta")
    with pytest.raises(ValueError, match="x"):
        ops.aggregate(g, x)


def test_goodness_bad_inputs():
    h, positive, pairs = goodness_inputs(10, 3)
    with pytest.raises(TypeError, match="positive"):
        ops.goodness_loss_grad(h, positive.to(torch.int64))
    with pytest.raises(ValueError, match="positive"):
        ops.goodness_loss_grad(h, positive[:-1])
    with pytest.raises(TypeError, match="h"):
        ops.goodness_loss_grad(h.to(torch.int32), positive)
    with pytest.raises(TypeError, match="h"):
        ops.goodness_loss_grad(torch.complex(h, h), positive)
    with pytest.raises(ValueError, match="h"):
        ops.goodness_loss_grad(h[0], positive)
    with pytest.raises(ValueError, match="goodness"):
        ops.goodness_loss_grad(h, positive, goodness="max")
    with pytest.raises(ValueError, match="loss"):
        ops.goodness_loss_grad(h, positive, loss="hinge")
    with pytest.raises(ValueError, match="temperature"):
        ops.goodness_loss_grad(h, positive, temperature=0.0)
    with pytest.raises(ValueError, match="theta"):
        ops.goodness_loss_grad(h, positive, theta=float("nan"))
    with pytest.raises(ValueError, match="pairs"):
        ops.goodness_loss_grad(h, positive, loss="symba")
    with pytest.raises(ValueError, match="pairs"):
        ops.goodness_loss_grad(h, positive, loss="symba", pairs=pairs + 10)
    with pytest.raises(ValueError, match="pairs"):
        ops.goodness_loss_grad(h, positive, loss="symba", pairs=-pairs - 1)
    with pytest.raises(TypeError, match="pairs"):
        ops.goodness_loss_grad(h, positive, loss="symba", pairs=pairs.float())
    with pytest.raises(ValueError, match="pairs"):
        ops.goodness_loss_grad(h, positive, loss="symba", pairs=pairs[:, :1])
    with pytest.raises(ValueError, match="backend"):
        ops.goodness_loss_grad(h, positive, backend="fast")


def test_linear_step_bad_inputs():
    x, w, b, positive, _ = linear_inputs(10, 5, 4)
    with pytest.raises(ValueError, match="weight"):
        ops.linear_goodness_step(x, w[:, :-1], b, positive)
    with pytest.raises(TypeError, match="weight"):
        ops.linear_goodness_step(x, w.double(), b, positive)
    with pytest.raises(ValueError, match="bias"):
        ops.linear_goodness_step(x, w, b[:-1], positive)
    with pytest.raises(TypeError, match="bias"):
        ops.linear_goodness_step(x, w, b.double(), positive)
    with pytest.raises(ValueError, match="positive"):
        ops.linear_goodness_step(x, w, b, positive[:3])
    with pytest.raises(TypeError, match="positive"):
        ops.linear_goodness_step(x, w, b, positive.float())
    with pytest.raises(TypeError, match="x"):
        ops.linear_goodness_step(x.long(), w, b, positive)


@needs_cpu
def test_cpu_kernels_reject_bad_raw_arguments():
    """The compiled ops check what would otherwise read out of bounds, even without the Python layer."""
    g = make_graph("random")
    x = features(g.num_nodes, 4)
    with pytest.raises(RuntimeError, match="reduce"):
        torch.ops.ffkernels.aggregate(g.rowptr, g.col, x, None, "min", None)
    with pytest.raises(RuntimeError, match="rowptr"):
        torch.ops.ffkernels.aggregate(g.rowptr[:-1], g.col, x, None, "sum", None)
    with pytest.raises(RuntimeError, match="deg_inv_sqrt"):
        torch.ops.ffkernels.aggregate(g.rowptr, g.col, x, None, "gcn", None)
    h, positive, pairs = goodness_inputs(10, 3)
    with pytest.raises(RuntimeError, match="pairs"):
        torch.ops.ffkernels.goodness_loss_grad(h, positive, 1.0, "sum", "symba", 1.0, 4.0, pairs + 100)
