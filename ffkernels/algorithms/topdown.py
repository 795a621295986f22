"""ForwardGNN's SF with top-down signals: ``sf-top-input`` and ``sf-top-loss``
(docs/algorithms.md#sf-top-input), simultaneous schedule.

- ``sf-top-input`` (GCN): layer ``j`` reads ``[n(s_j) || n(s_{j+2})]`` and writes ``s_{j+1}``;
  ``s_{L+1}`` is the label state (one-hot for training and virtual nodes, uniform elsewhere).
  Each epoch updates the even layers first, then the odd layers on the fresh even outputs.
  Inference: a fresh bottom-up pass (zero top-down input), then 10 state updates, summing
  every layer's SF softmax over steps 2..9.
- ``sf-top-loss`` (GCN/SAGE): a bottom-up pass, then layer ``j`` minimises the SF loss of
  ``mean(h_j, n(h_{j+1}), ..., n(h_{L-1}))`` (only ``h_j`` carries gradient), its gradient norm
  clipped to ``clip``. Inference: a bottom-up pass and one state update, SF softmax summed.

The first layer's aggregation of the fixed input is cached (sparse + low-rank form).
Validation scores the current states' per-layer SF softmax on the validation rows; the
states are the trainer's state, so a resumed run is exact.
"""
from __future__ import annotations

import torch

from .. import ops
from ..nn.functional import normalize_rows
from ..ops.sf import sf_loss_grad_kernel
from ..train.metrics import accuracy
from ..train.options import positive_float
from ..train.registry import Model, Trainer, register
from .common import build_layer, virtual_node_features
from .forwardgnn import SF_DEFAULTS, TAU, SFProblem, make_row_operands

INFERENCE_STEPS = 10          # state updates at inference (top-to-input) ...
INFERENCE_FIRST_SUMMED = 2    # ... summing the softmax of steps 2..9, as the reference


class TopDownModel(Model):
    """The layers of a top-down SF network and the virtual nodes' fixed features."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        self.mode = self.variant["mode"]
        f, c, hid, num_layers = dims["num_features"], dims["num_classes"], options["hidden"], options["layers"]
        lr, wd = options["lr"], options["weight_decay"]
        if self.mode == "input":
            top = [hid] * (num_layers - 1) + [c]   # width of s_{j+2}
            self.layers = torch.nn.ModuleList(
                build_layer(options["model"], (f if j == 0 else hid) + top[j], hid, lr=lr, weight_decay=wd,
                            normalize=None) for j in range(num_layers))
        else:
            widths = [f] + [hid] * num_layers
            self.layers = torch.nn.ModuleList(build_layer(options["model"], widths[j], widths[j + 1], lr=lr,
                                                          weight_decay=wd) for j in range(num_layers))
        self.register_buffer("virtual_features", virtual_node_features(c, f, options["seed"]))

    def network(self, data) -> "TopDownNetwork":
        return TopDownNetwork(self, data)

    @torch.no_grad()
    def class_probs(self, data) -> torch.Tensor:
        return self.network(data).predict()

    @torch.no_grad()
    def predict(self, data) -> torch.Tensor:
        return self.class_probs(data).argmax(dim=1)

    @torch.no_grad()
    def embed(self, data) -> list:
        """The states after inference's last update, real nodes only."""
        net = self.network(data)
        states = net.bottom_up()
        steps = 1 if self.mode == "loss" else INFERENCE_STEPS
        for _ in range(steps):
            _, states = net.epoch(states, train=False)
        return [s[: data.num_nodes].clone() for s in states[1:]]

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        probs = self.class_probs(data)
        return {name: accuracy(probs, data.y, idx) for name, idx in
                (("val_accuracy", data.val_idx), ("test_accuracy", data.test_idx), ("train_accuracy", data.train_idx))}


