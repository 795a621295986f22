"""Forward gradients (ffkernels.algorithms.forward_gradient: fg, fg-local, fg-guess;
docs/algorithms.md#fg): in float64 the directional derivative from the dual-number forward
(``ops.linear_jvp`` layer by layer) equals ``torch.func.jvp`` of the same loss, globally and
for every local loss; ``E[(g . v) v] = g`` statistically; the local-guess step is
``(g . u) u / ||u||^2`` with ``u`` the local head loss's gradient; the diagnostics' cosines are
in [-1, 1], leave training unchanged and show the guess beating the isotropic estimator;
options are the algorithms' own; short runs learn."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import ffkernels
from ffkernels.algorithms.forward_gradient import (ForwardGradientMLP, draw_tangents, dual_forward, flat_cosine,
                                                   forward_gradient, local_forward_gradients, primal_forward)
from ffkernels.algorithms.mlp_ff import softmax_cross_entropy_grad
from ffkernels.train.registry import load_algorithms

TOL = 1e-10
ALGOS = ("fg", "fg-local", "fg-guess")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


@pytest.fixture(autouse=True)
def _small_models_on_one_thread(one_thread):
    """Tiny GEMMs: a second intra-op thread only adds contention on the shared machine."""


def batch(seed=1, b=9, f=7, c=4):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(b, f, generator=gen, dtype=torch.float64) * 2 - 0.5
    y = torch.randint(0, c, (b,), generator=gen)
    return x, y


def net(mode="global", layers=3, hidden=6, f=7, c=4, seed=3, **kw):
    return ForwardGradientMLP(f, c, hidden=hidden, layers=layers, mode=mode, seed=seed, **kw).double()


def mlp_loss(x, y, params):
    """The network's mean cross-entropy written directly with torch ops, params ``[W1, b1, W2, ...]``."""
    h = x
    n = len(params) // 2
    for i in range(n):
        h = F.linear(h, params[2 * i], params[2 * i + 1])
        if i < n - 1:
            h = torch.relu(h)
    return F.cross_entropy(h, y)


def flat_params(m):
    return [t for w, b in zip(m.weights, m.biases) for t in (w.detach(), b.detach())]


# ---------------------------------------------------------------------------- dual numbers
@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_directional_derivative_equals_torch_func_jvp(backend):
    if not ffkernels.available_backends()[backend]["available"]:
        pytest.skip(f"{backend} unavailable")
    m = net()
    x, y = batch()
    params = flat_params(m)
    gen = torch.Generator().manual_seed(11)
    v = draw_tangents(params, gen)
    loss_ref, dd_ref = torch.func.jvp(lambda *p: mlp_loss(x, y, list(p)), tuple(params), tuple(v))
    logits, dlogits = dual_forward(x, m.weights, m.biases, v[0::2], v[1::2], backend=backend)
    loss, error = softmax_cross_entropy_grad(logits, y)
    assert abs(float(loss) - float(loss_ref)) < TOL
    assert abs(float((error * dlogits).sum()) - float(dd_ref)) < TOL * max(1.0, abs(float(dd_ref)))
    # the public estimator: same loss, same g . v, and the estimate is (g . v) v
    loss2, dd, est = forward_gradient(x, y, m.weights, m.biases, list(zip(v[0::2], v[1::2])))
    assert abs(float(dd) - float(dd_ref)) < TOL * max(1.0, abs(float(dd_ref)))
    for (ew, eb), vw, vb in zip(est, v[0::2], v[1::2]):
        assert torch.equal(ew, dd * vw) and torch.equal(eb, dd * vb)


def test_dual_forward_with_an_input_tangent():
    """dx != 0 (the network as a function of its input too)."""
    m = net(layers=2)
    x, y = batch(seed=4)
    gen = torch.Generator().manual_seed(2)
    params = flat_params(m)
    v = draw_tangents(params, gen)
    dx = torch.randn(x.shape, generator=gen, dtype=torch.float64)

    def logits_of(x_, *p):
        h = torch.relu(F.linear(x_, p[0], p[1]))
        return F.linear(h, p[2], p[3])
    out_ref, dout_ref = torch.func.jvp(logits_of, (x, *params), (dx, *v))
    out, dout = dual_forward(x, m.weights, m.biases, v[0::2], v[1::2], dx=dx)
    assert rel_err(out, out_ref) < TOL and rel_err(dout, dout_ref) < TOL


