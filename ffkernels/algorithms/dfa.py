"""Direct feedback alignment: ``dfa`` (MLP) and ``dfa-graph`` (GCN / SAGE), docs/algorithms.md#dfa,
simultaneous schedule.

Nøkland 2016, "Direct Feedback Alignment Provides Learning in Deep Neural Networks"; Launay et
al. 2020, "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and Architectures".
One forward pass per step and no backward pass: the output error
``E = (softmax(logits) - onehot(y)) / n`` is projected straight to every hidden layer by a
fixed random feedback matrix, all hidden layers at once by **one** GEMM against the
concatenation ``B = [B_1 | ... | B_{L-1}]`` (``C x sum D_l``, a buffer):

    delta_l = (E B_l) * 1[z_l > 0]        dW_l = delta_l^T M_l        db_l = sum_rows delta_l
    output:   dW_L = E^T M_L              db_L = sum_rows E           (its true gradient)

``M_l`` is the layer's input (the MLP) or its prepared, aggregated input ``prepare(h_{l-1})``
(graph layers, computed once per epoch from the current forward pass). ``feedback="sign"`` is
sign-concordant feedback (Liao, Leibo & Poggio 2016's random-magnitude sign-concordant
feedback, carried to DFA's direct paths): ``B_l = |R_l| * sign(W_L ... W_{l+1})``, the fixed
random magnitudes ``|R_l|`` with the signs of the forward weights' linear path from layer
``l`` to the output (recomputed from the current weights at every step).

The updates are given to each layer's own Adam (:func:`ffkernels.nn.optim.optimizer_factory`)
as gradients; nothing here builds an autograd graph.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from ..nn import FFSAGEConv, LocalLayer
from ..nn.optim import optimizer_factory
from ..train.metrics import accuracy
from ..train.options import choice, positive_float
from ..train.registry import Model, Trainer, register
from .common import build_layer
from .mlp_common import (BATCH_SIZE, MLP_PATIENCE, VAL_FRACTION, MiniBatchClassifier, MLPTrainer,
                         NetClassifierModel, make_generator)
from .mlp_ff import softmax_cross_entropy_grad

FEEDBACK_KINDS = ("random", "sign")
#: The feedback matrices of ``dfa-graph`` come from their own generator (seed + this), so
#: they do not shift the layers' initialisation (drawn from the engine's seeded stream).
GRAPH_FEEDBACK_SEED_OFFSET = 104729

FEEDBACK = choice("feedback", "random", FEEDBACK_KINDS,
                  "hidden layers' feedback: fixed random R_l (random) or sign-concordant abs(R_l) * "
                  "sign(W_L ... W_{l+1}) (sign)")
FEEDBACK_SCALE = positive_float("feedback_scale", 1.0, "scale of the fixed feedback matrices: entries "
                                "N(0, 1) * feedback_scale / sqrt(C)")


# ---------------------------------------------------------------------------- the DFA rule
def random_feedback(num_classes: int, total_width: int, scale: float, generator: torch.Generator) -> torch.Tensor:
    """The fixed feedback ``B = [B_1 | ... | B_{L-1}]`` ``[C, sum D_l]``: ``N(0, 1) * scale / sqrt(C)``
    (so ``E B_l`` has about the size of ``E``'s row norm times ``scale``)."""
    return torch.randn(num_classes, total_width, generator=generator) * (scale / math.sqrt(num_classes))


@torch.no_grad()
def sign_concordant(magnitude: torch.Tensor, maps: list) -> torch.Tensor:
    """``[|R_1| * sign(P_1) | ... | |R_{L-1}| * sign(P_{L-1})]`` with ``P_{L-1} = M_L`` and
    ``P_l = P_{l+1} M_{l+1}``: the signs of the linear path from hidden layer ``l`` to the output.

    Args:
        magnitude: ``[C, sum D_l]`` the random feedback (its absolute values are used).
        maps: ``[M_2, ..., M_L]``, ``M_{l+1}`` ``[D_{l+1}, D_l]`` the linear map from ``h_l``
            into ``z_{l+1}`` (``D_L = C``).
    """
    if not maps:
        return magnitude.abs()
    paths = [None] * len(maps)
    p = maps[-1]
    paths[-1] = p
    for i in range(len(maps) - 2, -1, -1):
        # rescaled (signs unchanged) so a deep product neither overflows nor underflows
        p = p / p.abs().amax().clamp_min(torch.finfo(p.dtype).tiny)
        p = p @ maps[i]
        paths[i] = p
    return magnitude.abs() * torch.sign(torch.cat(paths, dim=1)).to(magnitude.dtype)


def feedback_signals(error: torch.Tensor, feedback: torch.Tensor, widths) -> list:
    """``E B_l`` for every hidden layer, from ONE GEMM ``E B`` split into the per-layer blocks."""
    if not widths:
        return []
    return list(torch.split(error @ feedback.to(error.dtype), list(widths), dim=1))


@torch.no_grad()
def dfa_updates(inputs: list, hidden: list, error: torch.Tensor, feedback: torch.Tensor) -> list:
    """The DFA updates ``[(dW_l, db_l)]`` of every layer, the output layer last.

    Args:
        inputs: ``[M_1, ..., M_L]`` every layer's (prepared) input, ``[n, Din_l]``.
        hidden: ``[h_1, ..., h_{L-1}]`` the hidden layers' post-ReLU outputs (the mask
            ``1[z_l > 0] = 1[h_l > 0]``), ``[n, D_l]``.
        error: ``E`` ``[n, C]`` (already divided by the number of rows the loss averages).
        feedback: ``B`` ``[C, sum D_l]``.
    """
    signals = feedback_signals(error, feedback, [h.shape[1] for h in hidden])
    out = []
    for m, h, s in zip(inputs, hidden, signals):
        delta = s * (h > 0)
        out.append((_grad_weight(delta, m), delta.sum(0)))
    out.append((_grad_weight(error, inputs[-1]), error.sum(0)))
    return out


def _grad_weight(delta: torch.Tensor, m) -> torch.Tensor:
    """``delta^T M`` for a dense ``M`` or a :class:`ConstantInput`'s row block."""
    return m.grad_weight(delta) if isinstance(m, ConstantRows) else delta.t() @ m


#: Below this fraction of non-zeros the first layer's constant input is kept in CSR form.
SPARSE_DENSITY = 0.3


def _csr(m: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return m.to_sparse_csr()


class ConstantRows:
    """Rows of a sparse constant input ``M_R`` for the weight update, stored as the CSR of
    ``M_R^T``: ``delta^T M_R = (M_R^T delta)^T``."""

    def __init__(self, rows: torch.Tensor):
        self.t_csr = _csr(rows.t())

    def grad_weight(self, delta: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return (self.t_csr @ delta).t().contiguous()


class ConstantInput:
    """The first graph layer's prepared input ``Agg(n(X))`` (a constant of the data) in its
    cheapest exact form: dense, or CSR when fewer than :data:`SPARSE_DENSITY` of its entries
    are non-zero (bag-of-words features: 8% on Cora-ML, where the forward GEMM then takes a
    quarter of the dense one's time and the update GEMM 40%).

    Args:
        m: ``[N, F]`` the prepared input. rows: optional ``[R]`` row ids whose block the
            weight update needs (:attr:`rows`: dense rows, or a :class:`ConstantRows`).
        sparse: force the form (None: by density).
    """

    def __init__(self, m: torch.Tensor, rows: torch.Tensor | None = None, sparse: bool | None = None):
        if sparse is None:
            sparse = float(torch.count_nonzero(m)) < SPARSE_DENSITY * m.numel()
        self.sparse = bool(sparse)
        self.dense = None if self.sparse else m
        self.csr = _csr(m) if self.sparse else None
        self.rows = None
        if rows is not None:
            block = m.index_select(0, rows)
            self.rows = ConstantRows(block) if self.sparse else block

    def matmul_wt(self, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``M W^T + b``."""
        if not self.sparse:
            return torch.addmm(bias, self.dense, weight.t())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return (self.csr @ weight.t().contiguous()).add_(bias)


def _layer_map(layer) -> torch.Tensor:
    """The per-node linear map of a layer's weight for the sign path: ``W`` (GCN: the positive
    aggregation coefficients do not change signs), ``W_self + W_neigh`` for SAGE (the map of a
    signal constant over the graph)."""
    w = layer.weight
    if isinstance(layer, FFSAGEConv):
        f = layer.in_features
        return w[:, :f] + w[:, f:]
    return w


# ---------------------------------------------------------------------------- dfa (MLP)
class DFAMLP(MiniBatchClassifier, LocalLayer):
    """A ReLU MLP trained by direct feedback alignment.

    Args:
        in_features: input width ``Din``. num_classes: ``C``.
        hidden: width of every hidden layer (int) or a list of widths (then ``layers`` is ignored).
        layers: number of weight layers, the output layer included (``layers - 1`` hidden layers).
        lr, weight_decay: the Adam optimiser of the whole network (one ``LocalLayer``).
        feedback: ``random`` or ``sign`` (see the module). feedback_scale: ``B``'s scale.
        seed: seeds the weights (``torch.nn.Linear``'s uniform initialisation), ``B`` and then
            (the same stream) :attr:`generator`, the shuffles (the trainer checkpoints its state).
    """

    def __init__(self, in_features: int, num_classes: int, hidden=128, layers: int = 4, *, lr: float = 1e-3,
                 weight_decay: float = 0.0, feedback: str = "random", feedback_scale: float = 1.0, seed: int = 0):
        super().__init__(optimizer_factory("adam", lr, weight_decay))
        if feedback not in FEEDBACK_KINDS:
            raise ValueError(f"feedback must be one of {list(FEEDBACK_KINDS)}, got {feedback!r}")
        if isinstance(hidden, int):
            if layers < 1:
                raise ValueError(f"layers must be >= 1, got {layers}")
            widths = [int(hidden)] * (int(layers) - 1)
        else:
            widths = [int(w) for w in hidden]
        self.in_features, self.num_classes, self.feedback_kind, self.widths = in_features, num_classes, feedback, widths
        dims = [in_features] + widths + [num_classes]
        gen = make_generator(seed)
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for din, dout in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(din)  # torch.nn.Linear's initialisation
            self.weights.append(nn.Parameter((torch.rand(dout, din, generator=gen) * 2 - 1) * bound))
            self.biases.append(nn.Parameter((torch.rand(dout, generator=gen) * 2 - 1) * bound))
        self.register_buffer("feedback", random_feedback(num_classes, sum(widths), feedback_scale, gen))
        self.generator = gen

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @torch.no_grad()
    def feedback_matrix(self) -> torch.Tensor:
        """The ``B = [B_1 | ... | B_{L-1}]`` of the next step (``sign``: from the current weights)."""
        if self.feedback_kind == "sign":
            return sign_concordant(self.feedback, list(self.weights[1:]))
        return self.feedback

    def feedback_matrices(self) -> list:
        """``[B_1, ..., B_{L-1}]``, each ``[C, D_l]``."""
        return list(torch.split(self.feedback_matrix(), self.widths, dim=1)) if self.widths else []

    @torch.no_grad()
    def activities(self, x: torch.Tensor) -> list:
        """``[h_0 = x, h_1, ..., h_L]``: ReLU hidden layers, linear output (logits)."""
        out = [x]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            z = torch.addmm(b, out[-1], w.t())
            out.append(z if i == last else torch.relu_(z))
        return out

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]``."""
        return self.activities(x.to(self.device))[-1]

    @torch.no_grad()
    def gradients(self, x: torch.Tensor, y: torch.Tensor):
        """``(mean cross-entropy, {param name: DFA update})`` on a batch."""
        acts = self.activities(x)
        loss, e = softmax_cross_entropy_grad(acts[-1], y)  # (softmax - onehot) / B
        updates = dfa_updates(acts[:-1], acts[1:-1], e, self.feedback_matrix())
        grads = {}
        for i, (gw, gb) in enumerate(updates):
            grads[f"weights.{i}"], grads[f"biases.{i}"] = gw, gb
        return loss, grads


class DFAModel(NetClassifierModel, Model):
    """A :class:`DFAMLP` built from the run's options (``layers`` weight layers, the output
    layer included)."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        o = self.options
        self.net = DFAMLP(dims["num_features"], dims["num_classes"], hidden=o["hidden"], layers=o["layers"],
                          lr=o["lr"], weight_decay=o["weight_decay"], feedback=o["feedback"],
                          feedback_scale=o["feedback_scale"], seed=o["seed"])

    @property
    def layers(self):
        return self.net.weights

    @torch.no_grad()
    def embed(self, data) -> list:
        """Every weight layer's output ``h_1 .. h_L`` (the last: the logits)."""
        return self.net.activities(data.x.to(self.net.device))[1:]


class DFATrainer(MLPTrainer):
    """One stage; an epoch is one pass of seeded mini-batches, one DFA step per batch."""

    def validate(self, stage):
        return self.net.evaluate(self.x_val, self.y_val)


register("dfa", task="mlp", models=("mlp",), schedule="simultaneous", model=DFAModel,
         defaults={"lr": 1e-3, "weight_decay": 0.0, "patience": MLP_PATIENCE},
         options=(BATCH_SIZE, FEEDBACK, FEEDBACK_SCALE, VAL_FRACTION),
         description="direct feedback alignment: the output error through fixed random matrices to every "
                     "hidden layer")(DFATrainer)


# ---------------------------------------------------------------------------- dfa-graph
GRAPH_MODELS = ("gcn", "sage")


class DFAGraphModel(Model):
    """``layers`` graph layers (GCN or SAGE-mean), the last one the output layer (width ``C``,
    no ReLU): ``layers - 1`` hidden layers of width ``hidden``. Each layer is a
    :class:`~ffkernels.nn.FFGCNConv` / :class:`~ffkernels.nn.FFSAGEConv` (``prepare``: row
    normalisation ``normalize``, then aggregation) with its own Adam; ``feedback`` is the fixed
    ``[C, sum D_l]`` matrix (a buffer)."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        o = self.options
        widths = [dims["num_features"]] + [o["hidden"]] * (o["layers"] - 1) + [dims["num_classes"]]
        normalize = None if o["normalize"] == "none" else o["normalize"]
        self.layers = nn.ModuleList(build_layer(o["model"], widths[i], widths[i + 1], lr=o["lr"],
                                                weight_decay=o["weight_decay"], normalize=normalize)
                                    for i in range(o["layers"]))
        self.widths = widths[1:-1]
        gen = make_generator(o["seed"] + GRAPH_FEEDBACK_SEED_OFFSET)
        self.register_buffer("feedback", random_feedback(dims["num_classes"], sum(self.widths),
                                                         o["feedback_scale"], gen))

    @torch.no_grad()
    def feedback_matrix(self) -> torch.Tensor:
        if self.options["feedback"] == "sign":
            return sign_concordant(self.feedback, [_layer_map(layer) for layer in self.layers[1:]])
        return self.feedback

    def feedback_matrices(self) -> list:
        return list(torch.split(self.feedback_matrix(), self.widths, dim=1)) if self.widths else []

    @torch.no_grad()
    def first_input(self, data, rows: torch.Tensor | None = None, sparse: bool | None = None) -> ConstantInput:
        """The first layer's prepared input (a constant of the data), with the block of ``rows``
        the update needs."""
        return ConstantInput(self.layers[0].prepare(data.x, data.graph), rows, sparse)

    @torch.no_grad()
    def forward_pass(self, first_input: ConstantInput, graph):
        """``(inputs, hidden, logits)``: the prepared inputs of layers 2..L ``[M_2 .. M_L]``
        (layer 1's is ``first_input``), the hidden outputs ``[h_1 .. h_{L-1}]`` and the output
        layer's logits ``[N, C]``."""
        inputs, hidden = [], []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == 0:
                z = first_input.matmul_wt(layer.weight, layer.bias)
            else:
                inputs.append(layer.prepare(hidden[-1], graph))
                z = torch.addmm(layer.bias, inputs[-1], layer.weight.t())
            if i == last:
                return inputs, hidden, z
            hidden.append(z.relu_())

    @torch.no_grad()
    def logits(self, data) -> torch.Tensor:
        return self.forward_pass(self.first_input(data), data.graph)[2]

    @torch.no_grad()
    def predict(self, data) -> torch.Tensor:
        return self.logits(data).argmax(dim=1)

    @torch.no_grad()
    def embed(self, data) -> list:
        """Every layer's output ``h_1 .. h_L`` (the last: the logits)."""
        _, hidden, logits = self.forward_pass(self.first_input(data), data.graph)
        return hidden + [logits]

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        out = self.logits(data)
        return {name: accuracy(out, data.y, idx) for name, idx in
                (("val_accuracy", data.val_idx), ("test_accuracy", data.test_idx), ("train_accuracy", data.train_idx))}


@register("dfa-graph", task="node", models=GRAPH_MODELS, schedule="simultaneous", model=DFAGraphModel,
          defaults={"lr": 1e-2, "weight_decay": 5e-4},
          options=(FEEDBACK, FEEDBACK_SCALE,
                   choice("normalize", "l2", ("l2", "rms", "none"), "row normalisation of every layer's input "
                          "before its aggregation")),
          description="graph direct feedback alignment: the training nodes' output error through fixed random "
                      "matrices to every GCN/SAGE layer")
class DFAGraphTrainer(Trainer):
    """One stage; every epoch is one full-batch forward pass and one DFA step of every layer
    (each through its own Adam). The output error lives on the training nodes only, so the
    updates are computed on those rows (the other rows' signal is zero)."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.graph = data.graph
        self.train_idx = data.train_idx
        self.y_train = data.y[data.train_idx]
        self.first = model.first_input(data, self.train_idx)
        # validate's forward pass (of the parameters after the last step) feeds the next step:
        # between the two the engine changes no parameter; a step or a restore drops it
        self._cache = None

    def _forward(self):
        if self._cache is None:
            self._cache = self.model.forward_pass(self.first, self.graph)
        return self._cache

    def load_state_dict(self, state):
        self._cache = None

    def end_stage(self, stage):
        self._cache = None  # the best state was restored: the cached pass is stale (and large)

    def stage_module(self, stage):
        return self.model

    @torch.no_grad()
    def gradients(self):
        """``(training cross-entropy, [(dW_l, db_l)] per layer)`` of the current parameters."""
        inputs, hidden, logits = self._forward()
        rows = self.train_idx
        loss, e = softmax_cross_entropy_grad(logits.index_select(0, rows), self.y_train)
        inputs = [self.first.rows] + [m.index_select(0, rows) for m in inputs]
        hidden = [h.index_select(0, rows) for h in hidden]
        return loss, dfa_updates(inputs, hidden, e, self.model.feedback_matrix())

    @torch.no_grad()
    def train_epoch(self, stage, epoch):
        loss, updates = self.gradients()
        self._cache = None
        for layer, (gw, gb) in zip(self.model.layers, updates):
            layer.apply_gradients({"weight": gw, "bias": gb})
        return float(loss)

    @torch.no_grad()
    def validate(self, stage):
        logits = self._forward()[2]
        return accuracy(logits, self.data.y, self.data.val_idx)


__all__ = ["DFAMLP", "DFAModel", "DFATrainer", "DFAGraphModel", "DFAGraphTrainer", "random_feedback",
           "sign_concordant", "feedback_signals", "dfa_updates", "FEEDBACK_KINDS"]
