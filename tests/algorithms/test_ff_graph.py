"""FF-LA / FF-VN (ALGORITHMS.md 1.6): closed-form local gradients vs autograd, invariant 4, a short run."""
import pytest
import torch
import torch.nn.functional as F

from ffkernels.datasets import load, synthetic
from ffkernels.train import ff_graph as fg
from ffkernels.train.common import augment_with_virtual_nodes, build_layer
from ffkernels.train.registry import TrainConfig


def _ff_loss(h_pos, h_negs, theta, goodness):
    k = 1.0 if goodness == "sum" else 1.0 / h_pos.shape[1]
    g_pos = k * h_pos.pow(2).sum(1)
    g_neg = k * torch.cat(h_negs).pow(2).sum(1)
    return F.softplus(-(g_pos - theta)).mean() + F.softplus(g_neg - theta).mean()


def _capture(layer):
    grads = {}
    layer.apply_gradients = lambda g: grads.update(g)
    return grads


def _rel(a, b):
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(scope="module")
def small():
    return synthetic(num_nodes=120, avg_degree=6, num_classes=4, num_features=24, seed=3).to("cpu")


@pytest.mark.parametrize("model", ["gcn", "sage"])
@pytest.mark.parametrize("goodness", ["sum", "mean"])
@pytest.mark.parametrize("deep", [False, True])
def test_ff_la_gradients_match_autograd(small, model, goodness, deep):
    d, c = small, small.num_classes
    torch.manual_seed(0)
    tr = d.train_idx
    neg = fg.draw_negative_classes(d.y, c, torch.Generator().manual_seed(0))
    labels = torch.stack([fg.label_matrix(d.num_nodes, c, tr, d.y[tr])] +
                         [fg.label_matrix(d.num_nodes, c, tr, neg[tr, k]) for k in range(c - 1)]).double()
    x = d.x.double()
    if deep:  # a deeper layer: per-stream hidden inputs
        layer = build_layer(model, 8, 6).double()
        inputs = torch.rand(c, d.num_nodes, 8, dtype=torch.float64)
        full = [inputs[k] for k in range(c)]
        st = fg._la_make_streams(layer, 1, inputs, tr, d.graph, model)
    else:
        layer = build_layer(model, d.num_features + c, 6).double()
        full = [torch.cat([x, labels[k]], 1) for k in range(c)]
        st = fg._la_make_streams(layer, 0, (x, labels), tr, d.graph, model)
    theta = 0.3 if goodness == "sum" else 0.05
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    hs = [torch.relu(layer.prepare(u, d.graph)[tr] @ w.t() + b) for u in full]
    loss = _ff_loss(hs[0], hs[1:], theta, goodness)
    loss.backward()
    grads = _capture(layer)
    got = fg._ff_stream_step(layer, st, 1, theta, goodness)
    assert abs(got - float(loss)) < 1e-9
    assert _rel(grads["weight"], w.grad) < 1e-6
    assert _rel(grads["bias"], b.grad) < 1e-6


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_ff_vn_gradients_match_autograd(small, model):
    d, c = small, small.num_classes
    torch.manual_seed(1)
    tr = d.train_idx
    neg = fg.draw_negative_classes(d.y, c, torch.Generator().manual_seed(0))
    cls = torch.stack([d.y[tr]] + [neg[tr, k] for k in range(c - 1)])
    x = d.x.double()
    vf = torch.randn(c, d.num_features, dtype=torch.float64)
    layer = build_layer(model, d.num_features, 5).double()
    x_aug = torch.cat([x, vf])
    st = fg._vn_setting(layer, x_aug, d, tr[:0], tr, cls, model)
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    hs = []
    for k in range(c):
        vg = augment_with_virtual_nodes(x, d.edge_index, tr, cls[k], c, virtual_features=vf)
        hs.append(torch.relu(layer.prepare(vg.x, vg.graph)[tr] @ w.t() + b))
    loss = _ff_loss(hs[0], hs[1:], 0.2, "sum")
    loss.backward()
    grads = _capture(layer)
    got = st.step(layer, 0.2, "sum")
    assert abs(got - float(loss)) < 1e-9
    assert _rel(grads["weight"], w.grad) < 1e-6
    assert _rel(grads["bias"], b.grad) < 1e-6


