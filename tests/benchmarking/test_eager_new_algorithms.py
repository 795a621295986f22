"""The e2e suite's eager baselines of fg / fg-local / fg-guess / dfa / dfa-graph compute what the
fused algorithms compute (one step, float64, same weights and directions), learn on small data,
and the suite's rows for them resolve to registered algorithms and eager runners.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ffkernels import Graph
from ffkernels.algorithms import dfa as dfa_mod
from ffkernels.algorithms import forward_gradient as fg_mod
from ffkernels.benchmarking import eager_baselines as eb
from ffkernels.benchmarking import suite
from ffkernels.benchmarking.suite import BenchConfig
from ffkernels.datasets import Dataset

RTOL = 1e-9
NEW_ALGOS = ("fg", "fg_local", "fg_guess", "dfa", "dfa_graph")


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _batch(n=24, f=10, c=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=gen)
    return x, y


def _eager_mlp(f=10, hidden=8, c=4, layers=3, seed=0):
    torch.manual_seed(seed)
    return eb.EagerMLP(f, hidden, c, layers).double()


def _wb(model):
    return [l.weight.detach() for l in model.layers], [l.bias.detach() for l in model.layers]


def _heads(model, c=4, seed=1):
    torch.manual_seed(seed)
    return torch.nn.ModuleList(torch.nn.Linear(w, c) for w in model.widths).double()


def _blobs(n=300, f=16, c=4, seed=0):
    """An MLP dataset without a validation split (as digits: fit_val_rows holds out 10%)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    centres = 3.0 * torch.randn(c, f, generator=gen)
    x = centres[y] + torch.randn(n, f, generator=gen)
    perm = torch.randperm(n, generator=gen)
    tr, te = perm[: n * 2 // 3].sort()[0], perm[n * 2 // 3:].sort()[0]
    return Dataset("blobs", x, y, tr, torch.zeros(0, dtype=torch.long), te, c, None, None, 0)


def _tiny_graph(n=40, f=12, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, f, generator=gen, dtype=torch.float64) + F.one_hot(y, f).to(torch.float64)
    src = torch.randint(0, n, (3 * n,), generator=gen)
    dst = torch.randint(0, n, (3 * n,), generator=gen)
    keep = src != dst
    ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    perm = torch.randperm(n, generator=gen)
    tr, va, te = perm[:15].sort()[0], perm[15:25].sort()[0], perm[25:].sort()[0]
    return Dataset("tiny", x, y, tr, va, te, c, Graph.from_edge_index(ei, n), ei, 0)


# ---------------------------------------------------------------------------- forward gradients
def test_fg_directional_derivative_equals_autograd_and_fused():
    """The eager jvp's g.v equals autograd's gradient dotted with v, and the eager fg estimate
    equals the fused (g.v) v (ffkernels' dual-number linear_jvp) for the same tangent."""
    x, y = _batch()
    model = _eager_mlp()
    gen = torch.Generator().manual_seed(5)
    v = {k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in model.named_parameters()}
    loss, dd = eb.fg_directional_derivative(model, x, y, v)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
    want = sum((g * v[k]).sum() for g, (k, _) in zip(grads, model.named_parameters()))
    assert abs(float(dd - want)) <= RTOL * abs(float(want))

    w, b = _wb(model)
    tangents = [(v[f"layers.{i}.weight"], v[f"layers.{i}.bias"]) for i in range(len(w))]
    f_loss, f_dd, f_est = fg_mod.forward_gradient(x, y, w, b, tangents)
    assert abs(float(f_loss - loss)) <= RTOL * float(loss) and abs(float(f_dd - dd)) <= RTOL * abs(float(dd))
    _, est = eb.fg_global_grads(model, x, y, tangents=[v])
    for i, (ew, eb_) in enumerate(f_est):
        assert _rel(est[f"layers.{i}.weight"], ew) < RTOL and _rel(est[f"layers.{i}.bias"], eb_) < RTOL


def test_fg_local_estimates_match_fused():
    x, y = _batch(seed=1)
    model = _eager_mlp(seed=2)
    heads = _heads(model)
    gen = torch.Generator().manual_seed(7)
    v = [{k: torch.randn(p.shape, generator=gen, dtype=torch.float64) for k, p in layer.named_parameters()}
         for layer in model.layers]
    loss, est, head_grads = eb.fg_local_grads(model, heads, x, y, tangents=[v])
    w, b = _wb(model)
    f_loss, f_est, f_head = fg_mod.local_forward_gradients(
        x, y, w, b, [h.weight.detach() for h in heads], [h.bias.detach() for h in heads],
        [(t["weight"], t["bias"]) for t in v])
    assert abs(float(f_loss - loss)) <= RTOL * float(loss)
    for i, (ew, eb_) in enumerate(f_est):
        assert _rel(est[f"layers.{i}.weight"], ew) < RTOL and _rel(est[f"layers.{i}.bias"], eb_) < RTOL
    assert len(head_grads) == len(f_head) == 2
    for g, (dA, dc) in zip(head_grads, f_head):
        assert _rel(g["weight"], dA) < RTOL and _rel(g["bias"], dc) < RTOL


def test_fg_guess_steps_match_fused_estimate():
    """fg-guess is deterministic: the eager steps (autograd guesses, jvp projections) equal the fused
    ForwardGradientMLP.estimate on the same weights and heads; the output layer's step is its
    exact gradient."""
    x, y = _batch(seed=2)
    net = fg_mod.ForwardGradientMLP(10, 4, hidden=8, layers=3, mode="guess", seed=3).double()
    torch.manual_seed(0)
    model = eb.EagerMLP(10, 8, 4, 3).double()
    heads = torch.nn.ModuleList(torch.nn.Linear(8, 4) for _ in range(2)).double()
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            layer.weight.copy_(net.weights[i])
            layer.bias.copy_(net.biases[i])
        for i, head in enumerate(heads):
            head.weight.copy_(net.heads.weights[i])
            head.bias.copy_(net.heads.biases[i])
    f_loss, f_steps, f_head = net.estimate(x, y)
    loss, steps, head_grads = eb.fg_guess_grads(model, heads, x, y)
    assert abs(float(f_loss - loss)) <= RTOL * float(loss)
    for i, (sw, sb) in enumerate(f_steps):
        assert _rel(steps[f"layers.{i}.weight"], sw) < 1e-8 and _rel(steps[f"layers.{i}.bias"], sb) < 1e-8
    for g, (dA, dc) in zip(head_grads, f_head):
        assert _rel(g["weight"], dA) < RTOL and _rel(g["bias"], dc) < RTOL
    exact = torch.autograd.grad(F.cross_entropy(model(x), y), [model.layers[-1].weight])[0]
    assert _rel(steps["layers.2.weight"], exact) < 1e-8


# ---------------------------------------------------------------------------- DFA
@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_dfa_mlp_grads_match_fused(feedback):
    """The eager DFA step (autograd for E, E B_l backpropagated from each hidden output) equals the
    fused DFAMLP.gradients; the hidden signal is (E B_l) * 1[z_l > 0]."""
    x, y = _batch(seed=3)
    net = dfa_mod.DFAMLP(10, 4, hidden=8, layers=4, feedback=feedback, seed=4).double()
    model = _eager_mlp(layers=4)
    with torch.no_grad():
        for i, layer in enumerate(model.layers):
            layer.weight.copy_(net.weights[i])
            layer.bias.copy_(net.biases[i])
    blocks = eb.dfa_feedback_blocks(net.feedback, model.widths, feedback, [l.weight for l in model.layers[1:]])
    for got, want in zip(blocks, net.feedback_matrices()):
        assert torch.equal(got, want)
    loss = eb.dfa_mlp_backward(model, x, y, blocks)
    f_loss, f_grads = net.gradients(x, y)
    assert abs(float(f_loss - loss)) <= RTOL * float(loss)
    for i, layer in enumerate(model.layers):
        assert _rel(layer.weight.grad, f_grads[f"weights.{i}"]) < RTOL
        assert _rel(layer.bias.grad, f_grads[f"biases.{i}"]) < RTOL
    # the first hidden layer's bias update is sum_rows((E B_1) * 1[z_1 > 0])
    with torch.no_grad():
        z1 = model.layers[0](x)
        error = (torch.softmax(model(x), 1) - F.one_hot(y, 4).double()) / x.shape[0]
        assert _rel(model.layers[0].bias.grad, ((error @ blocks[0]) * (z1 > 0)).sum(0)) < RTOL


@pytest.mark.parametrize("feedback", ["random", "sign"])
def test_dfa_graph_grads_match_fused_trainer(feedback):
    from ffkernels.testing import build_trainer
    data = _tiny_graph()
    trainer = build_trainer("dfa-graph", data, layers=3, hidden=8, seed=1, feedback=feedback)
    fused = trainer.model.double()
    f_loss, f_updates = trainer.gradients()
    model = eb.EagerDFAGCN(data.num_features, 8, data.num_classes, 3).double()
    with torch.no_grad():
        for conv, layer in zip(model.convs, fused.layers):
            conv.lin.weight.copy_(layer.weight)
            conv.bias.copy_(layer.bias)
    blocks = eb.dfa_feedback_blocks(fused.feedback, model.widths, feedback, [c.lin.weight for c in model.convs[1:]])
    loss = eb.dfa_gcn_backward(model, data.x, data.edge_index, data.train_idx, data.y[data.train_idx], blocks)
    # 1e-6: the eager gcn_norm computes the degrees in float32 (as test_benchmarks_e2e's GCN checks)
    assert abs(float(f_loss - loss)) <= 1e-6 * float(loss)
    for conv, (gw, gb) in zip(model.convs, f_updates):
        assert _rel(conv.lin.weight.grad, gw) < 1e-6 and _rel(conv.bias.grad, gb) < 1e-6


# ---------------------------------------------------------------------------- learning
def _mlp_config(**kw):
    base = dict(model="mlp", layers=2, hidden=32, epochs=20, val_every=2, patience=100, lr=3e-3, weight_decay=0.0,
                seed=0, device="cpu", batch_size=64)
    base.update(kw)
    return BenchConfig(**base)


FAST = dict(lr=1e-2, batch_size=16)  # more, larger steps: fg's single-tangent estimate needs them (fused too)


@pytest.mark.parametrize("algo,kw", [("fg", dict(epochs=30, **FAST)), ("fg_local", dict(epochs=30, **FAST)),
                                     ("fg_guess", dict(layers=3, lr=1e-3)), ("dfa", dict(layers=3, **FAST)),
                                     ("dfa", dict(layers=3, extra={"feedback": "sign"}, **FAST))])
def test_eager_mlp_runners_learn(algo, kw):
    data = _blobs()
    out = eb.EAGER_RUNNERS[algo](_mlp_config(**kw), data)
    assert out["test_accuracy"] > 0.8, out  # chance: 0.25
    assert out["val_accuracy"] > 0.7 and out["epochs"] == kw.get("epochs", 20)


def test_eager_dfa_graph_runner_learns():
    from ffkernels.datasets import synthetic
    data = synthetic(600, avg_degree=10, num_classes=4, num_features=16, seed=1)
    cfg = BenchConfig(model="gcn", layers=3, hidden=32, epochs=30, val_every=2, patience=100, lr=0.01,
                      weight_decay=5e-4, seed=0, device="cpu")
    out = eb.run_dfa_graph_eager(cfg, data)
    assert out["test_accuracy"] > 0.5 and out["epochs_per_layer"] == [30, 30, 30]  # chance: 0.25
    with pytest.raises(ValueError):
        eb.run_dfa_graph_eager(dataclasses.replace(cfg, model="sage"), data)


# ---------------------------------------------------------------------------- the suite's rows
def test_suite_has_rows_for_the_new_algorithms():
    from ffkernels.train.registry import get_algorithm
    for quick in (False, True):
        cases = suite.suite_cases(quick)
        names = [c.name for c in cases]
        assert len(names) == len(set(names))
        algos = {c.algo for c in cases}
        want = set(NEW_ALGOS) if not quick else {"fg", "fg_guess", "dfa", "dfa_graph"}
        assert want <= algos, (quick, algos)
        for case in cases:
            if case.algo not in NEW_ALGOS:
                continue
            spec = get_algorithm(suite.FUSED_ALGOS[case.algo])
            assert case.model in spec.models and case.algo in suite.ALGO_LABELS
            assert case.algo in eb.EAGER_RUNNERS
            assert set(case.variants) == {"fused", "eager", "bp"}
            for variant in case.variants:
                assert callable(suite.get_runner(case, variant))
            bp = suite.make_config(case, "bp", "cpu")
            assert bp.layers == case.layers - 1  # the same weight layers: hidden + its linear classifier
    digits = {c.algo: c for c in suite.suite_cases() if c.dataset == "digits"}
    assert {"fg", "fg_local", "fg_guess", "dfa"} <= set(digits)
    assert [c for c in suite.suite_cases() if c.algo == "dfa_graph"][0].dataset == "cora_ml"


def test_make_config_gives_algo_options_to_fused_and_eager():
    case = suite.Case("x", "dfa", "digits", 4, 2, model="mlp", algo_extra={"feedback": "sign"},
                      fused_extra={"val_fraction": 0.2})
    assert suite.make_config(case, "fused", "cpu").extra == {"feedback": "sign", "val_fraction": 0.2}
    assert suite.make_config(case, "eager", "cpu").extra == {"feedback": "sign"}
    assert suite.make_config(case, "bp", "cpu").extra == {}
    old = suite.Case("y", "ff_mlp", "digits", 2, 2, model="mlp")
    assert suite.make_config(old, "bp", "cpu").layers == 2 and old.bp_key().split("|")[2] == "2"


@pytest.mark.parametrize("algo", NEW_ALGOS)
def test_suite_worker_runs_new_rows(algo, tmp_path, monkeypatch):
    """Every variant of a tiny row of each new algorithm through the suite's worker (in process)."""
    monkeypatch.setenv("FFKERNELS_BENCH_CACHE", str(tmp_path / "cache"))
    graph = algo == "dfa_graph"
    case = suite.Case(f"tiny-{algo}", algo, "synthetic:300:8", 3, 2, model="gcn" if graph else "mlp", hidden=16,
                      patience=suite.NO_EARLY_STOP, lr=1e-2 if graph else 2e-3,
                      batch_size=None if graph else 64)
    records = [suite.run_worker({"case": dataclasses.asdict(case), "variant": v, "device": "cpu", "warmup": False})
               for v in case.variants]
    for r in records:
        assert not r.get("error"), r
        assert r["epochs"] == 2 and r["seconds_per_epoch"] > 0 and 0.0 <= r["accuracy"] <= 1.0
    results = {"records": suite.add_ratios(records)}
    assert "speedup_vs_eager" in records[0] and "accuracy_delta_vs_eager" in records[0]
    assert f"tiny-{algo}" in suite.markdown_table(results)
