"""The MLP forward-learning families (ffkernels.algorithms.mlp_ff: ff, ff-hard, symba, cff;
ffkernels.algorithms.pepita): closed-form local gradients against autograd (float64),
negatives never carry the true label, short runs through ffkernels.fit beat chance on digits,
seeded runs repeat exactly, options are the algorithm's own."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ffkernels
from ffkernels.algorithms import mlp_ff
from ffkernels.algorithms.mlp_common import (fit_val_rows, hard_wrong_labels, make_generator, uniform_wrong_labels,
                                             validation_split, with_label)
from ffkernels.algorithms.mlp_ff import (FFMLP, CollaborativeFFMLP, SoftmaxHead, SymBaMLP, collaborative_ff_objective,
                                         softmax_cross_entropy_grad)
from ffkernels.algorithms.pepita import PEPITAMLP
from ffkernels.datasets import Dataset, load
from ffkernels.nn import FFLinear
from ffkernels.train.registry import load_algorithms

TOL = 1e-6


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def sgd_unit(params):
    # lr 1, no momentum: the parameter change of one step is exactly minus the gradient.
    return torch.optim.SGD(params, lr=1.0)


def layer_gradient(layer, step):
    """Run ``step()`` (one local update of ``layer``) and return the gradient it applied."""
    before = {k: v.detach().clone() for k, v in layer.named_parameters()}
    step()
    return {k: before[k] - v.detach() for k, v in layer.named_parameters()}


def autograd_layer_gradient(layer, prepared, loss_of_h):
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    h = torch.relu(prepared @ w.t() + b)
    loss = loss_of_h(h)
    gw, gb = torch.autograd.grad(loss, (w, b))
    return float(loss.detach()), {"weight": gw, "bias": gb}


@pytest.fixture(autouse=True)
def _tiny_models_on_one_thread(one_thread):
    """These models are tiny (64x128 GEMMs): a second intra-op thread only adds contention."""


@pytest.fixture(scope="module")
def digits():
    return load("digits")


def ff_batch(seed=0, b=12, f=20, c=5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, f, generator=gen, dtype=torch.float64)
    y = torch.randint(0, c, (b,), generator=gen)
    yneg = uniform_wrong_labels(y, c, gen)
    xin = torch.cat([with_label(x, y, c), with_label(x, yneg, c)])
    positive = torch.zeros(2 * b, dtype=torch.bool)
    positive[:b] = True
    return xin, positive, c


# ---------------------------------------------------------------------------------------------
# invariant 1: closed-form local gradients == autograd of the same local loss (float64)

@pytest.mark.parametrize("goodness", ["sum", "mean"])
def test_ff_layer_gradient_matches_autograd(goodness):
    xin, positive, _ = ff_batch()
    torch.manual_seed(1)
    layer = FFLinear(xin.shape[1], 16, normalize="rms", optimizer=sgd_unit).double()
    prepared = layer.prepare(xin)
    theta = 16.0 if goodness == "sum" else 1.0
    # A larger weight scale so that positive and negative rows sit on both sides of theta.
    with torch.no_grad():
        layer.weight.mul_(3.0)

    def ff_loss(h):
        g = (h * h).sum(1) if goodness == "sum" else (h * h).mean(1)
        s = g - theta
        return F.softplus(-s[positive]).mean() + F.softplus(s[~positive]).mean()

    ref_loss, ref = autograd_layer_gradient(layer, prepared, ff_loss)
    out = {}
    got = layer_gradient(layer, lambda: out.setdefault("r", layer.step_prepared(
        prepared, positive=positive, theta=theta, goodness=goodness, loss="ff")))
    assert abs(out["r"].loss - ref_loss) <= TOL * abs(ref_loss)
    for k in ("weight", "bias"):
        assert rel_err(got[k], ref[k]) < TOL, k


def test_symba_layer_gradient_matches_autograd():
    xin, positive, _ = ff_batch(seed=3)
    b = int(positive.sum())
    pairs = torch.stack([torch.arange(b), torch.arange(b) + b], dim=1)
    torch.manual_seed(2)
    layer = FFLinear(xin.shape[1], 16, normalize="rms", optimizer=sgd_unit).double()
    prepared = layer.prepare(xin)
    with torch.no_grad():
        layer.weight.mul_(0.3)  # keep alpha * (G_p - G_q) in sigmoid's informative range

    def symba_loss(h):
        g = (h * h).sum(1)
        return F.softplus(-4.0 * (g[pairs[:, 0]] - g[pairs[:, 1]])).mean()

    ref_loss, ref = autograd_layer_gradient(layer, prepared, symba_loss)
    got = layer_gradient(layer, lambda: layer.step_prepared(prepared, positive=positive, loss="symba", pairs=pairs,
                                                            alpha=4.0))
    for k in ("weight", "bias"):
        assert rel_err(got[k], ref[k]) < TOL, k


def test_collaborative_ff_objective_matches_autograd():
    xin, positive, _ = ff_batch(seed=5)
    torch.manual_seed(3)
    layer = FFLinear(xin.shape[1], 16, normalize="rms", optimizer=sgd_unit).double()
    prepared = layer.prepare(xin)
    gamma = torch.rand(xin.shape[0], dtype=torch.float64) * 20.0
    theta = 24.0

    def cff_loss(h):
        s = (h * h).sum(1) + gamma - theta
        return F.softplus(-s[positive]).mean() + F.softplus(s[~positive]).mean()

    # the objective itself: dloss/dh
    h = layer(prepared.clone())
    hh = h.clone().requires_grad_(True)
    ref_loss = cff_loss(hh)
    (ref_gh,) = torch.autograd.grad(ref_loss, hh)
    ref_loss = ref_loss.detach()
    loss, gh = collaborative_ff_objective(h, positive, gamma, theta)
    assert abs(float(loss) - float(ref_loss)) <= TOL * abs(float(ref_loss))
    assert rel_err(gh, ref_gh) < TOL
    # through the layer (ReLU mask, weight and bias gradients)
    _, ref = autograd_layer_gradient(layer, prepared, cff_loss)
    got = layer_gradient(layer, lambda: layer.step_prepared(
        prepared, objective=lambda hk: collaborative_ff_objective(hk, positive, gamma, theta)))
    for k in ("weight", "bias"):
        assert rel_err(got[k], ref[k]) < TOL, k


def test_collaborative_gamma_is_other_layers_goodness(digits):
    model = CollaborativeFFMLP(64, 10, hidden=32, layers=3, seed=0).double()
    x, y = digits.x[:16].double(), digits.y[:16]
    seen = []
    original = collaborative_ff_objective

    def spy(h, positive, gamma, theta, temperature=1.0, goodness="sum"):
        seen.append((h.detach().clone(), gamma.detach().clone(), theta))
        return original(h, positive, gamma, theta, temperature, goodness)

    xin, _, _ = model._stacked_batch(x, y, uniform_wrong_labels(y, 10, make_generator(0)))
    table = torch.stack([(h * h).sum(1) for h in model.activities(xin)], dim=1)
    mlp_ff.collaborative_ff_objective = spy
    try:
        model.train_batch(x, y, xin[16:, :10].argmax(1))
    finally:
        mlp_ff.collaborative_ff_objective = original
    assert len(seen) == 3
    for k, (h, gamma, theta) in enumerate(seen):
        assert torch.allclose((h * h).sum(1), table[:, k], rtol=1e-10)  # pre-update output of layer k
        assert torch.allclose(gamma, table.sum(1) - table[:, k], rtol=1e-10)
        assert theta == 96.0  # sum of the per-layer thresholds (widths)


def test_softmax_head_gradient_matches_autograd():
    gen = torch.Generator().manual_seed(7)
    feat = torch.randn(9, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (9,), generator=gen)
    head = SoftmaxHead(6, 4, optimizer=sgd_unit).double()
    with torch.no_grad():
        head.weight.copy_(torch.randn(4, 6, generator=gen))
        head.bias.copy_(torch.randn(4, generator=gen))
    logits = (feat @ head.weight.detach().t() + head.bias.detach()).requires_grad_(True)
    ref_loss = F.cross_entropy(logits, y)
    (ref_g,) = torch.autograd.grad(ref_loss, logits)
    ref_loss = ref_loss.detach()
    loss, g = softmax_cross_entropy_grad(logits.detach(), y)
    assert abs(float(loss) - float(ref_loss)) <= TOL * float(ref_loss)
    assert rel_err(g, ref_g) < TOL
    w = head.weight.detach().clone().requires_grad_(True)
    b = head.bias.detach().clone().requires_grad_(True)
    gw, gb = torch.autograd.grad(F.cross_entropy(feat @ w.t() + b, y), (w, b))
    got = layer_gradient(head, lambda: head.step(feat, y))
    assert rel_err(got["weight"], gw) < TOL and rel_err(got["bias"], gb) < TOL


def test_pepita_updates_follow_the_rule():
    torch.manual_seed(0)
    model = PEPITAMLP(12, 3, hidden=[8, 7], seed=4).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5, 12, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=gen)
    w = [p.detach() for p in model.weights]
    onehot = F.one_hot(y, 3).double()

    def passes(inp):
        h1 = torch.relu(inp @ w[0].t())
        h2 = torch.relu(h1 @ w[1].t())
        return [inp, h1, h2, h2 @ w[2].t()]

    clean = passes(x)
    e = torch.softmax(clean[-1], 1) - onehot
    mod = passes(x + e @ model.feedback.t())
    e_mod = torch.softmax(mod[-1], 1) - onehot
    expected = [(clean[1] - mod[1]).t() @ mod[0] / 5, (clean[2] - mod[2]).t() @ mod[1] / 5, e_mod.t() @ mod[2] / 5]
    _, grads = model.gradients(x, y)
    for i in range(3):
        assert rel_err(grads[f"weights.{i}"], expected[i]) < TOL
    bound = (6.0 / 12) ** 0.5 * 0.05
    assert model.feedback.shape == (12, 3) and float(model.feedback.abs().max()) <= bound


# ---------------------------------------------------------------------------------------------
# invariant 4: negatives never carry the true label

def test_uniform_negatives_never_true_label():
    gen = make_generator(0)
    y = torch.arange(10).repeat(500)
    neg = uniform_wrong_labels(y, 10, gen)
    assert not (neg == y).any()
    assert torch.bincount(neg, minlength=10).min() > 300  # all wrong classes are used


def test_hard_negatives_never_true_label():
    gen = make_generator(0)
    y = torch.arange(10).repeat(200)
    scores = torch.randn(y.numel(), 10, generator=gen) * 50.0
    scores[torch.arange(y.numel()), y] = 1e6  # the model is certain of the true class
    scores[:10] = float("-inf")                # degenerate rows: every class impossible
    neg = hard_wrong_labels(scores, y, gen)
    assert not (neg == y).any()
    # hard: the model's most-confused wrong class dominates
    masked = scores.scatter(1, y.view(-1, 1), float("-inf"))
    assert float((neg[10:] == masked[10:].argmax(1)).double().mean()) > 0.9


@pytest.mark.parametrize("negatives", ["uniform", "hard"])
def test_model_negatives_never_true_label(digits, negatives):
    model = FFMLP(64, 10, hidden=32, layers=2, negatives=negatives, seed=0)
    x, y = digits.x[:300], digits.y[:300]
    model.train_epoch(x, y, 64)
    for _ in range(3):
        assert not (model.negative_labels(x, y) == y).any()
    xin, positive, _ = model._stacked_batch(x, y, model.negative_labels(x, y))
    assert not (xin[~positive, :10].argmax(1) == y).any()
    assert (xin[positive, :10].argmax(1) == y).all()


def test_goodness_scores_batch_the_label_passes(digits):
    model = FFMLP(64, 10, hidden=24, layers=3, seed=0)
    x = digits.x[:7]
    scores = model.class_scores(x)
    for c in range(10):
        acts = model.activities(with_label(x, torch.full((7,), c), 10))
        expected = sum((acts[i] ** 2).sum(1) for i in (1, 2))  # layers 2..L
        assert torch.allclose(scores[:, c], expected, rtol=1e-5)
    one = FFMLP(64, 10, hidden=24, layers=1, seed=0)
    assert one.score_layers == [0]


def test_validation_split_is_fixed_and_disjoint(digits):
    fit, val = validation_split(digits.train_idx)
    fit2, val2 = validation_split(digits.train_idx)
    assert torch.equal(val, val2) and torch.equal(fit, fit2)
    assert len(val) == round(0.1 * len(digits.train_idx))
    assert not set(val.tolist()) & set(fit.tolist())
    assert not set(val.tolist()) & set(digits.test_idx.tolist())


def test_fit_val_rows_use_the_datasets_validation_split(digits):
    fit, val = fit_val_rows(digits, 0.1)
    want_fit, want_val = validation_split(digits.train_idx, 0.1)
    assert torch.equal(fit, want_fit) and torch.equal(val, want_val)
    with_val = Dataset("d", digits.x, digits.y, digits.train_idx[:1000], digits.train_idx[1000:], digits.test_idx,
                       digits.num_classes)
    fit, val = fit_val_rows(with_val, 0.1)
    assert torch.equal(fit, with_val.train_idx) and torch.equal(val, with_val.val_idx)


# ---------------------------------------------------------------------------------------------
# registry, options, short training runs through ffkernels.fit, seeding, resume

MLP_ALGOS = ("ff", "ff-hard", "symba", "cff", "pepita")


def test_algorithms_registered():
    algos = load_algorithms()
    for name in MLP_ALGOS:
        spec = algos[name]
        assert spec.task == "mlp" and spec.models == ("mlp",) and spec.schedule == "simultaneous"
    ff = {o.name: o.default for o in algos["ff"].options.all()}
    assert (ff["lr"], ff["weight_decay"], ff["patience"], ff["batch_size"]) == (3e-3, 0.0, 25, 64)
    pepita = {o.name: o.default for o in algos["pepita"].options.all()}
    assert (pepita["lr"], pepita["weight_decay"], pepita["patience"], pepita["momentum"]) == (0.01, 0.0, 25, 0.9)
    assert algos["ff-hard"].variant["negatives"] == "hard" and algos["ff"].variant["negatives"] == "uniform"


@pytest.mark.parametrize("algo,option", [
    ("symba", dict(theta=2.0)),            # symba's loss has no threshold
    ("symba", dict(temperature=2.0)),
    ("ff", dict(alpha=2.0)),               # alpha is symba's
    ("ff", dict(hard_temperature=2.0)),    # only ff-hard samples hard negatives
    ("cff", dict(negatives="hard")),
    ("pepita", dict(theta=2.0)),
    ("pepita", dict(inference="softmax")),
    ("ff", dict(momentum=0.5)),            # momentum is pepita's (SGD)
])
def test_option_of_another_algorithm_is_an_error(algo, option):
    with pytest.raises(ValueError, match="has no option"):
        ffkernels.fit("digits", algo, progress=False, epochs=1, **option)


@pytest.mark.parametrize("bad,match", [
    (dict(normalize="max"), "normalize must be one of"),
    (dict(score_layers="last"), "score_layers must be one of"),
    (dict(val_fraction=1.0), "val_fraction must be <="),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(inference="softmax", head=False), "needs head=True"),
])
def test_bad_option_values_are_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ffkernels.fit("digits", "ff", progress=False, epochs=1, **bad)


SHORT = {"ff": 6, "ff-hard": 6, "symba": 3, "cff": 6, "pepita": 4}


@pytest.mark.parametrize("algo", sorted(SHORT))
def test_short_run_beats_chance(algo):
    trained = ffkernels.fit("digits", algo, layers=2, hidden=64, epochs=SHORT[algo], progress=False)
    m, report = trained.metrics, trained.report
    assert m["test_accuracy"] > 0.6, m
    assert m["val_accuracy"] > 0.6, m
    assert report["epochs_per_layer"] == [report["total_epochs"]]  # one simultaneous stage
    assert report["n_val"] == round(0.1 * 1438) and report["n_fit"] == 1438 - report["n_val"]
    if algo != "pepita":
        assert report["inference"] in ("goodness", "softmax") and report["inference"] == trained.model.mode
        assert m["test_accuracy"] == m[f"test_accuracy_{report['inference']}"]
        assert {"test_accuracy_goodness", "test_accuracy_softmax"} <= set(m)


@pytest.mark.parametrize("cls", [FFMLP, SymBaMLP, CollaborativeFFMLP, PEPITAMLP])
def test_seeded_runs_repeat(digits, cls):
    x, y = digits.x[digits.train_idx[:400]], digits.y[digits.train_idx[:400]]
    kwargs = dict(hidden=32, layers=2, seed=11)
    if cls is not PEPITAMLP:
        kwargs["negatives"] = "hard"

    def trained(**kw):
        model = cls(64, 10, **kw)
        for _ in range(2):
            model.train_epoch(x, y, 50)
        return model

    a, b = trained(**kwargs), trained(**kwargs)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    c = trained(**{**kwargs, "seed": 12})
    assert not torch.equal(next(iter(a.parameters())), next(iter(c.parameters())))


def test_inference_mode_is_honoured_and_kept_by_a_saved_model(tmp_path):
    kw = dict(layers=1, hidden=32, epochs=2, progress=False)
    a = ffkernels.fit("digits", "ff", inference="goodness", **kw)
    b = ffkernels.fit("digits", "ff", inference="goodness", **kw)
    assert a.metrics == b.metrics and a.report["inference"] == "goodness"
    assert a.metrics["test_accuracy"] == a.metrics["test_accuracy_goodness"]
    best = ffkernels.fit("digits", "ff", **kw)  # inference="best": chosen on validation after training
    m = best.metrics
    want = "softmax" if m["val_accuracy_softmax"] > m["val_accuracy_goodness"] else "goodness"
    assert best.model.mode == want and m["val_accuracy"] == m[f"val_accuracy_{want}"]
    path = str(tmp_path / "ff.pt")
    best.save(path)
    again = ffkernels.load_model(path)
    assert again.model.mode == want
    assert torch.equal(again.predict("digits"), best.predict("digits"))
    assert again.evaluate("digits") == best.metrics


def test_embed_gives_every_layer(digits):
    trained = ffkernels.fit("digits", "cff", layers=3, hidden=16, epochs=1, progress=False)
    h = trained.embed("digits")
    assert [t.shape for t in h] == [(digits.num_nodes, 16)] * 3
    pep = ffkernels.fit("digits", "pepita", layers=3, hidden=16, epochs=1, progress=False)
    assert [t.shape[1] for t in pep.embed("digits")] == [16, 16, 10]  # layers counts the output layer


def test_fit_restores_thread_count():
    torch.set_num_threads(2)
    try:
        ffkernels.fit("digits", "pepita", layers=2, hidden=16, epochs=1, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("algo", ["ff-hard", "cff", "pepita"])
def test_resume_on_the_carved_validation_split(algo, tmp_path):
    """digits has no validation split: the carved rows are the same in the resumed run and in
    evaluate (the engine's own resume test runs on data with a validation split)."""
    kw = dict(layers=2, hidden=24, epochs=6, val_every=2, patience=10, seed=3, progress=False)
    full = ffkernels.fit("digits", algo, **kw)
    path = str(tmp_path / "ckpt.pt")
    part = ffkernels.fit("digits", algo, save=path, stop_after_epochs=3, **kw)
    assert part.report["stopped"] and part.report["total_epochs"] == 3
    resumed = ffkernels.fit("digits", algo, resume=path, **kw)
    for (k, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert resumed.metrics == full.metrics == full.evaluate("digits")
    with pytest.raises(ValueError):
        ffkernels.fit("digits", algo, resume=path, **{**kw, "hidden": 32})
