"""Autograd through the ops: aggregate has real gradients on every backend (gradcheck in float64
where the backend serves float64, agreement with the reference's autograd elsewhere); the
closed-form ops refuse to be recorded instead of returning a dummy grad_fn."""
from __future__ import annotations

import pytest
import torch

import ffkernels
from ffkernels import ops
from ffkernels.testing import (GRAPHS, backend_module, edge_weights, features, goodness_inputs, interpreted,
                               linear_inputs, make_graph, require_backend)

REDUCES = ("sum", "mean", "max", "gcn")

ALL_BACKENDS = ("reference", "cpu", "triton", "cuda")


def _serves(name, op, device, dtype):
    return (ffkernels.available_backends()[name]["available"]
            and backend_module(name).supports(op, torch.device(device), dtype))


def _gradcheck_graphs(device):
    """Small adversarial graphs (gradcheck is quadratic in the input size): random edges, an
    isolated node (11), a hub (node 2: in-degree 12), duplicate edges, self loops; and no edges."""
    gen = torch.Generator().manual_seed(0)
    ei = torch.cat([torch.randint(0, 11, (2, 14), generator=gen),
                    torch.stack([torch.randint(0, 11, (12,), generator=gen), torch.full((12,), 2)]),
                    torch.tensor([[4, 4, 6, 6], [5, 5, 6, 6]])], 1)
    return [ffkernels.Graph.from_edge_index(ei.to(device), 12),
            ffkernels.Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.int64).to(device), 4)]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduce", REDUCES)
@pytest.mark.parametrize("name", ["cpu", "cuda"])
def test_aggregate_gradcheck_float64(name, device, reduce, weighted):
    if not _serves(name, "aggregate", device, torch.float64):
        pytest.skip(f"{name} does not serve float64 aggregate on {device}")
    for g in _gradcheck_graphs(device):
        x = features(g.num_nodes, 3, torch.float64, device).requires_grad_(True)
        w = edge_weights(g, torch.float64).requires_grad_(weighted)

        def f(x, w):
            return ops.aggregate(g, x, reduce, w if weighted else None, backend=name)
        assert f(x, w).requires_grad
        torch.autograd.gradcheck(f, (x, w), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduce", REDUCES)
def test_aggregate_backward_matches_reference(backend, device, reduce):
    """Every backend's gradients (float32) against the reference's autograd, on the adversarial graphs."""
    require_backend(backend, "aggregate", device, torch.float32)
    small = interpreted(backend, device)
    for kind in ("random", "dup_self", "empty") if small else GRAPHS:
        g = make_graph(kind, device, small=small)
        seed_g = torch.Generator().manual_seed(3)
        for weighted in (False, True):
            results = []
            for name in ("reference", backend):
                x = features(g.num_nodes, 3 if small else 33, device=device).requires_grad_(True)
                w = edge_weights(g).requires_grad_(True) if weighted else None
                out = ops.aggregate(g, x, reduce, w, backend=name)
                upstream = torch.randn(out.shape, generator=seed_g.manual_seed(5)).to(device)
                out.backward(upstream)
                results.append((x.grad, None if w is None else w.grad))
            (gx_ref, gw_ref), (gx, gw) = results
            assert gx is not None, (kind, weighted)
            torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-4)
            if weighted:
                torch.testing.assert_close(gw, gw_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cpu"])
def test_aggregate_backward_is_bitwise_repeatable(name):
    if not _serves(name, "aggregate", "cpu", torch.float32):
        pytest.skip(f"{name} unavailable")
    g = make_graph("hub")
    grads = []
    for _ in range(2):
        x = features(g.num_nodes, 40).requires_grad_(True)
        w = edge_weights(g).requires_grad_(True)
        for reduce in REDUCES:
            ops.aggregate(g, x, reduce, w, backend=name).square().sum().backward()
        grads.append((x.grad, w.grad))
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_aggregate_gcn_gradient_reaches_the_weighted_degree():
    """With weights, gcn's degree depends on them: the weight gradient includes that path."""
    if not _serves("cpu", "aggregate", "cpu", torch.float64):
        pytest.skip("cpu unavailable")
    g = make_graph("dup_self", small=True)
    grads = []
    for name in ("reference", "cpu"):
        x = features(g.num_nodes, 4, torch.float64)
        w = edge_weights(g, torch.float64).requires_grad_(True)
        ops.aggregate(g, x, "gcn", w, backend=name).pow(2).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-12)


def test_closed_form_ops_refuse_autograd(backend, device):
    """Under grad mode with an input that requires grad: a clear RuntimeError on every backend
    (including the reference, whose torch formula would otherwise be recorded)."""
    for name in ("reference", backend):
        require_backend(name, "goodness_loss_grad", device, torch.float32)
        z, positive, pairs = goodness_inputs(6, 4, device=device)
        h = torch.relu(z).requires_grad_(True)
        with pytest.raises(RuntimeError, match="no autograd.*no_grad"):
            ops.goodness_loss_grad(h, positive, backend=name)
        with torch.no_grad():
            ops.goodness_loss_grad(h, positive, backend=name)  # fine under no_grad
        ops.goodness_loss_grad(h.detach(), positive, backend=name)  # and on a detached input
        x, w, b, positive, _ = linear_inputs(6, 5, 4, device=device)
        with pytest.raises(RuntimeError, match="weight requires grad"):
            ops.linear_goodness_step(x, torch.nn.Parameter(w), b, positive, backend=name)
        with torch.no_grad():
            ops.linear_goodness_step(x, torch.nn.Parameter(w), b, positive, backend=name)


def test_raw_closed_form_custom_ops_raise_on_backward():
    """Called directly (bypassing the Python checks), the compiled op's backward raises instead
    of silently leaving .grad None."""
    if not _serves("cpu", "goodness_loss_grad", "cpu", torch.float32):
        pytest.skip("cpu unavailable")
    z, positive, _ = goodness_inputs(6, 4)
    h = torch.relu(z).requires_grad_(True)
    loss, _, grad = torch.ops.ffkernels.goodness_loss_grad(h, positive, 1.0, "sum", "ff", 1.0, 4.0, None)
    with pytest.raises(RuntimeError, match="no autograd"):
        loss.backward()


COMPILE_SCRIPT = r"""
import torch, ffkernels
from ffkernels import ops
torch.manual_seed(0)
g = ffkernels.Graph.from_edge_index(torch.randint(0, 40, (2, 200)), 40)
lin = torch.nn.Linear(8, 4)
def model(x):
    return lin(ops.aggregate(g, x, "gcn")).relu().sum()
x = torch.randn(40, 8, requires_grad=True)
torch.compile(model, backend="aot_eager", fullgraph=True)(x).backward()
compiled = x.grad.clone()
x.grad = None
model(x).backward()
torch.testing.assert_close(compiled, x.grad)
print("OK")
"""


def test_aggregate_backward_under_torch_compile():
    """A backprop model through ops.aggregate compiles with its backward (AOT autograd traces the
    registered formula with fake tensors: every shape in it is static). In a fresh process: the
    compile caches would keep fake tensors alive in this one."""
    import subprocess
    import sys
    if not _serves("cpu", "aggregate", "cpu", torch.float32):
        pytest.skip("cpu unavailable")
    proc = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
