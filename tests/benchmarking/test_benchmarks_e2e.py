"""The e2e benchmark's baselines compute what the fused path computes, and its records are complete.

- The eager baselines (autograd per layer, PyG-style gather/scatter) and the fused path take the
  same local loss and the same gradients in one step (float64, tiny graph).
- A tiny suite run (subprocess per variant) yields records with the required fields and ratios.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

from ffkernels import Graph, ops
from ffkernels.benchmarking import eager_baselines as eb
from ffkernels.benchmarking import suite
from ffkernels.datasets import Dataset
from ffkernels.nn import FFGCNConv, FFLinear
from ffkernels.benchmarking.suite import BenchConfig

RTOL = 1e-6


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def _tiny_graph_dataset(n=40, f=12, c=3, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, f, generator=gen, dtype=dtype) + F.one_hot(y, f).to(dtype)
    src = torch.randint(0, n, (3 * n,), generator=gen)
    dst = torch.randint(0, n, (3 * n,), generator=gen)
    keep = src != dst
    ei = torch.stack([torch.cat([src[keep], dst[keep]]), torch.cat([dst[keep], src[keep]])])
    perm = torch.randperm(n, generator=gen)
    tr, va, te = perm[:15].sort()[0], perm[15:25].sort()[0], perm[25:].sort()[0]
    return Dataset("tiny", x, y, tr, va, te, c, Graph.from_edge_index(ei, n), ei, 0)


def test_eager_gcn_conv_equals_fused_layer_forward():
    data = _tiny_graph_dataset()
    fused = FFGCNConv(data.num_features, 8).double()
    eager = eb.EagerGCNConv(data.num_features, 8).double()
    with torch.no_grad():
        eager.lin.weight.copy_(fused.weight)
        eager.bias.copy_(fused.bias)
        want = fused(data.x, data.graph)
        got = F.relu(eager(eb.l2_normalize(data.x), data.edge_index))
    assert _rel(got, want) < RTOL


def test_sf_one_step_gradients_match_fused_runner():
    """One fused SF step (the registered greedy trainer, SGD lr 1 so the update is -grad) vs
    autograd of the eager baseline's SF loss on the same weights and augmented graph."""
    from ffkernels.testing import build_trainer
    data = _tiny_graph_dataset()
    # no dropout: the eager loss below sees the undropped graph and features
    trainer = build_trainer("sf", data, layers=1, hidden=8, seed=3, dropout=0.0, input_dropout=0.0)
    layer = trainer.model.layers[0].double()
    trainer.problem.vg.x = trainer.problem.vg.x.double()
    layer.set_optimizer(lambda params: torch.optim.SGD(params, lr=1.0))
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    trainer.begin_stage(0)
    trainer.train_epoch(0, 1)
    grad_w_fused, grad_b_fused = w0 - layer.weight.detach(), b0 - layer.bias.detach()

    p = trainer.problem
    eager = eb.EagerGCNConv(data.num_features, 8).double()
    with torch.no_grad():
        eager.lin.weight.copy_(w0)
        eager.bias.copy_(b0)
    h = F.relu(eager(eb.l2_normalize(p.vg.x), p.vg.edge_index))
    loss = eb.sf_loss(h, p.train_idx, p.virtual_idx, p.y_train)
    loss.backward()
    assert _rel(grad_w_fused, eager.lin.weight.grad) < RTOL
    assert _rel(grad_b_fused, eager.bias.grad) < RTOL


def test_sf_loss_and_grad_match_fused_op():
    data = _tiny_graph_dataset()
    vg = eb.augment_with_virtual_nodes(data.x, data.edge_index, data.train_idx, data.y[data.train_idx], 3, seed=0)
    h = torch.rand(vg.num_nodes, 8, dtype=torch.float64, requires_grad=True)
    loss = eb.sf_loss(h, data.train_idx, vg.virtual_idx, data.y[data.train_idx])
    loss.backward()
    fused_loss, fused_grad = ops.sf_loss_grad(h.detach(), data.train_idx, data.y[data.train_idx], vg.virtual_idx,
                                              dense=True)
    assert abs(float(fused_loss) - float(loss.detach())) < 1e-8 * abs(float(loss.detach()))
    assert _rel(fused_grad, h.grad) < RTOL


