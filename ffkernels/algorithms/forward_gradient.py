"""Forward gradients: ``fg``, ``fg-local`` and ``fg-guess`` (docs/algorithms.md#fg), MLPs,
simultaneous schedule.

Baydin, Pearlmutter, Syme, Wood & Torr 2022, "Gradients without Backpropagation"; Fournier,
Rivaud, Belilovsky, Eickenberg & Oyallon 2023, "Can Forward Gradient Match Backpropagation?"
(ICML). No backward pass: every update comes from forward passes in dual numbers, each
layer through the fused op :func:`ffkernels.ops.linear_jvp` (``y = x W^T + b`` and its tangent
``dy = x V^T + dx W^T + db`` in one call), ReLU's tangent ``dz * 1[z > 0]`` between layers.

- ``fg`` (Baydin et al.): per mini-batch a tangent ``v ~ N(0, I)`` for every parameter, one
  dual-number forward of the whole network gives the cross-entropy ``L`` and its directional
  derivative ``g . v``; the update ``(g . v) v`` (unbiased: ``E[v v^T] = I``) goes to the
  optimiser as the gradient. ``tangents=K`` averages K such estimates.
- ``fg-local``: every hidden layer has a local loss, a linear softmax head on its output
  (trained alongside on its exact closed-form gradient); the layer gets the forward-gradient
  estimate of its OWN local loss, from tangents of its own parameters only, its input
  detached. The output layer's local loss is the network's cross-entropy.
- ``fg-guess`` (Fournier et al.'s local guesses): layer ``l``'s guess ``u_l`` is the gradient
  of its local head loss with respect to its parameters, in closed form; ``u_l`` is scaled to
  unit norm and the directional derivative of the GLOBAL loss along it (one dual-number
  forward from layer ``l`` up) gives the step ``(g . u_l) u_l``: the orthogonal projection of
  the true gradient onto the guess. The output layer's guess is its own exact gradient.

``diagnostics=True`` (the only autograd in these algorithms) compares the estimates with the
true gradient every ``diagnostics_every`` steps and reports the cosines in the run report.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import LocalLayer
from ..nn.optim import OPTIMIZERS, optimizer_factory
from ..ops import linear_jvp_kernel
from ..train.options import Option, choice, positive_int
from ..train.registry import Model, register
from .mlp_common import (BATCH_SIZE, VAL_FRACTION, MiniBatchClassifier, MLPTrainer, NetClassifierModel,
                         make_generator, minibatches)
from .mlp_ff import softmax_cross_entropy_grad

#: ``fg``: one global forward gradient; ``fg-local``: each layer's of its local loss;
#: ``fg-guess``: the global loss projected on each layer's local-loss gradient.
MODES = ("global", "local", "guess")
#: The diagnostics' own generator (the isotropic comparison's tangents) is seeded with
#: seed + this: turning diagnostics on does not change what training draws.
DIAGNOSTICS_SEED_OFFSET = 7919


# ---------------------------------------------------------------------------- the dual numbers
def relu_jvp(z: torch.Tensor, dz: torch.Tensor):
    """ReLU in dual numbers: ``(relu(z), dz * 1[z > 0])``."""
    return torch.relu(z), dz * (z > 0)


def dual_forward(x, weights, biases, tangent_weights, tangent_biases, dx=None, backend=None):
    """One forward pass in dual numbers through ReLU layers and a linear output layer.

    Args:
        x: ``[B, D_0]`` input; dx: its tangent (None: a constant input).
        weights, biases: the layers' ``[D_l, D_{l-1}]`` / ``[D_l]`` parameters.
        tangent_weights, tangent_biases: one tangent per layer (None: the direction does
            not move that parameter).

    Returns:
        ``(logits, dlogits)``: the output ``[B, C]`` and its directional derivative.
    """
    h, dh = x, dx
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        z, dz = linear_jvp_kernel(h, dh, w, tangent_weights[i], b, tangent_biases[i], backend=backend)
        if i == last:
            return z, dz
        h, dh = relu_jvp(z, dz)
    raise ValueError("dual_forward needs at least one layer")


def directional_derivative(error: torch.Tensor, dlogits: torch.Tensor) -> torch.Tensor:
    """``g . v`` of the mean cross-entropy: ``sum(dL/dlogits * dlogits)`` (``error`` is
    ``(softmax - onehot) / B``, :func:`~ffkernels.algorithms.mlp_ff.softmax_cross_entropy_grad`)."""
    return (error * dlogits).sum()


def draw_tangents(params, generator: torch.Generator) -> list:
    """``v ~ N(0, I)`` shaped like each of ``params`` (drawn on the CPU from ``generator``, in
    order, then moved to the parameter's device and dtype)."""
    return [torch.randn(p.shape, generator=generator, dtype=torch.float64 if p.dtype == torch.float64 else
                        torch.float32).to(device=p.device, dtype=p.dtype) for p in params]


def forward_gradient(x, y, weights, biases, tangents):
    """The forward gradient of the network's mean cross-entropy along one tangent.

    Args:
        tangents: ``[(V_1, db_1), ..., (V_L, db_L)]``.

    Returns:
        ``(loss, g_dot_v, [(dd V_l, dd db_l)])``: the loss, its directional derivative and the
        estimate ``(g . v) v`` per layer.
    """
    logits, dlogits = dual_forward(x, weights, biases, [t[0] for t in tangents], [t[1] for t in tangents])
    loss, error = softmax_cross_entropy_grad(logits, y)
    dd = directional_derivative(error, dlogits)
    return loss, dd, [(dd * v, dd * db) for v, db in tangents]


def local_forward_gradients(x, y, weights, biases, head_weights, head_biases, tangents):
    """Every layer's forward gradient of its own local loss (``fg-local``).

    Layer ``l < L`` sees its detached input ``h_{l-1}`` and the local loss
    ``CE(h_l A_l^T + c_l, y)`` of its head ``(A_l, c_l)`` (the head constant in the tangent); the
    output layer's local loss is the network's cross-entropy.

    Returns:
        ``(loss, [(g_l . v_l) v_l per layer], [(dA_l, dc_l) exact head gradients])``, ``loss``
        the network's cross-entropy.
    """
    h = x
    last = len(weights) - 1
    estimates, head_grads = [], []
    for i, (w, b) in enumerate(zip(weights, biases)):
        v, db = tangents[i]
        z, dz = linear_jvp_kernel(h, None, w, v, b, db)
        if i == last:
            loss, error = softmax_cross_entropy_grad(z, y)
            dd = directional_derivative(error, dz)
        else:
            h, dh = relu_jvp(z, dz)
            a, da = linear_jvp_kernel(h, dh, head_weights[i], None, head_biases[i], None)
            _, error = softmax_cross_entropy_grad(a, y)
            dd = directional_derivative(error, da)
            head_grads.append((error.t() @ h, error.sum(0)))
        estimates.append((dd * v, dd * db))
    return loss, estimates, head_grads


def primal_forward(x, weights, biases):
    """``(hs, zs)``: the layer inputs ``[x, h_1, ..., h_{L-1}]`` and pre-activations
    ``[z_1, ..., z_L]`` (``z_L``: the logits)."""
    hs, zs = [x], []
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        z = torch.addmm(b, hs[-1], w.t())
        zs.append(z)
        if i < last:
            hs.append(torch.relu(z))
    return hs, zs


def unit(u_w: torch.Tensor, u_b: torch.Tensor):
    """``(u_w, u_b) / ||(u_w, u_b)||`` (the pair as one vector); zero stays zero."""
    norm = torch.sqrt(u_w.square().sum() + u_b.square().sum())
    if float(norm) == 0.0:
        return u_w, u_b
    return u_w / norm, u_b / norm


def local_guesses(hs, zs, y, error, head_weights, head_biases):
    """Every layer's guess: the gradient of its local head loss with respect to its own
    parameters, in closed form, and the heads' exact gradients.

    Hidden layer ``l``: ``E_l = (softmax(h_l A_l^T + c_l) - Y) / B``, ``dZ_l = (E_l A_l) * 1[z_l > 0]``,
    ``u_l = (dZ_l^T h_{l-1}, sum_rows dZ_l)``; the output layer: its true gradient
    ``(E^T h_{L-1}, sum_rows E)`` (``error`` = ``E``).

    Returns:
        ``([(u_W, u_b) per layer], [(dA_l, dc_l) per head])`` (not normalised).
    """
    guesses, head_grads = [], []
    last = len(zs) - 1
    for i in range(len(zs)):
        if i == last:
            dz = error
        else:
            h = hs[i + 1]
            _, e_l = softmax_cross_entropy_grad(torch.addmm(head_biases[i], h, head_weights[i].t()), y)
            head_grads.append((e_l.t() @ h, e_l.sum(0)))
            dz = (e_l @ head_weights[i]) * (zs[i] > 0)
        guesses.append((dz.t() @ hs[i], dz.sum(0)))
    return guesses, head_grads


def guess_step(hs, weights, biases, layer: int, u_w, u_b, error):
    """The global loss's directional derivative along layer ``layer``'s (unit) guess, by one
    dual-number forward from that layer up, and the step ``(g . u) u``.

    Returns ``(g_dot_u, (dd u_W, dd u_b))``.
    """
    n = len(weights)
    tw = [u_w] + [None] * (n - layer - 1)
    tb = [u_b] + [None] * (n - layer - 1)
    _, dlogits = dual_forward(hs[layer], weights[layer:], biases[layer:], tw, tb)
    dd = directional_derivative(error, dlogits)
    return dd, (dd * u_w, dd * u_b)


# ---------------------------------------------------------------------------- diagnostics
def flat_cosine(a: list, b: list) -> float:
    """Cosine of two parameter vectors given as lists of tensors (0 when either is zero)."""
    dot = sum(float((x.double() * y.double()).sum()) for x, y in zip(a, b))
    na = math.sqrt(sum(float(x.double().square().sum()) for x in a))
    nb = math.sqrt(sum(float(y.double().square().sum()) for y in b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return max(-1.0, min(1.0, dot / (na * nb)))


def _pairs(grads: list) -> list:
    return [t for pair in grads for t in pair]


# ---------------------------------------------------------------------------- the network
class LinearStack(LocalLayer):
    """Weights ``[D_out, D_in]`` and biases of a list of linear maps, with one optimiser;
    ``torch.nn.Linear``'s initialisation (uniform ``+-1/sqrt(D_in)``) from ``generator``."""

    def __init__(self, shapes, optimizer, generator: torch.Generator):
        super().__init__(optimizer)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for din, dout in shapes:
            bound = 1.0 / math.sqrt(din)
            self.weights.append(nn.Parameter((torch.rand(dout, din, generator=generator) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(dout, generator=generator) * 2 - 1) * bound))

    def step(self, grads: list) -> None:
        """One optimiser step with ``[(dW_l, db_l)]`` as the gradients."""
        named = {}
        for i, (gw, gb) in enumerate(grads):
            named[f"weights.{i}"], named[f"biases.{i}"] = gw, gb
        self.apply_gradients(named)


class ForwardGradientMLP(MiniBatchClassifier, nn.Module):
    """A ReLU MLP trained by forward gradients.

    Args:
        in_features: ``D_0``. num_classes: ``C`` (the output layer's width).
        hidden: width of every hidden layer. layers: weight layers, the output layer included.
        mode: ``global`` (``fg``), ``local`` (``fg-local``) or ``guess`` (``fg-guess``); the last
            two give every hidden layer a linear softmax head (:attr:`heads`).
        optimizer, lr, weight_decay, momentum: the optimiser of the network and (its own
            instance) of the heads; ``momentum`` is SGD's.
        tangents: random tangents averaged per step (``global`` / ``local``).
        seed: seeds the weights, then the heads, then (the same stream) :attr:`generator`,
            which draws the shuffles and the tangents (the trainer checkpoints its state).
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128, layers: int = 2, *,
                 mode: str = "global", optimizer: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0,
                 momentum: float = 0.9, tangents: int = 1, seed: int = 0):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if tangents < 1:
            raise ValueError(f"tangents must be >= 1, got {tangents}")
        self.mode, self.tangents, self.num_classes = mode, int(tangents), num_classes
        dims = [in_features] + [int(hidden)] * (int(layers) - 1) + [num_classes]
        gen = make_generator(seed)
        factory = optimizer_factory(optimizer, lr, weight_decay, momentum)
        self.body = LinearStack(list(zip(dims[:-1], dims[1:])), factory, gen)
        widths = dims[1:-1]
        self.heads = LinearStack([(d, num_classes) for d in widths], factory, gen) \
            if mode != "global" and widths else None
        self.generator = gen

    @property
    def device(self) -> torch.device:
        return self.body.weights[0].device

    @property
    def weights(self) -> list:
        return list(self.body.weights)

    @property
    def biases(self) -> list:
        return list(self.body.biases)

    def _heads(self):
        if self.heads is None:
            return [], []
        return list(self.heads.weights), list(self.heads.biases)

    @torch.no_grad()
    def activities(self, x: torch.Tensor) -> list:
        """``[h_1, ..., h_{L-1}, logits]``."""
        hs, zs = primal_forward(x, self.weights, self.biases)
        return hs[1:] + [zs[-1]]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activities(x.to(self.device))[-1]

    def _tangents(self) -> list:
        flat = draw_tangents(_pairs(list(zip(self.weights, self.biases))), self.generator)
        return [(flat[2 * i], flat[2 * i + 1]) for i in range(len(flat) // 2)]

    @torch.no_grad()
    def estimate(self, x: torch.Tensor, y: torch.Tensor):
        """This mode's update on a batch: ``(loss, [(dW_l, db_l)], [(dA_l, dc_l)] head gradients)``,
        ``loss`` the network's mean cross-entropy."""
        weights, biases = self.weights, self.biases
        head_w, head_b = self._heads()
        if self.mode == "guess":
            hs, zs = primal_forward(x, weights, biases)
            loss, error = softmax_cross_entropy_grad(zs[-1], y)
            guesses, head_grads = local_guesses(hs, zs, y, error, head_w, head_b)
            steps = [guess_step(hs, weights, biases, i, *unit(uw, ub), error)[1] for i, (uw, ub) in enumerate(guesses)]
            return loss, steps, head_grads
        total = None
        for _ in range(self.tangents):
            tangents = self._tangents()
            if self.mode == "global":
                loss, _, est = forward_gradient(x, y, weights, biases, tangents)
                head_grads = []
            else:
                loss, est, head_grads = local_forward_gradients(x, y, weights, biases, head_w, head_b, tangents)
            total = est if total is None else [(a + c, b + d) for (a, b), (c, d) in zip(total, est)]
        if self.tangents > 1:
            total = [(a / self.tangents, b / self.tangents) for a, b in total]
        return loss, total, head_grads

    def apply(self, grads: list, head_grads: list) -> None:
        self.body.step(grads)
        if self.heads is not None and head_grads:
            self.heads.step(head_grads)

    @torch.no_grad()
    def train_batch(self, x: torch.Tensor, y: torch.Tensor) -> float:
        loss, grads, head_grads = self.estimate(x, y)
        self.apply(grads, head_grads)
        return float(loss)

    @torch.no_grad()
    def train_epoch(self, x: torch.Tensor, y: torch.Tensor, batch_size: int | None = 64) -> float:
        losses = [self.train_batch(x[idx], y[idx])
                  for idx in minibatches(x.shape[0], batch_size, self.generator, x.device)]
        return sum(losses) / max(len(losses), 1)

    # -- diagnostics: the one place where autograd runs
    def true_gradients(self, x: torch.Tensor, y: torch.Tensor, local: bool = False):
        """``(global, local)``: the exact gradients (autograd) of the network's cross-entropy and
        (``local=True``, else None) of every layer's own local loss (its input detached; the
        output layer's is the global loss), each ``[(dW_l, db_l)]``."""
        with torch.enable_grad():
            params = [(w.detach().requires_grad_(True), b.detach().requires_grad_(True))
                      for w, b in zip(self.weights, self.biases)]
            h = x
            last = len(params) - 1
            for i, (w, b) in enumerate(params):
                z = F.linear(h, w, b)
                h = z if i == last else torch.relu(z)
            flat = torch.autograd.grad(F.cross_entropy(h, y), _pairs(params))
            glob = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(params))]
            if not local:
                return glob, None
            head_w, head_b = self._heads()
            own = []
            h = x.detach()
            for i, (w, b) in enumerate(params):
                z = F.linear(h, w, b)
                if i == last:
                    loss = F.cross_entropy(z, y)
                else:
                    z = torch.relu(z)
                    loss = F.cross_entropy(F.linear(z, head_w[i].detach(), head_b[i].detach()), y)
                own.append(tuple(torch.autograd.grad(loss, [w, b])))
                h = z.detach()
        return glob, own

    @torch.no_grad()
    def diagnose(self, x: torch.Tensor, y: torch.Tensor, estimate: list, generator: torch.Generator) -> dict:
        """Cosines of ``estimate`` (this step's ``[(dW_l, db_l)]``) to the true global gradient
        (overall and per layer); ``local``: also to the local losses' gradients; ``guess``: also
        the isotropic estimator ``(g . v) v`` (``v ~ N(0, I)`` over every parameter, from
        ``generator``)."""
        glob, local = self.true_gradients(x, y, local=self.mode == "local")
        out = {"cosine": flat_cosine(_pairs(estimate), _pairs(glob)),
               "cosine_per_layer": [flat_cosine(list(e), list(g)) for e, g in zip(estimate, glob)]}
        if self.mode == "local":
            out["cosine_local"] = flat_cosine(_pairs(estimate), _pairs(local))
        if self.mode == "guess":
            flat_g = _pairs(glob)
            v = draw_tangents(flat_g, generator)
            dd = sum(float((gi.double() * vi.double()).sum()) for gi, vi in zip(flat_g, v))
            out["cosine_isotropic"] = flat_cosine([dd * vi for vi in v], flat_g)
        return out


class ForwardGradientModel(NetClassifierModel, Model):
    """A :class:`ForwardGradientMLP` built from the run's options (``layers`` weight layers, the
    output layer included; the mode from the algorithm's variant)."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        o = self.options
        self.net = ForwardGradientMLP(dims["num_features"], dims["num_classes"], hidden=o["hidden"],
                                      layers=o["layers"], mode=self.variant.get("mode", "global"),
                                      optimizer=o["optimizer"], lr=o["lr"], weight_decay=o["weight_decay"],
                                      momentum=o["momentum"], tangents=o.get("tangents", 1), seed=o["seed"])

    @property
    def layers(self):
        return self.net.body.weights

    @torch.no_grad()
    def embed(self, data) -> list:
        """Every weight layer's output ``h_1 .. h_L`` (the last: the logits)."""
        return self.net.activities(data.x.to(self.net.device))


def _mean(values: list):
    return sum(values) / len(values) if values else None


class ForwardGradientTrainer(MLPTrainer):
    """One stage; an epoch is one pass of seeded mini-batches, one forward-gradient step per
    batch. With ``diagnostics``, every ``diagnostics_every``-th step (counted over the run)
    also records the cosines of :meth:`ForwardGradientMLP.diagnose` before the step is applied;
    the step count, the records and the diagnostics' generator are checkpointed."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.diagnostics = bool(options["diagnostics"])
        self.every = int(options["diagnostics_every"])
        self.diagnostics_generator = make_generator(options["seed"] + DIAGNOSTICS_SEED_OFFSET)
        self.steps = 0
        self.records: list = []

    @torch.no_grad()
    def train_epoch(self, stage, epoch):
        net, losses = self.net, []
        for idx in minibatches(self.x_fit.shape[0], self.options["batch_size"], net.generator, self.x_fit.device):
            xb, yb = self.x_fit[idx], self.y_fit[idx]
            loss, grads, head_grads = net.estimate(xb, yb)
            self.steps += 1
            if self.diagnostics and self.steps % self.every == 0:
                record = net.diagnose(xb, yb, grads, self.diagnostics_generator)
                self.records.append({"step": self.steps, "epoch": int(epoch), **record})
            net.apply(grads, head_grads)
            losses.append(float(loss))
        return sum(losses) / max(len(losses), 1)

    def validate(self, stage):
        return self.net.evaluate(self.x_val, self.y_val)

    def diagnostics_report(self) -> dict:
        """The report's diagnostics: means over the recorded steps (``grad_cosine``, and
        ``grad_cosine_isotropic`` / ``grad_cosine_local`` where the mode has them), the last
        tenth's means, and every record."""
        recs = self.records
        out = {"diagnostics_every": self.every, "diagnostics_samples": len(recs)}
        keys = [k for k in ("cosine", "cosine_isotropic", "cosine_local") if recs and k in recs[0]]
        tail = recs[-max(1, len(recs) // 10):] if recs else []
        for k in keys:
            out[f"grad_{k}"] = _mean([r[k] for r in recs])
            out[f"grad_{k}_last"] = _mean([r[k] for r in tail])
        if recs:
            layers = len(recs[0]["cosine_per_layer"])
            out["grad_cosine_per_layer"] = [_mean([r["cosine_per_layer"][i] for r in recs]) for i in range(layers)]
        out["diagnostics"] = list(recs)
        return out

    def finish(self):
        out = super().finish()
        if self.diagnostics:
            out.update(self.diagnostics_report())
        return out

    def state_dict(self):
        state = super().state_dict()
        state.update(diagnostics_generator=self.diagnostics_generator.get_state(), steps=self.steps,
                     records=[dict(r) for r in self.records])
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.diagnostics_generator.set_state(state["diagnostics_generator"])
        self.steps = int(state["steps"])
        self.records = [dict(r) for r in state["records"]]


OPTIMIZER = choice("optimizer", "adam", OPTIMIZERS, "the optimiser that takes the estimates as gradients")
MOMENTUM = Option("momentum", float, 0.9, "SGD momentum (optimizer='sgd' only)", minimum=0.0, maximum=1.0)
TANGENTS = positive_int("tangents", 1, "random tangents per step, their estimates averaged (each one more "
                        "dual-number forward)", maximum=1024)
DIAGNOSTICS = Option("diagnostics", bool, False, "every diagnostics_every steps compare the estimate with the "
                     "true gradient (autograd) and report the cosines")
DIAGNOSTICS_EVERY = positive_int("diagnostics_every", 50, "steps between two diagnostics (with diagnostics=True)")

register("fg", task="mlp", models=("mlp",), schedule="simultaneous", model=ForwardGradientModel,
         defaults={"layers": 2, "lr": 2e-3, "weight_decay": 0.0, "patience": 50},
         options=(BATCH_SIZE, OPTIMIZER, MOMENTUM, TANGENTS, DIAGNOSTICS, DIAGNOSTICS_EVERY, VAL_FRACTION),
         variant={"mode": "global"},
         description="forward gradients: (g.v) v from one dual-number forward pass along a random tangent "
                     "v")(ForwardGradientTrainer)
register("fg-local", task="mlp", models=("mlp",), schedule="simultaneous", model=ForwardGradientModel,
         defaults={"layers": 2, "lr": 2e-3, "weight_decay": 0.0, "patience": 50},
         options=(BATCH_SIZE, OPTIMIZER, MOMENTUM, TANGENTS, DIAGNOSTICS, DIAGNOSTICS_EVERY, VAL_FRACTION),
         variant={"mode": "local"},
         description="local forward gradients: each layer's forward gradient of its own linear-head "
                     "loss")(ForwardGradientTrainer)
register("fg-guess", task="mlp", models=("mlp",), schedule="simultaneous", model=ForwardGradientModel,
         defaults={"lr": 1e-3, "weight_decay": 0.0, "patience": 25},
         options=(BATCH_SIZE, OPTIMIZER, MOMENTUM, DIAGNOSTICS, DIAGNOSTICS_EVERY, VAL_FRACTION),
         variant={"mode": "guess"},
         description="forward gradients with local guesses: the global loss's directional derivative along "
                     "each layer's local-loss gradient")(ForwardGradientTrainer)


__all__ = ["ForwardGradientMLP", "ForwardGradientModel", "ForwardGradientTrainer", "LinearStack", "MODES",
           "dual_forward", "relu_jvp", "directional_derivative", "draw_tangents", "forward_gradient",
           "local_forward_gradients", "primal_forward", "local_guesses", "guess_step", "unit", "flat_cosine"]