def test_local_directional_derivatives_equal_torch_func_jvp():
    """fg-local: each layer's g_l . v_l is the JVP of its own local loss (input detached, head
    constant) along its own tangent; the heads get their exact gradients."""
    m = net(mode="local", layers=3)
    x, y = batch(seed=5)
    gen = torch.Generator().manual_seed(8)
    tangents = [(torch.randn(w.shape, generator=gen, dtype=torch.float64),
                 torch.randn(b.shape, generator=gen, dtype=torch.float64)) for w, b in zip(m.weights, m.biases)]
    head_w, head_b = list(m.heads.weights), list(m.heads.biases)
    loss, est, head_grads = local_forward_gradients(x, y, m.weights, m.biases, head_w, head_b, tangents)
    hs, _ = primal_forward(x, [w.detach() for w in m.weights], [b.detach() for b in m.biases])
    last = len(m.weights) - 1
    for i, (w, b) in enumerate(zip(m.weights, m.biases)):
        v, db = tangents[i]

        def local_loss(w_, b_, i=i):
            z = F.linear(hs[i], w_, b_)
            if i == last:
                return F.cross_entropy(z, y)
            return F.cross_entropy(F.linear(torch.relu(z), head_w[i].detach(), head_b[i].detach()), y)
        _, dd_ref = torch.func.jvp(local_loss, (w.detach(), b.detach()), (v, db))
        assert rel_err(est[i][0], dd_ref * v) < 1e-9 and rel_err(est[i][1], dd_ref * db) < 1e-9, i
        if i < last:
            a_w = head_w[i].detach().requires_grad_(True)
            a_b = head_b[i].detach().requires_grad_(True)
            with torch.enable_grad():
                hl = torch.relu(F.linear(hs[i], w.detach(), b.detach()))
                gw, gb = torch.autograd.grad(F.cross_entropy(F.linear(hl, a_w, a_b), y), [a_w, a_b])
            assert rel_err(head_grads[i][0], gw) < TOL and rel_err(head_grads[i][1], gb) < TOL
    assert abs(float(loss) - float(mlp_loss(x, y, flat_params(m)))) < TOL


def test_forward_gradient_is_unbiased():
    """E[(g . v) v] = g: the mean of many single-tangent estimates against autograd, with a
    tolerance (~3x the standard error sqrt(P / M)) that a wrong scale (x0.5, x2, 1/P) fails."""
    m = net(layers=2, hidden=4, f=3, c=2)
    x, y = batch(seed=6, b=5, f=3, c=2)
    params = flat_params(m)
    num_params = sum(p.numel() for p in params)
    with torch.enable_grad():
        ps = [p.clone().requires_grad_(True) for p in params]
        g = torch.cat([t.flatten() for t in torch.autograd.grad(mlp_loss(x, y, ps), ps)])
    gen = torch.Generator().manual_seed(0)
    samples = 12000
    total = torch.zeros_like(g)
    for _ in range(samples):
        v = draw_tangents(params, gen)
        _, _, est = forward_gradient(x, y, m.weights, m.biases, list(zip(v[0::2], v[1::2])))
        total += torch.cat([t.flatten() for pair in est for t in pair])
    mean = total / samples
    tol = 3.0 * (num_params / samples) ** 0.5
    assert rel_err(mean, g) < tol, (rel_err(mean, g), tol)
    for wrong in (0.5, 2.0, 1.0 / num_params):
        assert rel_err(wrong * mean, g) > tol


