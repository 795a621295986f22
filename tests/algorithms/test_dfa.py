"""Direct feedback alignment (ffkernels.algorithms.dfa: dfa, dfa-graph; docs/algorithms.md#dfa):
in float64 every hidden layer's update is autograd of the surrogate sum(stopgrad(E B_l) * h_l)
(h_l = ReLU(z_l), so the ReLU mask is the surrogate's) and the output layer's is the true
cross-entropy gradient; the feedback is fixed and its single GEMM equals the per-layer
products; the sign variant has the promised signs; short runs beat chance; options are the
algorithm's own."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

import ffkernels
from ffkernels.algorithms.dfa import (ConstantInput, DFAGraphModel, DFAGraphTrainer, DFAMLP, dfa_updates,
                                      feedback_signals, sign_concordant)
from ffkernels.algorithms.mlp_ff import softmax_cross_entropy_grad
from ffkernels.api import resolve_run_options
from ffkernels.datasets import Dataset, synthetic
from ffkernels.train.registry import get_algorithm, load_algorithms

TOL = 1e-10


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(autouse=True)
def _small_models_on_one_thread(one_thread):
    """Tiny GEMMs: a second intra-op thread only adds contention on the shared machine."""


def mlp_batch(seed=1, b=9, f=12, c=4):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, f, generator=gen, dtype=torch.float64) * 2 - 0.5
    y = torch.randint(0, c, (b,), generator=gen)
    return x, y


def path_signs(maps: list) -> list:
    """sign(M_L ... M_{l+1}) per hidden layer, by plain float64 products (no rescaling)."""
    out, p = [], None
    for m in reversed(maps):
        p = m if p is None else p @ m
        out.append(torch.sign(p))
    return out[::-1]


def graph_data(dtype=torch.float64):
    d = synthetic(num_nodes=60, avg_degree=5, num_classes=3, num_features=10, seed=2, homophily=0.8,
                  train_fraction=0.3)
    return Dataset("g", d.x.to(dtype), d.y, d.train_idx, d.val_idx, d.test_idx, d.num_classes, graph=d.graph,
                   edge_index=d.edge_index)


def graph_model(data, **given):
    opts = resolve_run_options("dfa-graph", dict(dict(layers=3, hidden=6, seed=3), **given))
    torch.manual_seed(0)
    model = DFAGraphModel(opts, {"num_features": data.num_features, "num_classes": data.num_classes}).double()
    return opts, model


# ---------------------------------------------------------------------------------------------
# the updates are DFA's rule: autograd of the surrogate (hidden), the true gradient (output)

@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_mlp_updates_equal_autograd_of_the_surrogate(feedback):
    model = DFAMLP(12, 4, hidden=[8, 7, 6], feedback=feedback, seed=4).double()
    x, y = mlp_batch()
    loss, grads = model.gradients(x, y)
    ws = [w.detach().clone().requires_grad_(True) for w in model.weights]
    bs = [b.detach().clone().requires_grad_(True) for b in model.biases]
    # the true output error E = (softmax - onehot) / B and the output layer's true gradient
    hs = [x]
    for w, b in zip(ws[:-1], bs[:-1]):
        hs.append(torch.relu(hs[-1] @ w.t() + b))
    logits = hs[-1] @ ws[-1].t() + bs[-1]
    ce = F.cross_entropy(logits, y)
    assert abs(float(loss) - float(ce.detach())) < 1e-12
    e = torch.autograd.grad(ce, logits, retain_graph=True)[0]
    gw, gb = torch.autograd.grad(ce, (ws[-1], bs[-1]))
    last = len(ws) - 1
    assert rel_err(grads[f"weights.{last}"], gw) < TOL and rel_err(grads[f"biases.{last}"], gb) < TOL
    # hidden layer l: autograd of sum(stopgrad(E B_l) * ReLU(z_l)) on its detached input
    blocks = model.feedback_matrices()
    masked = 0
    for i in range(last):
        h_in = hs[i].detach()
        z = h_in @ ws[i].t() + bs[i]
        surrogate = ((e.detach() @ blocks[i]) * torch.relu(z)).sum()
        gw, gb = torch.autograd.grad(surrogate, (ws[i], bs[i]))
        assert rel_err(grads[f"weights.{i}"], gw) < TOL, i
        assert rel_err(grads[f"biases.{i}"], gb) < TOL, i
        masked += int((z <= 0).sum())
    assert masked > 0  # the ReLU mask is exercised


@pytest.mark.parametrize("model_name,feedback,sparse", [("gcn", "random", False), ("gcn", "random", True),
                                                        ("sage", "random", False), ("gcn", "sign", False),
                                                        ("sage", "sign", True)])
def test_graph_updates_equal_autograd_of_the_surrogate(model_name, feedback, sparse):
    data = graph_data()
    opts, model = graph_model(data, model=model_name, feedback=feedback)
    trainer = DFAGraphTrainer(get_algorithm("dfa-graph"), opts, data, model)
    trainer.first = model.first_input(data, data.train_idx, sparse=sparse)
    assert trainer.first.sparse == sparse
    loss, updates = trainer.gradients()
    train, y = data.train_idx, data.y[data.train_idx]
    layers = list(model.layers)
    ws = [layer.weight.detach().clone().requires_grad_(True) for layer in layers]
    bs = [layer.bias.detach().clone().requires_grad_(True) for layer in layers]
    # the forward pass with every layer's prepared input a constant (its input is detached)
    prepared, zs = [], []
    h = data.x
    for i, layer in enumerate(layers):
        with torch.no_grad():
            prepared.append(layer.prepare(h, data.graph))
        zs.append(prepared[-1] @ ws[i].t() + bs[i])
        h = torch.relu(zs[-1]).detach()
    logits = zs[-1]
    ce = F.cross_entropy(logits[train], y)  # on the training nodes only
    assert abs(float(loss) - float(ce.detach())) < 1e-12
    e = torch.autograd.grad(ce, logits, retain_graph=True)[0]
    assert float(e.abs().sum()) > 0 and float(e[data.test_idx].abs().sum()) == 0  # zero off the training nodes
    gw, gb = torch.autograd.grad(ce, (ws[-1], bs[-1]))
    assert rel_err(updates[-1][0], gw) < TOL and rel_err(updates[-1][1], gb) < TOL
    blocks = model.feedback_matrices()
    for i in range(len(layers) - 1):
        surrogate = ((e.detach() @ blocks[i]) * torch.relu(zs[i])).sum()
        gw, gb = torch.autograd.grad(surrogate, (ws[i], bs[i]), retain_graph=True)
        assert rel_err(updates[i][0], gw) < TOL, i
        assert rel_err(updates[i][1], gb) < TOL, i


# ---------------------------------------------------------------------------------------------
# the feedback: fixed, one GEMM, sign-concordant when asked

def test_single_gemm_signal_equals_the_per_layer_products():
    model = DFAMLP(12, 4, hidden=[8, 7, 6], seed=5).double()
    x, y = mlp_batch(seed=2)
    acts = model.activities(x)
    _, e = softmax_cross_entropy_grad(acts[-1], y)
    blocks = model.feedback_matrices()
    assert [tuple(b.shape) for b in blocks] == [(4, 8), (4, 7), (4, 6)]
    assert torch.equal(torch.cat(blocks, dim=1), model.feedback)
    signals = feedback_signals(e, model.feedback, model.widths)
    for s, b in zip(signals, blocks):
        assert rel_err(s, e @ b) < 1e-14
    # dfa_updates forms every hidden signal with one product of E against the whole B
    calls = []

    class CountFeedbackProducts(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", str(func))
            if ("mm" in name or "matmul" in name) and any(
                    isinstance(a, torch.Tensor) and a.data_ptr() == model.feedback.data_ptr() for a in args):
                calls.append((name, tuple(args[0].shape)))
            return func(*args, **(kwargs or {}))

    with CountFeedbackProducts():
        dfa_updates(acts[:-1], acts[1:-1], e, model.feedback)
    assert len(calls) == 1 and calls[0][1] == tuple(e.shape), calls


def test_feedback_is_a_fixed_buffer_unchanged_by_training():
    trained = ffkernels.fit("digits", "dfa", layers=3, hidden=32, epochs=2, progress=False)
    net = trained.model.net
    assert "net.feedback" in dict(trained.model.named_buffers())
    assert all(p is not net.feedback for p in net.parameters())
    fresh = DFAMLP(64, 10, hidden=32, layers=3, seed=0)
    assert torch.equal(net.feedback, fresh.feedback)
    assert not torch.equal(net.weights[0], fresh.weights[0])  # the weights did learn
    data = graph_data(torch.float32)
    g = ffkernels.fit(data, "dfa-graph", layers=3, hidden=8, epochs=4, progress=False)
    opts, _ = graph_model(data, hidden=8, seed=0)
    fresh_g = DFAGraphModel(opts, g.model.dims)
    assert torch.equal(g.model.feedback, fresh_g.feedback)
    assert g.model.feedback.shape == (3, 16)


@pytest.mark.parametrize("steps", [0, 3])
def test_sign_feedback_has_the_forward_paths_signs(steps):
    model = DFAMLP(12, 4, hidden=[8, 7, 6], feedback="sign", seed=6).double()
    x, y = mlp_batch(seed=3)
    for _ in range(steps):  # the signs follow the weights as they learn
        model.train_batch(x, y)
    blocks = model.feedback_matrices()
    magnitudes = torch.split(model.feedback, model.widths, dim=1)
    for b, r, s in zip(blocks, magnitudes, path_signs([w.detach() for w in model.weights[1:]])):
        assert torch.equal(torch.sign(b), s)
        assert torch.equal(b.abs(), r.abs())
    # the random variant's feedback is the buffer itself, of either sign
    rnd = DFAMLP(12, 4, hidden=[8, 7, 6], seed=6).double()
    assert torch.equal(rnd.feedback_matrix(), rnd.feedback) and bool((rnd.feedback < 0).any())


def test_sign_feedback_of_graph_layers():
    data = graph_data()
    _, model = graph_model(data, model="sage", feedback="sign", layers=4)
    maps = []
    for layer in model.layers[1:]:
        f = layer.in_features
        maps.append(layer.weight[:, :f] + layer.weight[:, f:])  # SAGE: W_self + W_neigh
    for b, s in zip(model.feedback_matrices(), path_signs(maps)):
        assert torch.equal(torch.sign(b), s)
    _, gcn = graph_model(data, feedback="sign")
    for b, s in zip(gcn.feedback_matrices(), path_signs([layer.weight for layer in gcn.layers[1:]])):
        assert torch.equal(torch.sign(b), s)


def test_sign_concordant_without_hidden_layers_and_rescaling():
    r = torch.randn(3, 0)
    assert sign_concordant(r, []).shape == (3, 0)
    big = [torch.full((4, 4), 1e20), torch.full((3, 4), 1e20)]  # the plain product would overflow
    out = sign_concordant(torch.ones(3, 8), big)
    assert torch.equal(out, torch.ones(3, 8))


def test_sparse_and_dense_first_input_agree():
    data = graph_data()
    m = torch.relu(data.x)  # some zeros
    rows = data.train_idx
    w, b = torch.randn(5, data.num_features, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    dense, sparse = ConstantInput(m, rows, sparse=False), ConstantInput(m, rows, sparse=True)
    assert rel_err(sparse.matmul_wt(w, b), dense.matmul_wt(w, b)) < 1e-14
    delta = torch.randn(rows.numel(), 5, dtype=torch.float64)
    assert rel_err(sparse.rows.grad_weight(delta), delta.t() @ dense.rows) < 1e-14
    assert ConstantInput(torch.zeros(4, 10), sparse=None).sparse and not ConstantInput(torch.ones(4, 10)).sparse


# ---------------------------------------------------------------------------------------------
# registration, options, runs

def test_registered_with_their_options():
    algos = load_algorithms()
    mlp, graph = algos["dfa"], algos["dfa-graph"]
    assert (mlp.task, mlp.models, mlp.schedule) == ("mlp", ("mlp",), "simultaneous")
    assert (graph.task, graph.models, graph.schedule) == ("node", ("gcn", "sage"), "simultaneous")
    m = {o.name: o.default for o in mlp.options.all()}
    assert (m["lr"], m["weight_decay"], m["patience"], m["batch_size"], m["feedback"], m["feedback_scale"],
            m["val_fraction"]) == (1e-3, 0.0, 25, 64, "random", 1.0, 0.1)
    g = {o.name: o.default for o in graph.options.all()}
    assert (g["lr"], g["weight_decay"], g["feedback"], g["normalize"]) == (1e-2, 5e-4, "random", "l2")
    assert "batch_size" not in g and "normalize" not in m


@pytest.mark.parametrize("data,algo,option", [
    ("digits", "dfa", dict(theta=2.0)),            # an FF option
    ("digits", "dfa", dict(momentum=0.5)),         # pepita's (SGD)
    ("digits", "dfa", dict(normalize="l2")),       # dfa-graph's
    ("cora_ml", "dfa-graph", dict(batch_size=32)),  # the MLPs' mini-batches
    ("cora_ml", "dfa-graph", dict(dropout=0.5)),   # bp's
])
def test_option_of_another_algorithm_is_an_error(data, algo, option):
    with pytest.raises(ValueError, match="has no option"):
        ffkernels.fit(data, algo, progress=False, epochs=1, **option)


def test_bad_option_values_are_errors():
    with pytest.raises(ValueError, match="feedback must be one of"):
        ffkernels.fit("digits", "dfa", progress=False, epochs=1, feedback="transpose")
    with pytest.raises(ValueError, match="feedback_scale must be > 0"):
        ffkernels.fit("digits", "dfa", progress=False, epochs=1, feedback_scale=0.0)
    with pytest.raises(ValueError, match="model must be one of"):
        ffkernels.fit("cora_ml", "dfa-graph", model="gat", progress=False, epochs=1)


@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_short_mlp_run_beats_chance(feedback):
    trained = ffkernels.fit("digits", "dfa", layers=3, hidden=64, epochs=4, feedback=feedback, progress=False)
    m, report = trained.metrics, trained.report
    assert m["test_accuracy"] > 0.6 and m["val_accuracy"] > 0.6, m
    assert report["n_val"] == round(0.1 * 1438) and report["n_fit"] == 1438 - report["n_val"]
    assert [t.shape[1] for t in trained.embed("digits")] == [64, 64, 10]  # layers counts the output layer
    assert trained.evaluate("digits") == m


def test_short_graph_run_beats_chance():
    trained = ffkernels.fit("cora_ml", "dfa-graph", layers=3, hidden=64, epochs=40, progress=False)
    m = trained.metrics
    assert m["test_accuracy"] > 0.45 and m["val_accuracy"] > 0.45, m  # 7 classes (largest: 30%)
    assert trained.model.layers[0].weight.shape == (64, 2879) and trained.model.layers[-1].weight.shape == (7, 64)
    assert [t.shape[1] for t in trained.embed("cora_ml")] == [64, 64, 7]


@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_one_layer_has_no_feedback(feedback):
    trained = ffkernels.fit("digits", "dfa", layers=1, epochs=2, feedback=feedback, progress=False)
    assert trained.model.net.feedback.shape == (10, 0) and trained.metrics["test_accuracy"] > 0.3  # chance: 0.1
    g = ffkernels.fit(graph_data(torch.float32), "dfa-graph", layers=1, epochs=2, feedback=feedback, progress=False)
    assert g.model.feedback.shape == (3, 0) and len(g.model.layers) == 1


def test_resume_on_the_carved_validation_split(tmp_path):
    """digits has no validation split: the carved rows are the same in the resumed run and in
    evaluate (the engine's own resume test runs on data with a validation split)."""
    kw = dict(layers=3, hidden=24, epochs=6, val_every=2, patience=10, seed=3, feedback="sign", progress=False)
    full = ffkernels.fit("digits", "dfa", **kw)
    path = str(tmp_path / "ckpt.pt")
    part = ffkernels.fit("digits", "dfa", save=path, stop_after_epochs=3, **kw)
    assert part.report["stopped"] and part.report["total_epochs"] == 3
    resumed = ffkernels.fit("digits", "dfa", resume=path, **kw)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.metrics == full.metrics == full.evaluate("digits")
