"""Link prediction (docs/algorithms.md#link-prediction): pair-loss gradients vs autograd, exact AUC,
the edge split and negatives, short runs through ``ffkernels.fit``, options, predict/embed/evaluate."""
import itertools

import pytest
import torch
import torch.nn.functional as F

import ffkernels
from ffkernels.algorithms.common import build_layer
from ffkernels.algorithms.link import (check_pairs, link_split, mean_pair_scores, pair_loss_grad, sample_non_edges,
                                       split_edges)
from ffkernels.datasets import load, synthetic
from ffkernels.train.metrics import roc_auc


def _brute_auc(scores, labels):
    pos = [float(s) for s, l in zip(scores, labels) if l]
    neg = [float(s) for s, l in zip(scores, labels) if not l]
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


def _tiny():
    return synthetic(num_nodes=90, avg_degree=6, num_classes=3, num_features=12, seed=5, homophily=0.8)


TINY = dict(layers=2, hidden=8, epochs=4, val_every=2, patience=2, progress=False)


@pytest.fixture(scope="module")
def cora():
    return load("cora")


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 6, (60,), generator=g).float()   # many ties
    labels = torch.rand(60, generator=g) < 0.4
    assert abs(roc_auc(scores, labels) - _brute_auc(scores, labels)) < 1e-12


@pytest.mark.parametrize("loss", ["ce", "ff"])
@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_pair_loss_gradients_match_autograd(loss, model):
    d = synthetic(num_nodes=80, avg_degree=5, num_classes=3, num_features=12, seed=1)
    torch.manual_seed(0)
    layer = build_layer(model, 12, 7).double()
    prepared = layer.prepare(d.x.double(), d.graph)
    pairs = torch.randint(0, 80, (2, 50))
    labels = torch.rand(50) < 0.5
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    h = torch.relu(prepared @ w.t() + b)
    e = h[pairs[0]] * h[pairs[1]]
    s = e.sum(1) if loss == "ce" else e.pow(2).sum(1) - 0.01
    ref = F.binary_cross_entropy_with_logits(s, labels.double())
    ref.backward()
    grads = {}
    layer.apply_gradients = lambda g: grads.update(g)
    res = layer.step_prepared(prepared, lambda hh: pair_loss_grad(hh, pairs, labels, loss, 0.01))
    assert abs(res.loss - float(ref.detach())) < 1e-9
    for got, want in ((grads["weight"], w.grad), (grads["bias"], b.grad)):
        assert float((got - want).norm() / want.norm()) < 1e-6


def test_edge_split_is_disjoint_and_negatives_are_non_edges(cora):
    d = cora
    sp = split_edges(d.edge_index, d.num_nodes, seed=0)
    n = d.num_nodes
    key = lambda p: set((torch.minimum(p[0], p[1]) * n + torch.maximum(p[0], p[1])).tolist())  # noqa: E731
    tr = key(sp.train_edges)
    vp = key(sp.val_pairs[:, sp.val_labels])
    tp = key(sp.test_pairs[:, sp.test_labels])
    assert not (tr & vp) and not (tr & tp) and not (vp & tp)
    allk = set(sp.edge_keys.tolist())
    for p in (sp.val_pairs[:, ~sp.val_labels], sp.test_pairs[:, ~sp.test_labels],
              sample_non_edges(500, n, sp.edge_keys, torch.Generator().manual_seed(0))):
        assert not (set((p[0] * n + p[1]).tolist()) & allk)
        assert (p[0] != p[1]).all()


def test_split_seed_defaults_to_the_run_seed(cora):
    opts = {"seed": 3, "split_seed": None, "val_fraction": 0.05, "test_fraction": 0.10}
    a = link_split(opts, cora)
    b = link_split(dict(opts, seed=0, split_seed=3), cora)
    c = link_split(dict(opts, split_seed=4), cora)
    assert torch.equal(a.val_pairs, b.val_pairs) and torch.equal(a.test_pairs, b.test_pairs)
    assert not torch.equal(a.val_pairs, c.val_pairs)


def test_short_fl_ce_run_beats_chance_on_cora(cora, one_thread):
    trained = ffkernels.fit(cora, "fl-ce", layers=1, hidden=64, epochs=30, val_every=2, patience=15, lr=0.01,
                            progress=False)
    assert trained.metrics["test_auc"] > 0.80, trained.metrics  # measured: 0.849 after 40 epochs at lr 0.01
    assert trained.report["test_auc_per_layer"] == [trained.metrics["test_auc"]]


def test_short_fl_top_run_beats_chance_on_cora(cora, one_thread):
    """fl-top: top-to-input link prediction (simultaneous, alternating even/odd layers)."""
    trained = ffkernels.fit(cora, "fl-top", layers=2, hidden=64, epochs=40, val_every=2, patience=20, lr=0.01,
                            steps=4, progress=False)
    assert trained.metrics["test_auc"] > 0.7, trained.metrics
    rep = trained.report
    assert rep["epochs_per_layer"] == [rep["total_epochs"]]  # one stage: every layer every epoch
    passes = rep["inference_passes"]
    assert len(rep["val_auc_per_pass"]) == 5 and 0 <= passes <= 4
    assert rep["val_auc_per_pass"][passes] == max(rep["val_auc_per_pass"]) == trained.metrics["val_auc"]
    assert int(trained.model.inference_passes) == passes  # a buffer: saved with the model
    assert "inference_passes" in trained.model.state_dict()


