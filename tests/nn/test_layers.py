"""Closed-form local gradients of every layer type equal autograd's (float64, docs/algorithms.md#invariants).

Layers: FFLinear, FFGCNConv, FFSAGEConv, FFGATConv; losses: SF (virtual nodes, 1.4) and FF (1.1).
The oracle is written independently of the library: dense adjacency matrices, plain autograd.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ffkernels import Graph, ops
from ffkernels.nn import FFGATConv, FFGCNConv, FFLinear, FFSAGEConv
from ffkernels.nn.optim import optimizer_factory

N, FIN, FOUT, C = 14, 9, 8, 3


def _graph(seed=0):
    gen = torch.Generator().manual_seed(seed)
    ei = torch.randint(0, N, (2, 40), generator=gen)
    ei = ei[:, ei[0] != ei[1]]
    return ei, Graph.from_edge_index(ei, N)


def _dense_adj(ei):
    a = torch.zeros(N, N, dtype=torch.float64)
    a.index_put_((ei[1], ei[0]), torch.ones(ei.shape[1], dtype=torch.float64), accumulate=True)
    return a  # a[i, j] = number of edges j -> i


def _oracle_forward(kind, layer, x, ei, params):
    xn = x / (x.norm(dim=1, keepdim=True) + 1e-8)
    a = _dense_adj(ei)
    if kind == "linear":
        return torch.relu(xn @ params["weight"].t() + params["bias"])
    if kind == "gcn":
        # GCN's scaling written independently: D = in-degree + 1 (self loop), all in float64.
        a_hat = a + torch.eye(N, dtype=a.dtype)
        d = a_hat.sum(1).rsqrt()
        agg = d[:, None] * a_hat * d[None, :]
        return torch.relu(agg @ xn @ params["weight"].t() + params["bias"])
    if kind == "sage":
        mean = a / a.sum(1, keepdim=True).clamp_min(1)
        return torch.relu(torch.cat([xn, mean @ xn], 1) @ params["weight"].t() + params["bias"])
    # gat: dense masked softmax per head, self loops replace existing ones
    mask = (a + torch.eye(N, dtype=a.dtype)) > 0
    mult = a.clone()
    mult.fill_diagonal_(0)
    mult = mult + torch.eye(N, dtype=a.dtype)  # multi-edges count as many terms in the softmax
    xw = xn @ params["weight"].t()
    heads, dh = layer.heads, layer.head_dim
    outs = []
    for k in range(heads):
        xk = xw[:, k * dh:(k + 1) * dh]
        e = F.leaky_relu((xk @ params["att_dst"][k])[:, None] + (xk @ params["att_src"][k])[None, :], 0.2)
        e = e.masked_fill(~mask, float("-inf"))
        w = torch.exp(e - e.max(1, keepdim=True).values) * mult
        outs.append((w / w.sum(1, keepdim=True)) @ xk)
    return torch.relu(torch.cat(outs, 1) + params["bias"])


def _make(kind):
    torch.manual_seed(1)
    if kind == "linear":
        layer = FFLinear(FIN, FOUT)
    elif kind == "gcn":
        layer = FFGCNConv(FIN, FOUT)
    elif kind == "sage":
        layer = FFSAGEConv(FIN, FOUT)
    else:
        layer = FFGATConv(FIN, FOUT, heads=4)
    layer = layer.double()
    with torch.no_grad():
        layer.bias.uniform_(-0.3, 0.5)  # keep most units active so the mask is exercised both ways
    captured = {}

    def capture(grads):
        captured.update({k: v for k, v in grads.items() if v is not None})
    layer.apply_gradients = capture
    return layer, captured


def _sf_oracle(h, train_idx, y_train, virtual_idx):
    return F.cross_entropy(h[train_idx] @ h[virtual_idx].t(), y_train)


def _ff_oracle(h, positive, theta):
    g = (h * h).sum(1)
    s = g - theta
    return F.softplus(-s[positive]).mean() + F.softplus(s[~positive]).mean()


KINDS = ["linear", "gcn", "sage", "gat"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loss", ["sf", "ff"])
def test_closed_form_gradients_match_autograd(kind, loss):
    ei, graph = _graph()
    layer, captured = _make(kind)
    x = torch.rand(N, FIN, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.05
    train_idx = torch.tensor([0, 1, 2, 4, 6, 7])
    y_train = torch.tensor([0, 1, 2, 0, 1, 2])
    virtual_idx = torch.tensor([11, 12, 13])
    positive = torch.zeros(N, dtype=torch.bool)
    positive[::2] = True
    theta = 0.5
    g_arg = graph if kind != "linear" else None
    if loss == "sf":
        def objective(h):
            return ops.sf_loss_grad(h, train_idx, y_train, virtual_idx, dense=True)
        result = layer.local_step(x, g_arg, objective)
    else:
        result = layer.local_step(x, g_arg, positive=positive, theta=theta)

    params = {k: v.detach().clone().requires_grad_(True) for k, v in layer.named_parameters()}
    h = _oracle_forward(kind, layer, x, ei, params)
    ref = _sf_oracle(h, train_idx, y_train, virtual_idx) if loss == "sf" else _ff_oracle(h, positive, theta)
    ref.backward()
    assert result.loss == pytest.approx(float(ref.detach()), rel=1e-9)
    torch.testing.assert_close(result.h, h.detach(), rtol=1e-9, atol=1e-12)
    assert set(captured) == set(params)
    for name, p in params.items():
        err = (captured[name] - p.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30)
        assert err < 1e-6, f"{kind}/{loss}: d{name} relative error {float(err):.2e}"


@pytest.mark.parametrize("kind", KINDS[1:])
def test_layers_accept_edge_index_and_graph(kind):
    ei, graph = _graph()
    layer, _ = _make(kind)
    x = torch.rand(N, FIN, dtype=torch.float64)
    torch.testing.assert_close(layer(x, ei), layer(x, graph))


def test_gat_state_dict_round_trip_and_validation():
    layer = FFGATConv(FIN, FOUT, heads=4)
    other = FFGATConv(FIN, FOUT, heads=4)
    other.load_state_dict(layer.state_dict())
    ei, graph = _graph()
    x = torch.rand(N, FIN)
    torch.testing.assert_close(layer(x, graph), other(x, graph))
    with pytest.raises(ValueError, match="divisible"):
        FFGATConv(FIN, 10, heads=4)
    with pytest.raises(ValueError, match="columns"):
        layer(torch.rand(N, FIN + 1), graph)
    with pytest.raises(ValueError, match="must be one of"):
        FFGATConv(FIN, FOUT, normalize="bogus")


@pytest.mark.parametrize("where", ["gradient", "moments"])
def test_apply_gradients_any_layout(where):
    """A gradient (or optimiser moments, as a checkpoint may load them) laid out differently
    from its weight steps the weight exactly as the same values in its layout: torch's fused Adam
    walks its tensors by position, so apply_gradients gives them the weight's strides first."""
    def run(transposed: bool):
        torch.manual_seed(0)
        layer = FFLinear(12, 5, optimizer=optimizer_factory("adam", 1e-2, fused=True))  # (as the trainers')
        gen = torch.Generator().manual_seed(1)
        for step in range(3):
            g = torch.randn(5, 12, generator=gen)
            if where == "gradient" and transposed:
                g = g.t().contiguous().t()  # the same values, column-major
            layer.apply_gradients({"weight": g, "bias": torch.zeros(5)})
            state = layer.optimizer.state[layer.weight]
            if where == "moments" and transposed and step == 0:
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key] = state[key].t().contiguous().t()
        return layer.weight.detach().clone()
    assert torch.equal(run(True), run(False))