def test_local_guess_step_equals_the_formula():
    """fg-guess: layer l's step is (g_l . u_l) u_l / ||u_l||^2 with u_l the gradient of its local
    head loss (input detached) and g_l the global loss's gradient; the output layer's guess is
    its own gradient, so its step is g_L; the heads get their exact gradients."""
    m = net(mode="guess", layers=3)
    x, y = batch(seed=7)
    params = flat_params(m)
    with torch.enable_grad():
        ps = [p.clone().requires_grad_(True) for p in params]
        g = torch.autograd.grad(mlp_loss(x, y, ps), ps)
    hs, _ = primal_forward(x, params[0::2], params[1::2])
    head_w, head_b = list(m.heads.weights), list(m.heads.biases)
    loss, steps, head_grads = m.estimate(x, y)
    last = len(m.weights) - 1
    for i in range(len(m.weights)):
        gw, gb = g[2 * i], g[2 * i + 1]
        if i == last:
            uw, ub = gw, gb
        else:
            with torch.enable_grad():
                w = params[2 * i].clone().requires_grad_(True)
                b = params[2 * i + 1].clone().requires_grad_(True)
                a = F.linear(torch.relu(F.linear(hs[i], w, b)), head_w[i].detach(), head_b[i].detach())
                uw, ub = torch.autograd.grad(F.cross_entropy(a, y), [w, b])
        norm2 = float(uw.square().sum() + ub.square().sum())
        proj = float((gw * uw).sum() + (gb * ub).sum()) / norm2
        assert rel_err(steps[i][0], proj * uw) < 1e-9, i
        assert rel_err(steps[i][1], proj * ub) < 1e-9, i
        if i == last:
            assert rel_err(steps[i][0], gw) < 1e-9 and rel_err(steps[i][1], gb) < 1e-9
        else:
            with torch.enable_grad():
                a_w = head_w[i].detach().requires_grad_(True)
                a_b = head_b[i].detach().requires_grad_(True)
                hl = torch.relu(F.linear(hs[i], params[2 * i], params[2 * i + 1]))
                hw, hb = torch.autograd.grad(F.cross_entropy(F.linear(hl, a_w, a_b), y), [a_w, a_b])
            assert rel_err(head_grads[i][0], hw) < TOL and rel_err(head_grads[i][1], hb) < TOL
    assert abs(float(loss) - float(mlp_loss(x, y, params))) < TOL


def test_estimates_build_no_autograd_graph():
    for mode in ("global", "local", "guess"):
        m = net(mode=mode).float()
        x, y = batch()
        with torch.enable_grad():
            _, grads, head_grads = m.estimate(x.float(), y)
        assert all(t.grad_fn is None and not t.requires_grad for pair in grads + head_grads for t in pair), mode


def test_tangents_average_and_come_from_the_network_generator():
    x, y = batch()
    one, two = net(tangents=1), net(tangents=2)
    state = one.generator.get_state()
    _, e1, _ = one.estimate(x, y)
    assert not torch.equal(one.generator.get_state(), state)  # the tangents advance the net's own stream
    _, e2, _ = two.estimate(x, y)
    # the average of two: its first tangent's estimate is the single-tangent run's
    again = net(tangents=1)
    _, first, _ = again.estimate(x, y)
    _, second, _ = again.estimate(x, y)
    for (a, b), (c, d), (p, q) in zip(e2, first, second):
        assert rel_err(a, (c + p) / 2) < 1e-12 and rel_err(b, (d + q) / 2) < 1e-12
    assert all(torch.equal(a, c) for (a, _), (c, _) in zip(e1, first))


# ---------------------------------------------------------------------------- diagnostics
def test_flat_cosine():
    a = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    assert flat_cosine(a, a) == pytest.approx(1.0)
    assert flat_cosine(a, [-t for t in a]) == pytest.approx(-1.0)
    assert flat_cosine(a, [torch.tensor([0.0, 1.0]), torch.tensor([0.0])]) == pytest.approx(0.0)
    assert flat_cosine(a, [torch.zeros(2), torch.zeros(1)]) == 0.0


@pytest.fixture(scope="module")
def guess_run():
    return ffkernels.fit("digits", "fg-guess", layers=3, hidden=32, epochs=6, val_every=2, progress=False,
                         diagnostics=True, diagnostics_every=4)


def test_diagnostics_cosines_in_range_and_guess_beats_isotropic(guess_run):
    rep = guess_run.report
    recs = rep["diagnostics"]
    assert rep["diagnostics_samples"] == len(recs) > 10 and rep["diagnostics_every"] == 4
    assert [r["step"] for r in recs] == list(range(4, 4 * len(recs) + 1, 4))
    for r in recs:
        for key in ("cosine", "cosine_isotropic"):
            assert -1.0 <= r[key] <= 1.0
        assert all(-1.0 <= c <= 1.0 for c in r["cosine_per_layer"]) and len(r["cosine_per_layer"]) == 3
    # trained for a bit: the second half of the run
    late = recs[len(recs) // 2:]
    guess = sum(r["cosine"] for r in late) / len(late)
    iso = sum(r["cosine_isotropic"] for r in late) / len(late)
    assert guess > 5 * iso and guess > 0.1, (guess, iso)
    assert rep["grad_cosine"] > rep["grad_cosine_isotropic"]


@pytest.mark.parametrize("algo", ["fg", "fg-local"])
def test_diagnostics_of_random_tangents(algo):
    rep = ffkernels.fit("digits", algo, layers=2, hidden=16, epochs=2, progress=False, diagnostics=True,
                        diagnostics_every=3).report
    assert rep["diagnostics_samples"] > 5
    keys = ["cosine"] + (["cosine_local"] if algo == "fg-local" else [])
    for r in rep["diagnostics"]:
        assert "cosine_isotropic" not in r
        for key in keys:
            assert -1.0 <= r[key] <= 1.0
            # (g . v) v has a non-negative cosine with the gradient it estimates
        if algo == "fg":
            assert r["cosine"] >= 0.0
        else:
            assert r["cosine_local"] >= 0.0
    assert isinstance(rep["grad_cosine"], float)


def test_diagnostics_do_not_change_training(guess_run):
    plain = ffkernels.fit("digits", "fg-guess", layers=3, hidden=32, epochs=6, val_every=2, progress=False)
    assert "grad_cosine" not in plain.report and "diagnostics" not in plain.report
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), guess_run.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert plain.metrics == guess_run.metrics