def test_defaults_per_algorithm():
    from ffkernels.api import resolve_run_options
    ce, ff, top = (resolve_run_options(a, {}) for a in ("fl-ce", "fl-ff", "fl-top"))
    assert (ce["lr"], ff["lr"], top["lr"]) == (1e-2, 5e-2, 1e-2)
    assert ce["weight_decay"] == ff["weight_decay"] == top["weight_decay"] == 5e-4
    assert "theta" not in ce and ff["theta"] == 0.5 and top["theta"] is None
    assert top["pair_loss"] == "ce" and top["steps"] == 10
    for opts in (ce, ff, top):
        assert (opts["val_fraction"], opts["test_fraction"], opts["split_seed"]) == (0.05, 0.10, None)


def test_ff_theta_defaults_to_half_and_is_used(one_thread):
    d = _tiny()
    trained = ffkernels.fit(d, "fl-ff", **TINY)
    assert trained.model.theta == 0.5 and trained.report["theta"] == 0.5
    other = ffkernels.fit(d, "fl-ff", theta=0.1, **TINY)
    assert other.model.theta == 0.1 and other.metrics != trained.metrics
    top = ffkernels.fit(d, "fl-top", pair_loss="ff", **TINY)
    assert top.model.theta == 0.5 and top.model.loss == "ff"


def test_options_that_do_not_apply_are_errors():
    d = _tiny()
    with pytest.raises(ValueError, match="has no option 'theta'.*fl-ff"):
        ffkernels.fit(d, "fl-ce", theta=0.5, **TINY)
    with pytest.raises(ValueError, match="theta applies only to the ff pair loss"):
        ffkernels.fit(d, "fl-top", theta=0.5, **TINY)
    with pytest.raises(ValueError, match="has no option 'steps'"):
        ffkernels.fit(d, "fl-ce", steps=3, **TINY)
    with pytest.raises(ValueError, match="has no option 'pair_loss'"):
        ffkernels.fit(d, "fl-ff", pair_loss="ce", **TINY)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        ffkernels.fit(d, "fl-ce", val_fraction=0.5, test_fraction=0.5, **TINY)
    with pytest.raises(ValueError, match="model must be one of"):
        ffkernels.fit(d, "fl-ce", model="gat", progress=False)


def test_fl_top_needs_two_layers():
    with pytest.raises(ValueError, match="layers >= 2"):
        ffkernels.fit(_tiny(), "fl-top", layers=1, progress=False)


@pytest.mark.parametrize("algo", ["fl-ce", "fl-top"])
def test_predict_scores_pairs_on_all_edges_and_checks_them(algo, one_thread):
    d = _tiny()
    trained = ffkernels.fit(d, algo, **TINY)
    pairs = torch.tensor([[0, 1, 2, 89], [5, 6, 7, 0]])
    scores = trained.predict(d, pairs=pairs)
    assert scores.shape == (4,) and scores.dtype == torch.float64
    assert bool(((scores > 0) & (scores < 1)).all())
    hs = trained.embed(d)
    assert len(hs) == 2 and all(h.shape == (90, 8) for h in hs)
    assert torch.equal(scores, mean_pair_scores(hs, pairs, trained.model.loss, trained.model.theta))
    if algo == "fl-ce":  # embed is the layers on all of data's edges, not on the training edges
        h = d.x
        for layer in trained.model.layers:
            h = layer(h, d.graph)
        assert torch.equal(hs[-1], h)
    assert trained.predict(d, pairs=pairs.tolist()).equal(scores)
    assert trained.predict(d, pairs=torch.empty(2, 0, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match="pairs="):
        trained.predict(d)
    with pytest.raises(ValueError, match=r"shape \[2, M\]"):
        trained.predict(d, pairs=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 90\)"):
        trained.predict(d, pairs=torch.tensor([[0], [90]]))
    with pytest.raises(TypeError, match="integer"):
        trained.predict(d, pairs=torch.zeros(2, 3))


def test_check_pairs_rejects_negative_ids():
    with pytest.raises(ValueError, match="node ids"):
        check_pairs(torch.tensor([[-1], [0]]), 5, "cpu")


def test_greedy_evaluate_equals_the_last_cumulative_layer_scores(one_thread):
    d = _tiny()
    trained = ffkernels.fit(d, "fl-ce", **TINY)
    rep = trained.report
    assert rep["val_auc_per_layer"][-1] == trained.metrics["val_auc"]
    assert rep["test_auc_per_layer"][-1] == trained.metrics["test_auc"]
    assert trained.evaluate(d) == trained.metrics


def test_negative_generator_is_checkpointed(tmp_path, one_thread):
    from ffkernels.train.checkpoint import read_checkpoint
    ckpt = str(tmp_path / "run.pt")
    ffkernels.fit(_tiny(), "fl-ce", **TINY, save=ckpt, stop_after_epochs=3)
    state = read_checkpoint(ckpt)["trainer"]
    assert isinstance(state["generator"], torch.Tensor) and state["generator"].dtype == torch.uint8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("algo", ["fl-ce", "fl-top"])
def test_runs_on_the_data_device(algo, one_thread):
    d = _tiny()
    cpu = ffkernels.fit(d, algo, **TINY)
    gpu = ffkernels.fit(d, algo, **TINY, device="cuda")
    assert all(p.device.type == "cuda" for p in gpu.model.parameters())
    assert gpu.evaluate(d) == gpu.metrics
    assert abs(gpu.metrics["val_auc"] - cpu.metrics["val_auc"]) < 0.05
    scores = gpu.predict(d, pairs=torch.tensor([[0, 1], [2, 3]]))
    assert scores.device.type == "cuda"