def test_ff_la_gradients_match_fused_ops():
    """The eager FF-LA step (C streams through autograd) vs the fused goodness/loss/gradient op."""
    data = _tiny_graph_dataset()
    c = data.num_classes
    x_pos, x_negs = eb.label_append_inputs(data.x, data.y, data.train_idx, c, seed=1)
    fused = FFGCNConv(x_pos.shape[1], 8).double()
    eager = eb.EagerGCNConv(x_pos.shape[1], 8).double()
    with torch.no_grad():
        eager.lin.weight.copy_(fused.weight)
        eager.bias.copy_(fused.bias)
    tr = data.train_idx
    g_pos = F.relu(eager(eb.l2_normalize(x_pos), data.edge_index))[tr].pow(2).sum(1)
    g_neg = torch.cat([F.relu(eager(eb.l2_normalize(xn), data.edge_index))[tr].pow(2).sum(1) for xn in x_negs])
    loss = eb.ff_loss(g_pos, g_neg, theta=2.0)
    loss.backward()

    prepared = [fused.prepare(xs, data.graph)[tr] for xs in [x_pos] + x_negs]
    stacked = torch.cat(prepared)
    positive = torch.zeros(stacked.shape[0], dtype=torch.bool)
    positive[: tr.numel()] = True
    fused_loss, _, grad_w, grad_b, _ = ops.linear_goodness_step(stacked, fused.weight.detach(), fused.bias.detach(),
                                                                positive, theta=2.0)
    assert abs(float(fused_loss) - float(loss.detach())) < 1e-8 * abs(float(loss.detach()))
    assert _rel(grad_w, eager.lin.weight.grad) < RTOL
    assert _rel(grad_b, eager.bias.grad) < RTOL


def test_ff_mlp_gradients_match_fused_linear_step():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 20, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (30,), generator=gen)
    wrong = (y + torch.randint(1, 4, (30,), generator=gen)) % 4
    x_pos, x_neg = eb.with_label(x, y, 4), eb.with_label(x, wrong, 4)
    fused = FFLinear(24, 16, normalize="rms").double()
    eager = eb.EagerLinear(24, 16).double()
    with torch.no_grad():
        eager.lin.weight.copy_(fused.weight)
        eager.lin.bias.copy_(fused.bias)
    theta = 16.0
    g_pos = F.relu(eager(eb.rms_normalize(x_pos))).pow(2).sum(1)
    g_neg = F.relu(eager(eb.rms_normalize(x_neg))).pow(2).sum(1)
    loss = eb.ff_loss(g_pos, g_neg, theta)
    loss.backward()
    inputs = torch.cat([fused.prepare(x_pos), fused.prepare(x_neg)])
    positive = torch.cat([torch.ones(30, dtype=torch.bool), torch.zeros(30, dtype=torch.bool)])
    fused_loss, _, grad_w, grad_b, _ = ops.linear_goodness_step(inputs, fused.weight.detach(), fused.bias.detach(),
                                                                positive, theta=theta)
    assert abs(float(fused_loss) - float(loss.detach())) < 1e-8 * abs(float(loss.detach()))
    assert _rel(grad_w, eager.lin.weight.grad) < RTOL
    assert _rel(grad_b, eager.lin.bias.grad) < RTOL


def test_ff_la_negatives_never_carry_true_label():
    data = _tiny_graph_dataset(c=4)
    _, negs = eb.label_append_inputs(data.x, data.y, data.train_idx, 4, seed=0)
    f = data.num_features
    for neg in negs:
        assert not bool((neg[data.train_idx, f:].argmax(1) == data.y[data.train_idx]).any())


def test_eager_runners_learn_on_a_small_graph():
    from ffkernels.datasets import synthetic
    data = synthetic(600, avg_degree=10, num_classes=4, num_features=16, seed=1)
    cfg = BenchConfig(model="gcn", layers=2, hidden=32, epochs=30, val_every=2, patience=100, lr=0.01,
                      weight_decay=5e-4, seed=0, device="cpu")
    out = eb.run_sf_eager(cfg, data)
    assert out["test_accuracy"] > 0.5 and out["epochs_per_layer"] == [30, 30]
    out = eb.run_bp_gcn(copy.deepcopy(cfg), data)
    assert out["test_accuracy"] > 0.5


REQUIRED = ("name", "variant", "seconds_per_epoch", "peak_memory_bytes", "accuracy")
FUSED_REQUIRED = ("speedup_vs_eager", "memory_ratio_vs_bp")


def test_suite_records_have_required_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("FFKERNELS_BENCH_CACHE", str(tmp_path / "cache"))
    case = suite.Case("tiny-sf", "sf", "synthetic:300:8", 1, 2, patience=suite.NO_EARLY_STOP, hidden=16)
    results = suite.run_suite(cases=[case], timeout=120, threads=1, log=lambda msg: None)
    records = json.loads(json.dumps(results["records"]))  # what --json writes
    assert [r["variant"] for r in records] == ["fused", "eager", "bp"]
    for r in records:
        assert not r.get("error"), r
        for key in REQUIRED:
            assert key in r, key
        assert r["seconds_per_epoch"] > 0 and r["peak_memory_bytes"] >= 0 and 0.0 <= r["accuracy"] <= 1.0
        assert r["epochs"] == 2
    fused = records[0]
    for key in FUSED_REQUIRED:
        assert key in fused, key
    table = suite.markdown_table(results)
    assert "tiny-sf" in table and "| fused |" in table