class TopDownNetwork:
    """A :class:`TopDownModel`'s layers on one dataset: the virtual-node graph, the cached
    bottom input of the first layer, the label state, and the state updates."""

    def __init__(self, model: TopDownModel, data):
        self.model, self.mode, self.layers = model, model.mode, model.layers
        self.tau = model.options["tau"]
        self.clip = model.options.get("clip")
        self.num_layers = len(self.layers)
        self.problem = p = SFProblem(data, model.virtual_features.to(data.x.dtype))
        c, f, hid = p.num_classes, data.num_features, model.options["hidden"]
        self.top_width = [hid] * (self.num_layers - 1) + [c]
        # the first layer's constant bottom input, in its cheapest exact form (the shadow layer
        # only supplies the normalisation and aggregation of the model)
        with torch.random.fork_rng(devices=[]):
            shadow = build_layer(model.options["model"], f, hid).to(data.x.device)
        self.bottom_full, self.bottom_step = make_row_operands(shadow, p.vg.x, p, (None, p.step_rows))
        self.f = f
        n = p.vg.num_nodes
        label_state = torch.full((n, c), 1.0 / c, device=p.vg.x.device)
        label_state[p.train_idx] = torch.nn.functional.one_hot(p.y_train, c).to(label_state.dtype)
        label_state[p.virtual_idx] = torch.eye(c, device=p.vg.x.device)
        self.label_state = label_state

    # -- one layer's forward (full rows) and update (step rows)
    def _inputs(self, j, states, zero_top=False):
        """Dense aggregated extra input of layer j (None for the first layer's bottom part)."""
        graph = self.problem.vg.graph
        if self.mode == "loss":
            return None if j == 0 else self.layers[j].prepare(states[j], graph)
        if zero_top:
            top = torch.zeros(self.problem.vg.num_nodes, self.top_width[j], device=self.problem.vg.x.device)
        else:
            top = normalize_rows(states[j + 2] if j + 2 < len(states) else self.label_state)
        if j == 0:
            return ops.aggregate(graph, top, reduce="gcn")
        return ops.aggregate(graph, torch.cat([normalize_rows(states[j]), top], dim=1), reduce="gcn")

    def _forward(self, j, extra):
        layer = self.layers[j]
        if j == 0:
            w = layer.weight
            z = self.bottom_full.matmul_wt(w[:, : self.f], layer.bias)
            if extra is not None:
                z.addmm_(extra, w[:, self.f:].t())
            return z.relu_()
        return layer.transform(extra)

    def _update(self, j, extra, h, grad_rows):
        layer, p = self.layers[j], self.problem
        grad_z = grad_rows * (h.index_select(0, p.step_rows) > 0)
        if j == 0:
            gw = self.bottom_step.grad_weight(grad_z)
            if extra is not None:
                gw = torch.cat([gw, grad_z.t() @ extra.index_select(0, p.step_rows)], dim=1)
        else:
            gw = grad_z.t() @ extra.index_select(0, p.step_rows)
        grads = {"weight": gw, "bias": grad_z.sum(0) if layer.bias is not None else None}
        if self.clip is not None:
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values() if g is not None))
            if norm > self.clip:
                scale = float(self.clip / (norm + 1e-6))
                grads = {k: (None if g is None else g * scale) for k, g in grads.items()}
        layer.apply_gradients(grads)

    def _sf_grad(self, h_step):
        p = self.problem
        loss, grad_rows = sf_loss_grad_kernel(h_step, p.local_train, p.y_train, p.local_virtual, self.tau)
        return loss, grad_rows, None

    @torch.no_grad()
    def bottom_up(self):
        """Initial states ``[s_0 .. s_L]`` (``s_0`` unused placeholder) with zero top-down input."""
        states = [None]
        for j in range(self.num_layers):
            extra = self._inputs(j, states, zero_top=True) if (j > 0 or self.mode == "input") else None
            states.append(self._forward(j, extra))
        return states

    @torch.no_grad()
    def epoch(self, states, train=True):
        """One simultaneous epoch (``train=False``: the same state updates without learning).
        Returns ``(loss, states)``."""
        p, total = self.problem, 0.0
        if self.mode == "input":
            for parity in (0, 1):
                for j in range(parity, self.num_layers, 2):
                    extra = self._inputs(j, states)
                    h = self._forward(j, extra)
                    if train:
                        loss, grad_rows, _ = self._sf_grad(h.index_select(0, p.step_rows))
                        self._update(j, extra, h, grad_rows)
                        total += float(loss)
                    states[j + 1] = h
            return total, states
        extras, hs = [], []
        for j in range(self.num_layers):
            extra = None if j == 0 else self.layers[j].prepare(hs[-1], p.vg.graph)
            extras.append(extra)
            hs.append(self._forward(j, extra))
        if train:
            normed = [normalize_rows(h.index_select(0, p.step_rows)) for h in hs]
            for j in range(self.num_layers):
                terms = self.num_layers - j
                h_step = hs[j].index_select(0, p.step_rows)
                m = h_step.clone()
                for k in range(j + 1, self.num_layers):
                    m += normed[k]
                m /= terms
                loss, grad_rows, _ = self._sf_grad(m)
                self._update(j, extras[j], hs[j], grad_rows / terms)
                total += float(loss)
        return total, [None] + hs

    def _probs(self, states, idx=None):
        out = 0.0
        for h in states[1:]:
            logits = ops.sf_logits(h, self.problem.virtual_idx, self.tau, idx)
            out = out + torch.softmax(logits, dim=1)
        return out

    @torch.no_grad()
    def predict(self) -> torch.Tensor:
        """Class scores ``[N, C]`` by the variant's inference procedure."""
        real = torch.arange(self.problem.num_real, device=self.problem.vg.x.device)
        states = self.bottom_up()
        if self.mode == "loss":
            _, states = self.epoch(states, train=False)
            return self._probs(states, real)
        total = 0.0
        for t in range(INFERENCE_STEPS):
            _, states = self.epoch(states, train=False)
            if t >= INFERENCE_FIRST_SUMMED:
                total = total + self._probs(states, real)
        return total



class TopDownTrainer(Trainer):
    """One stage (all layers): every epoch is one simultaneous update of every layer."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.net = model.network(data)
        self.states = self.net.bottom_up()

    def stage_module(self, stage):
        return self.model.layers

    def train_epoch(self, stage, epoch):
        loss, self.states = self.net.epoch(self.states)
        return loss

    def validate(self, stage):
        p = self.net.problem
        return accuracy(self.net._probs(self.states, p.val_idx), p.y[p.val_idx])

    def state_dict(self):
        return {"states": [None if s is None else s.cpu() for s in self.states]}

    def load_state_dict(self, state):
        device = self.net.problem.vg.x.device
        self.states = [None if s is None else s.to(device) for s in state["states"]]


register("sf-top-input", task="node", models=("gcn",), schedule="simultaneous", model=TopDownModel,
         edge_weights=True, defaults=SF_DEFAULTS, variant={"mode": "input"}, options=(TAU,),
         description="SF with top-to-input signals, simultaneous, alternating even/odd updates (ForwardGNN)"
         )(TopDownTrainer)
register("sf-top-loss", task="node", models=("gcn", "sage"), schedule="simultaneous", model=TopDownModel,
         edge_weights=True, defaults=SF_DEFAULTS, variant={"mode": "loss"},
         options=(TAU, positive_float("clip", 1.0, "gradient-norm clip of every layer's update (the reference's)")),
         description="SF with top-to-loss signals, simultaneous, gradient-norm clip 1.0 (ForwardGNN)")(TopDownTrainer)

__all__ = ["TopDownModel", "TopDownNetwork", "TopDownTrainer", "INFERENCE_STEPS"]
