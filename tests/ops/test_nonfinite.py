"""NaN and Inf propagate the same way on every backend as on the reference (no kernel may turn a
non-finite input into a finite loss: e.g. a fused ReLU that maps NaN to 0)."""
from __future__ import annotations

import pytest
import torch

from ffkernels import ops
from ffkernels.testing import edge_weights, features, goodness_inputs, interpreted, linear_inputs, make_graph, require_backend

REDUCES = ("sum", "mean", "max", "gcn")


def _poison(t: torch.Tensor, kind: str, rows=(1, 4), col=2) -> torch.Tensor:
    t = t.clone()
    value = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}[kind]
    for r in rows:
        if r < t.shape[0]:
            t[r, min(col, t.shape[1] - 1)] = value
    return t


def _same(actual, expected):
    """Same values, and NaN / +-Inf exactly where the reference has them."""
    if expected is None:
        assert actual is None
        return
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    a, e = actual.double(), expected.double()
    assert torch.equal(torch.isnan(a), torch.isnan(e)), "NaN positions differ"
    assert torch.equal(torch.isposinf(a), torch.isposinf(e)) and torch.equal(torch.isneginf(a), torch.isneginf(e))
    torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-4, equal_nan=True)


KINDS = ("nan", "inf", "-inf")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduce", REDUCES)
def test_aggregate_nonfinite(backend, device, reduce, kind):
    require_backend(backend, "aggregate", device, torch.float32)
    g = make_graph("dup_self", device, small=interpreted(backend, device))
    x = _poison(features(g.num_nodes, 5, device=device), kind, rows=(0, 3, 9))
    w = edge_weights(g)
    for weight in (None, w):
        _same(ops.aggregate(g, x, reduce, weight, backend=backend),
              ops.aggregate(g, x, reduce, weight, backend="reference"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", ["ff", "symba"])
def test_goodness_loss_grad_nonfinite(backend, device, loss, kind):
    require_backend(backend, "goodness_loss_grad", device, torch.float32)
    z, positive, pairs = goodness_inputs(12, 6, device=device)
    h = _poison(torch.relu(z), kind)
    kw = dict(loss=loss, pairs=pairs if loss == "symba" else None)
    expected = ops.goodness_loss_grad(h, positive, backend="reference", **kw)
    assert not torch.isfinite(expected[0])  # the case does reach the loss
    for a, e in zip(ops.goodness_loss_grad(h, positive, backend=backend, **kw), expected):
        _same(a, e)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", ["ff", "symba"])
def test_linear_goodness_step_nonfinite(backend, device, loss, kind):
    require_backend(backend, "linear_goodness_step", device, torch.float32)
    x, w, b, positive, pairs = linear_inputs(12, 5, 4, device=device)
    x = _poison(x, kind)
    kw = dict(loss=loss, pairs=pairs if loss == "symba" else None)
    expected = ops.linear_goodness_step(x, w, b, positive, backend="reference", **kw)
    if kind == "nan":
        assert torch.isnan(expected[0])  # NaN input -> NaN loss (the old cpu ReLU gave a finite one)
    for a, e in zip(ops.linear_goodness_step(x, w, b, positive, backend=backend, **kw), expected):
        _same(a, e)


@pytest.mark.parametrize("kind", KINDS)
def test_sf_loss_grad_nonfinite(backend, device, kind):
    require_backend(backend, "sf_loss_grad", device, torch.float32)
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(20, 6, generator=gen).to(device)
    h = _poison(h, kind, rows=(3,))
    train_idx = torch.arange(0, 16, device=device)
    y = torch.randint(0, 4, (16,), generator=gen).to(device)
    virtual_idx = torch.arange(16, 20, device=device)
    expected = ops.sf_loss_grad(h, train_idx, y, virtual_idx, backend="reference")
    actual = ops.sf_loss_grad(h, train_idx, y, virtual_idx, backend=backend)
    for a, e in zip(actual, expected):
        _same(a, e)