def test_resume_with_diagnostics_equals_uninterrupted(tmp_path):
    opts = dict(layers=2, hidden=8, epochs=4, val_every=2, progress=False, diagnostics=True, diagnostics_every=7)
    full = ffkernels.fit("digits", "fg-local", **opts)
    ckpt = str(tmp_path / "run.pt")
    ffkernels.fit("digits", "fg-local", **opts, save=ckpt, stop_after_epochs=2)
    resumed = ffkernels.fit("digits", "fg-local", **opts, resume=ckpt)
    assert resumed.report["diagnostics"] == full.report["diagnostics"]
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


# ---------------------------------------------------------------------------- registration, runs
def test_registered_with_their_own_options():
    algos = load_algorithms()
    for name in ALGOS:
        spec = algos[name]
        assert spec.task == "mlp" and spec.models == ("mlp",) and spec.schedule == "simultaneous"
        names = set(spec.options.names())
        assert {"batch_size", "optimizer", "momentum", "diagnostics", "diagnostics_every", "val_fraction"} <= names
    assert "tangents" in algos["fg"].options.names() and "tangents" in algos["fg-local"].options.names()
    assert "tangents" not in algos["fg-guess"].options.names()  # its directions are the guesses
    assert [algos[n].variant["mode"] for n in ALGOS] == ["global", "local", "guess"]


@pytest.mark.parametrize("algo,option", [
    ("fg-guess", dict(tangents=2)),
    ("fg", dict(theta=1.0)),
    ("fg", dict(feedback="sign")),
    ("dfa", dict(diagnostics=True)),
])
def test_option_of_another_algorithm_is_an_error(algo, option):
    with pytest.raises(ValueError, match="has no option"):
        ffkernels.fit("digits", algo, progress=False, epochs=1, **option)


@pytest.mark.parametrize("bad,match", [
    (dict(optimizer="rmsprop"), "optimizer must be one of"),
    (dict(tangents=0), "tangents must be >= 1"),
    (dict(diagnostics_every=0), "diagnostics_every must be >= 1"),
    (dict(diagnostics="yes"), "diagnostics must be True or False"),
    (dict(momentum=1.5), "momentum must be <="),
])
def test_bad_option_values_are_errors(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ffkernels.fit("digits", "fg", progress=False, epochs=1, **bad)


@pytest.mark.parametrize("algo,epochs,floor", [("fg", 30, 0.35), ("fg-local", 30, 0.35), ("fg-guess", 8, 0.75)])
def test_short_runs_learn(algo, epochs, floor):
    # chance is 0.1; isotropic forward gradients learn slowly (about 0.5 after 30 epochs, 0.93 after ~400)
    trained = ffkernels.fit("digits", algo, epochs=epochs, progress=False)
    assert trained.metrics["test_accuracy"] > floor, trained.metrics
    assert set(trained.metrics) == {"val_accuracy", "test_accuracy", "train_accuracy"}
    assert trained.report["n_fit"] + trained.report["n_val"] == 1438
    emb = trained.model.embed(ffkernels.datasets.resolve("digits"))
    assert len(emb) == trained.options["layers"] and emb[-1].shape[1] == 10


def test_sgd_and_one_layer():
    trained = ffkernels.fit("digits", "fg-guess", layers=1, optimizer="sgd", lr=0.05, epochs=4, progress=False)
    assert trained.model.net.heads is None and trained.metrics["test_accuracy"] > 0.8
    assert isinstance(trained.model.net.body.optimizer, torch.optim.SGD)
