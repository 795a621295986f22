"""MLP forward-learning family (ffkernels.train.mlp): closed-form local gradients against
autograd (float64), negatives never carry the true label, short training runs beat chance on
digits, seeded runs repeat exactly."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ffkernels.datasets import load
from ffkernels.nn import FFLinear
from ffkernels.train.mlp import (FFMLP, PEPITAMLP, CollaborativeFFMLP, SoftmaxHead, SymBaMLP,
                                 collaborative_ff_objective, softmax_cross_entropy_grad, train_mlp)
from ffkernels.train.mlp_common import (hard_wrong_labels, make_generator, uniform_wrong_labels, validation_split,
                                        with_label)
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

    import ffkernels.train.mlp_ff as mlp_ff
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


# ---------------------------------------------------------------------------------------------
# registry, short training runs, seeding

def test_algorithms_registered():
    algos = load_algorithms()
    for name in ("ff", "ff-hard", "symba", "cff", "pepita"):
        assert algos[name].task == "mlp" and "mlp" in algos[name].models


SHORT = {"ff": 6, "ff-hard": 6, "symba": 3, "cff": 6, "pepita": 4}


@pytest.mark.parametrize("algo", sorted(SHORT))
def test_short_run_beats_chance(algo):
    out = train_mlp(algo, layers=2, hidden=64, epochs=SHORT[algo], progress=False)
    assert out["test_accuracy"] > 0.6, out
    assert out["val_accuracy"] > 0.6, out
    assert out["epochs_per_layer"] == [out["epochs_per_layer"][0]] * 2
    assert 0.0 <= out["test_accuracy"] <= 1.0
    if algo != "pepita":
        assert out["inference"] in ("goodness", "softmax")
        assert {"test_accuracy_goodness", "test_accuracy_softmax"} <= set(out)


@pytest.mark.parametrize("cls", [FFMLP, SymBaMLP, CollaborativeFFMLP, PEPITAMLP])
def test_seeded_runs_repeat(digits, cls):
    x, y = digits.x[digits.train_idx[:400]], digits.y[digits.train_idx[:400]]
    kwargs = dict(hidden=32, layers=2, seed=11)
    if cls is not PEPITAMLP:
        kwargs["negatives"] = "hard"
    a = cls(64, 10, **kwargs).fit(x, y, epochs=2, batch_size=50)
    b = cls(64, 10, **kwargs).fit(x, y, epochs=2, batch_size=50)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    c = cls(64, 10, **{**kwargs, "seed": 12}).fit(x, y, epochs=2, batch_size=50)
    assert not torch.equal(next(iter(a.parameters())), next(iter(c.parameters())))


def test_runner_is_repeatable_and_respects_extra():
    kw = dict(layers=1, hidden=32, epochs=2, progress=False, extra={"inference": "goodness"})
    a = train_mlp("ff", **kw)
    b = train_mlp("ff", **kw)
    assert a["test_accuracy"] == b["test_accuracy"] and a["inference"] == "goodness"
    assert a["test_accuracy"] == a["test_accuracy_goodness"]


def test_runner_restores_thread_count():
    torch.set_num_threads(2)
    try:
        train_mlp("pepita", layers=2, hidden=16, epochs=1, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("cls", [FFMLP, CollaborativeFFMLP, PEPITAMLP])
def test_resume_equals_uninterrupted(digits, cls, tmp_path):
    fit, val = validation_split(digits.train_idx[:500])
    data = dict(x_val=digits.x[val], y_val=digits.y[val], epochs=6, batch_size=64, val_every=2, patience=10)
    kwargs = dict(hidden=24, layers=2, seed=3)
    if cls is FFMLP:
        kwargs["negatives"] = "hard"
    x, y = digits.x[fit], digits.y[fit]
    full = cls(64, 10, **kwargs).fit(x, y, **data)
    path = str(tmp_path / "ckpt.pt")
    part = cls(64, 10, **kwargs).fit(x, y, save=path, stop_after_epochs=3, **data)
    assert part.stopped and part.epochs_trained == 3
    resumed = cls(64, 10, **kwargs).fit(x, y, resume=path, **data)
    assert not resumed.stopped and resumed.epochs_trained == full.epochs_trained
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert resumed.history == full.history


def test_runner_resume(tmp_path):
    path = str(tmp_path / "run.pt")
    kw = dict(layers=2, hidden=24, epochs=5, val_every=1, progress=False)
    full = train_mlp("symba", **kw)
    stopped = train_mlp("symba", save=path, stop_after_epochs=2, **kw)
    assert stopped["stopped"] and stopped["total_epochs"] == 2
    resumed = train_mlp("symba", resume=path, **kw)
    assert resumed["test_accuracy"] == full["test_accuracy"] and resumed["total_epochs"] == full["total_epochs"]
    with pytest.raises(ValueError):
        train_mlp("symba", resume=path, **{**kw, "hidden": 32})