def test_negatives_never_carry_true_label(small):
    d, c = small, small.num_classes
    neg = fg.draw_negative_classes(d.y, c, torch.Generator().manual_seed(5))
    assert neg.shape == (d.num_nodes, c - 1)
    assert not (neg == d.y[:, None]).any()
    # each node's wrong classes are all distinct (a permutation of the C-1 wrong classes)
    assert (torch.sort(neg, 1)[0].diff(dim=1) > 0).all()
    for negatives in ("graph", "query"):
        setups = fg._la_training_setups(d, negatives, neg, 1.0, torch.Generator().manual_seed(0))
        for labels, query in setups:
            assert (labels[0, query].argmax(1) == d.y[query]).all()
            for k in range(1, c):
                assert (labels[k, query].argmax(1) != d.y[query]).all()


def test_ff_vn_unit_virtual_link_matches_dense(small):
    """vn_degree="unit": the virtual link enters like a degree-1 neighbour, coef = d_i^-1/2 / sqrt(2)."""
    d, c = small, small.num_classes
    tr = d.train_idx
    x = d.x.double()
    vf = torch.randn(c, d.num_features, dtype=torch.float64)
    layer = build_layer("gcn", d.num_features, 5).double()
    cls = torch.stack([d.y[tr], (d.y[tr] + 1) % c])
    st = fg._vn_setting(layer, torch.cat([x, vf]), d, tr[:0], tr, cls, "gcn", "unit")
    n = d.num_nodes
    a = torch.zeros(n, n, dtype=torch.float64)
    a.index_put_((d.edge_index[1], d.edge_index[0]), torch.ones(d.edge_index.shape[1], dtype=torch.float64),
                 accumulate=True)  # duplicate edges count, as in the graph operator
    link = torch.zeros(n, dtype=torch.float64)
    link[tr] = 1.0
    dinv = (1.0 + a.sum(1) + link).rsqrt()
    u = x / (x.norm(dim=1, keepdim=True) + 1e-8)
    vn = vf / (vf.norm(dim=1, keepdim=True) + 1e-8)
    real = dinv[:, None] * (a @ (dinv[:, None] * u) + dinv[:, None] * u)
    for k in range(2):
        prep = real[tr] + (dinv[tr] / 2 ** 0.5)[:, None] * vn[cls[k]]
        want = prep @ layer.weight.detach().t() + layer.bias.detach()
        assert _rel(st.z(layer)[k], want) < 1e-6  # float32 degree factors


def test_ff_vn_forward_matches_plain_layer_with_graph_degrees(small):
    """The fed-forward input equals the plain GCN layer on the augmented graph when the virtual
    degrees are the graph's (vn_degree="fixed" at training = the positive graph's degrees)."""
    d, c = small, small.num_classes
    tr = d.train_idx
    vg = augment_with_virtual_nodes(d.x.double(), d.edge_index, tr, d.y[tr], c)
    layer = build_layer("gcn", d.num_features, 6).double()
    with torch.no_grad():
        want = fg.project_forward(layer, vg.x, vg.graph)
        got = fg._vn_forward(layer, vg.x, vg.graph, d, tr, "gcn", "fixed")
    assert _rel(got, want) < 1e-6


@pytest.mark.parametrize("algo", ["ff-la", "ff-vn"])
def test_short_run_beats_chance_on_cora_ml(algo, one_thread):
    # Cora-ML (the paper's dataset for these methods, 64% of nodes labelled). On Cora's public split
    # (140 labelled nodes) FF-LA does not learn yet (measured ~11% test, see ff_graph's notes).
    data = load("cora_ml", split=0)
    cfg = TrainConfig(dataset="cora_ml", model="gcn", algo=algo, layers=1, hidden=128, epochs=60, val_every=2,
                      patience=30, lr=1e-2, progress=False)  # no early stop: the first ~30 epochs are a plateau
    fn = fg.train_ff_la if algo == "ff-la" else fg.train_ff_vn
    res = fn(cfg, data)
    assert res["test_accuracy"] > 1.0 / data.num_classes + 0.3, res
