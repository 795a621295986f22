"""Forward learning for link prediction: ``fl-ce``, ``fl-ff`` (greedy layer-wise) and ``fl-top``
(simultaneous, top-to-input signals); docs/algorithms.md#link-prediction, #fl-ce, #fl-ff, #fl-top.

- A seeded split of the undirected edges (:func:`split_edges`, 85/5/10 by default), computed on
  the CPU and moved to the data's device; message passing in training runs on the training
  edges only; the validation and test positives come with as many non-edges; training
  negatives are redrawn every epoch from the trainer's own ``torch.Generator`` (checkpointed).
- Pair embedding ``e_uv = h_u * h_v``; logit ``sum_d e`` (CE) or ``sum_d e^2 - theta`` (FF);
  mean BCE-with-logits over the scored pairs, closed-form gradient :func:`pair_loss_grad`.
- Pair score: mean over the layers (or ``fl-top``'s states) of ``sigmoid(s_l)``; ROC-AUC.

What the trained model computes on a dataset:

- ``evaluate(data)``: recomputes the seeded edge split of ``data`` with the run's options
  (deterministic), message passing on its training edges, ``{"val_auc", "test_auc"}`` of the
  validation / test pairs (equal to the run's metrics on the training data);
- ``predict(data, pairs)``: message passing on ALL of ``data``'s edges, scores ``[M]``
  (float64, in ``(0, 1)``) of ``pairs`` ``[2, M]``;
- ``embed(data)``: per-layer node embeddings ``[N, hidden]`` on all of ``data``'s edges
  (``fl-top``: the states after its inference passes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..graph import Graph
from ..nn.functional import normalize_rows
from ..train.metrics import roc_auc
from ..train.options import Option, choice, nonnegative_float
from ..train.registry import Model, Trainer, register
from .common import build_layer

PAIR_LOSSES = ("ce", "ff")
LINK_MODELS = ("gcn", "sage")
#: FL-FF's theta: ``sum_d (h_u h_v)^2`` starts near 0.01 on l2-normalised inputs, so a
#: reference-like theta = 2 leaves the gradient (proportional to ``e``) tiny (docs/algorithms.md#fl-ff).
FF_THETA = 0.5
#: Offset of the negative-sampling generator's seed from the run's seed (the old runner's).
NEGATIVE_SEED_OFFSET = 101


# ---------------------------------------------------------------------------- split, negatives, loss
@dataclass
class EdgeSplit:
    """Undirected edge split. ``*_pairs`` are ``[2, M]`` int64 (u, v); labels are bool ``[M]``."""
    train_graph: Graph
    train_edges: torch.Tensor       # [2, E_train] one direction per undirected edge
    val_pairs: torch.Tensor
    val_labels: torch.Tensor
    test_pairs: torch.Tensor
    test_labels: torch.Tensor
    num_nodes: int
    edge_keys: torch.Tensor         # sorted u * N + v keys of every edge (both directions), for rejection

    def to(self, device) -> "EdgeSplit":
        """The split on ``device`` (``edge_keys`` stay on the CPU, where negatives are drawn)."""
        device = torch.device(device)
        return EdgeSplit(self.train_graph.to(device), self.train_edges.to(device), self.val_pairs.to(device),
                         self.val_labels.to(device), self.test_pairs.to(device), self.test_labels.to(device),
                         self.num_nodes, self.edge_keys)


def _edge_keys(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.sort(edge_index[0] * n + edge_index[1])[0]


def sample_non_edges(num: int, num_nodes: int, edge_keys: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``[2, num]`` uniform random pairs ``u != v`` that are not edges (rejection sampling, CPU).

    Raises ``ValueError`` when the graph has no non-edge to draw.
    """
    if num > 0 and num_nodes * (num_nodes - 1) - int(torch.unique(edge_keys).numel()) <= 0:
        raise ValueError(f"cannot draw negative pairs: the {num_nodes}-node graph has no non-edge")
    out, have = [], 0
    while have < num:
        m = int((num - have) * 1.3) + 16
        u = torch.randint(0, num_nodes, (m,), generator=generator)
        v = torch.randint(0, num_nodes, (m,), generator=generator)
        keys = u * num_nodes + v
        pos = torch.searchsorted(edge_keys, keys).clamp_max(max(edge_keys.numel() - 1, 0))
        is_edge = edge_keys[pos] == keys if edge_keys.numel() else torch.zeros_like(keys, dtype=torch.bool)
        keep = (u != v) & ~is_edge
        pairs = torch.stack([u[keep], v[keep]])
        out.append(pairs)
        have += pairs.shape[1]
    if not out:
        return torch.empty(2, 0, dtype=torch.int64)
    return torch.cat(out, 1)[:, :num]


def split_edges(edge_index: torch.Tensor, num_nodes: int, val_fraction: float = 0.05, test_fraction: float = 0.10,
                seed: int = 0) -> EdgeSplit:
    """Seeded split of the undirected edges of ``edge_index`` (self loops dropped, duplicates merged),
    computed on the CPU (the result is on the CPU: :meth:`EdgeSplit.to` moves it).

    Validation/test positives get as many negative pairs drawn from non-edges of the whole graph.

    Raises:
        ValueError: the fractions leave the training, validation or test positives empty.
    """
    ei = edge_index.to(torch.int64).cpu()
    u, v = torch.minimum(ei[0], ei[1]), torch.maximum(ei[0], ei[1])
    keep = u != v
    und = torch.unique(torch.stack([u[keep], v[keep]]), dim=1)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(und.shape[1], generator=gen)
    n_val = int(round(val_fraction * und.shape[1]))
    n_test = int(round(test_fraction * und.shape[1]))
    if n_val < 1 or n_test < 1 or n_val + n_test >= und.shape[1]:
        raise ValueError(f"the edge split val_fraction={val_fraction}, test_fraction={test_fraction} of "
                         f"{und.shape[1]} undirected edges gives {n_val} validation, {n_test} test and "
                         f"{und.shape[1] - n_val - n_test} training edges; each needs at least one")
    val_pos, test_pos = und[:, perm[:n_val]], und[:, perm[n_val:n_val + n_test]]
    train = und[:, perm[n_val + n_test:]]
    keys = _edge_keys(torch.cat([und, und.flip(0)], 1), num_nodes)
    neg = sample_non_edges(n_val + n_test, num_nodes, keys, gen)
    val_pairs = torch.cat([val_pos, neg[:, :n_val]], 1)
    test_pairs = torch.cat([test_pos, neg[:, n_val:]], 1)
    lab = lambda p: torch.cat([torch.ones(p, dtype=torch.bool), torch.zeros(p, dtype=torch.bool)])  # noqa: E731
    graph = Graph.from_edge_index(torch.cat([train, train.flip(0)], 1), num_nodes)
    return EdgeSplit(graph, train, val_pairs, lab(n_val), test_pairs, lab(n_test), num_nodes, keys)


def pair_logits(h: torch.Tensor, pairs: torch.Tensor, loss: str, theta: float | None = None) -> torch.Tensor:
    """``[M]`` pair logits: ``sum_d h_u h_v`` (ce) or ``sum_d (h_u h_v)^2 - theta`` (ff)."""
    e = h[pairs[0]] * h[pairs[1]]
    return e.sum(1) if loss == "ce" else e.pow(2).sum(1) - theta


def pair_loss_grad(h: torch.Tensor, pairs: torch.Tensor, labels: torch.Tensor, loss: str = "ce",
                   theta: float | None = None):
    """FL-CE / FL-FF loss over scored pairs and its closed-form gradient with respect to ``h``.

    Args:
        h: ``[N, D]`` layer outputs. pairs: ``[2, M]`` (u, v). labels: ``[M]`` bool (True = edge).
        loss: ``ce`` or ``ff``; theta: the FF logit's threshold (unused by ``ce``).
    Returns:
        ``(loss, grad_h)``: mean BCE-with-logits over the M pairs and ``[N, D]`` ``dloss/dh``.
    """
    if loss not in PAIR_LOSSES:
        raise ValueError(f"loss must be one of {list(PAIR_LOSSES)}, got {loss!r}")
    if loss == "ff" and theta is None:
        raise ValueError("the ff pair loss needs theta")
    hu, hv = h[pairs[0]], h[pairs[1]]
    e = hu * hv
    s = e.sum(1) if loss == "ce" else e.pow(2).sum(1) - theta
    t = labels.to(h.dtype)
    total = F.binary_cross_entropy_with_logits(s, t)
    g = (torch.sigmoid(s) - t) / max(s.numel(), 1)                       # dL/ds
    de = g.unsqueeze(1) if loss == "ce" else 2.0 * g.unsqueeze(1) * e    # dL/de
    grad = torch.zeros_like(h)
    grad.index_add_(0, pairs[0], de * hv)
    grad.index_add_(0, pairs[1], de * hu)
    return total, grad


def mean_pair_scores(hs, pairs: torch.Tensor, loss: str, theta: float | None) -> torch.Tensor:
    """``[M]`` float64: the mean over the outputs ``hs`` of ``sigmoid(pair_logits)``."""
    return _mean_scores(hs, (pairs,), loss, theta)[0]


def _mean_scores(hs, pair_sets, loss: str, theta: float | None) -> list:
    """:func:`mean_pair_scores` of several pair sets in one pass over ``hs`` (an iterable: a
    generator of layer outputs keeps one of them alive at a time)."""
    totals, count = [None] * len(pair_sets), 0
    for h in hs:
        count += 1
        for i, pairs in enumerate(pair_sets):
            s = torch.sigmoid(pair_logits(h, pairs, loss, theta)).to(torch.float64)
            totals[i] = s if totals[i] is None else totals[i].add_(s)
    return [t / count for t in totals]


# ---------------------------------------------------------------------------- options
VAL_FRACTION = Option("val_fraction", float, 0.05, "fraction of the undirected edges held out for validation",
                      minimum=0.0, minimum_exclusive=True, maximum=1.0)
TEST_FRACTION = Option("test_fraction", float, 0.10, "fraction of the undirected edges held out for test",
                       minimum=0.0, minimum_exclusive=True, maximum=1.0)
SPLIT_SEED = Option("split_seed", int, None, "seed of the edge split; unset: the run's seed", minimum=0,
                    nullable=True)
SPLIT_OPTIONS = (VAL_FRACTION, TEST_FRACTION, SPLIT_SEED)
#: Adam with weight decay 5e-4 per layer (ForwardGNN's); lr 1e-2 (the reference's 1e-3 stops at 0.70 AUC).
LINK_DEFAULTS = {"lr": 1e-2, "weight_decay": 5e-4}


def link_split(options: dict, data) -> EdgeSplit:
    """The run's seeded edge split of ``data`` (on ``data``'s device); deterministic."""
    if getattr(data, "edge_index", None) is None:
        raise ValueError(f"link prediction needs the dataset's edge_index; {getattr(data, 'name', 'data')!r} "
                         f"has none")
    seed = options["seed"] if options.get("split_seed") is None else options["split_seed"]
    split = split_edges(data.edge_index, data.num_nodes, options["val_fraction"], options["test_fraction"], seed)
    return split.to(data.x.device)


def check_pairs(pairs, num_nodes: int, device) -> torch.Tensor:
    """``pairs`` as a ``[2, M]`` int64 tensor on ``device``, or a ``ValueError``/``TypeError`` saying why."""
    if pairs is None:
        raise ValueError("link models predict scores of node pairs: pass pairs=[2, M] (int node ids)")
    if not isinstance(pairs, torch.Tensor):
        try:
            pairs = torch.as_tensor(pairs)
        except Exception as exc:
            raise TypeError(f"pairs must be a [2, M] integer tensor, got {type(pairs).__name__}") from exc
    if pairs.dtype == torch.bool or pairs.is_floating_point() or pairs.is_complex():
        raise TypeError(f"pairs must be an integer tensor, got dtype {pairs.dtype}")
    if pairs.dim() != 2 or pairs.shape[0] != 2:
        raise ValueError(f"pairs must have shape [2, M], got {tuple(pairs.shape)}")
    if pairs.numel() and (int(pairs.min()) < 0 or int(pairs.max()) >= num_nodes):
        raise ValueError(f"pairs must be node ids in [0, {num_nodes}), got values in "
                         f"[{int(pairs.min())}, {int(pairs.max())}]")
    return pairs.to(device=device, dtype=torch.int64)


def _full_graph(data) -> Graph:
    if data.graph is None:
        raise ValueError(f"link prediction needs a graph; dataset {getattr(data, 'name', 'data')!r} has none")
    return data.graph


class _Negatives:
    """The training pairs of every epoch: the training edges and as many fresh non-edges, drawn
    on the CPU from a generator seeded with ``seed + 101`` and moved to the data's device."""

    def __init__(self, split: EdgeSplit, seed: int):
        self.split = split
        self.generator = torch.Generator().manual_seed(int(seed) + NEGATIVE_SEED_OFFSET)
        n_pos = split.train_edges.shape[1]
        device = split.train_edges.device
        self.labels = torch.cat([torch.ones(n_pos, dtype=torch.bool, device=device),
                                 torch.zeros(n_pos, dtype=torch.bool, device=device)])

    def draw(self) -> torch.Tensor:
        pos = self.split.train_edges
        neg = sample_non_edges(pos.shape[1], self.split.num_nodes, self.split.edge_keys, self.generator)
        return torch.cat([pos, neg.to(pos.device)], 1)

    def objective(self, loss: str, theta: float | None):
        """``h -> (loss, grad_h)`` over the training edges and as many fresh non-edges (drawn now)."""
        pairs, labels = self.draw(), self.labels
        return lambda h: pair_loss_grad(h, pairs, labels, loss, theta)


# ---------------------------------------------------------------------------- models
class LinkModel(Model):
    """Common part of the link models: the pair loss, its theta and the split options."""
    metric = "auc"

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        self.loss = self.variant.get("loss") or options["pair_loss"]
        if self.loss == "ce":
            if options.get("theta") is not None:
                raise ValueError("theta applies only to the ff pair loss (pair_loss='ff'); the ce logit "
                                 "sum_d h_u h_v has no threshold")
            self.theta = None
        else:
            self.theta = FF_THETA if options.get("theta") is None else float(options["theta"])
        if options["val_fraction"] + options["test_fraction"] >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1 (the rest are the training edges), got "
                             f"{options['val_fraction']} + {options['test_fraction']}")

    def _pair_metrics(self, split: EdgeSplit, hs) -> dict:
        val, test = _mean_scores(hs, (split.val_pairs, split.test_pairs), self.loss, self.theta)
        return {"val_auc": roc_auc(val, split.val_labels), "test_auc": roc_auc(test, split.test_labels)}

    @torch.no_grad()
    def predict(self, data, pairs=None) -> torch.Tensor:
        """Scores ``[M]`` (float64) of ``pairs`` ``[2, M]``, message passing on all of ``data``'s edges."""
        pairs = check_pairs(pairs, data.num_nodes, data.x.device)
        return mean_pair_scores(self.embed(data), pairs, self.loss, self.theta)


class GreedyLinkModel(LinkModel):
    """``fl-ce`` / ``fl-ff``: a stack of graph layers ``in -> hidden -> ... -> hidden``."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        widths = [dims["num_features"]] + [options["hidden"]] * options["layers"]
        self.layers = torch.nn.ModuleList(
            build_layer(options["model"], widths[i], widths[i + 1], lr=options["lr"],
                        weight_decay=options["weight_decay"]) for i in range(options["layers"]))

    def outputs(self, x: torch.Tensor, graph: Graph):
        """Yield every layer's output on ``graph`` (as training computes them: prepare, then transform)."""
        h = x
        for layer in self.layers:
            h = layer.transform(layer.prepare(h, graph))
            yield h

    @torch.no_grad()
    def embed(self, data) -> list:
        return list(self.outputs(data.x, _full_graph(data)))

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        split = link_split(self.options, data)
        return self._pair_metrics(split, self.outputs(data.x, split.train_graph))


class TopDownLinkModel(LinkModel):
    """``fl-top``: layer ``j`` reads ``[n(s_j) || n(s_{j+2})]`` (the top layer ``n(s_{L-1})`` alone)
    and writes ``s_{j+1}``; ``inference_passes`` (a buffer) is the number of refinement passes
    after the bottom-up pass, chosen by validation at the end of training."""

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        num_layers = options["layers"]
        if num_layers < 2:
            raise ValueError(f"fl-top needs layers >= 2 (a layer above sends the top-down signal), got "
                             f"layers={num_layers}")
        super().__init__(options, dims, variant)
        f, hid = dims["num_features"], options["hidden"]
        self.layers = torch.nn.ModuleList(
            build_layer(options["model"], (f if j == 0 else hid) + (hid if j + 2 <= num_layers else 0), hid,
                        lr=options["lr"], weight_decay=options["weight_decay"], normalize=None)
            for j in range(num_layers))
        self.register_buffer("inference_passes", torch.tensor(0, dtype=torch.int64))

    def network(self, x: torch.Tensor, graph: Graph) -> "TopDownLinkNetwork":
        return TopDownLinkNetwork(self, x, graph)

    def infer_states(self, x: torch.Tensor, graph: Graph, passes: int | None = None) -> list:
        """The states ``[s_1 .. s_L]`` after the bottom-up pass and ``passes`` refinement passes
        (default: :attr:`inference_passes`)."""
        passes = int(self.inference_passes) if passes is None else passes
        net = self.network(x, graph)
        states = net.bottom_up()
        for _ in range(passes):
            net.refresh(states)
        return states[1:]

    @torch.no_grad()
    def embed(self, data) -> list:
        return [s.clone() for s in self.infer_states(data.x, _full_graph(data))]

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        split = link_split(self.options, data)
        return self._pair_metrics(split, self.infer_states(data.x, split.train_graph))


class TopDownLinkNetwork:
    """A :class:`TopDownLinkModel`'s layers on one graph: the states and their updates."""

    def __init__(self, model: TopDownLinkModel, x: torch.Tensor, graph: Graph):
        self.layers, self.graph, self.x = model.layers, graph, x
        self.hidden = model.options["hidden"]
        self.xn = normalize_rows(x)

    def _prepared(self, j: int, states: list) -> torch.Tensor:
        below = self.xn if j == 0 else normalize_rows(states[j])
        if j + 2 < len(states):
            below = torch.cat([below, normalize_rows(states[j + 2])], dim=1)
        return self.layers[j].prepare(below, self.graph)

    @torch.no_grad()
    def bottom_up(self) -> list:
        """States ``[x, s_1 .. s_L]`` after one bottom-up pass with a zero top-down input."""
        n = self.x.shape[0]
        states = [self.x] + [torch.zeros(n, self.hidden, dtype=self.x.dtype, device=self.x.device)
                             for _ in self.layers]
        for j, layer in enumerate(self.layers):
            states[j + 1] = layer.transform(self._prepared(j, states))
        return states

    @torch.no_grad()
    def refresh(self, states: list, objective=None) -> float:
        """One pass over all layers (even, then odd); with ``objective`` each layer first takes
        one local step. Returns the mean training loss (0 without learning)."""
        total = 0.0
        for parity in (0, 1):
            for j in range(parity, len(self.layers), 2):
                prepared = self._prepared(j, states)
                if objective is not None:
                    total += self.layers[j].step_prepared(prepared, objective).loss
                states[j + 1] = self.layers[j].transform(prepared)
        return total / len(self.layers)


# ---------------------------------------------------------------------------- trainers
class _LinkTrainer(Trainer):
    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.split = link_split(options, data)
        self.negatives = _Negatives(self.split, options["seed"])
        self.loss, self.theta = model.loss, model.theta

    def _objective(self):
        return self.negatives.objective(self.loss, self.theta)

    def _pairs(self, which: str):
        return ((self.split.val_pairs, self.split.val_labels) if which == "val"
                else (self.split.test_pairs, self.split.test_labels))

    def _auc(self, hs, which: str) -> float:
        pairs, labels = self._pairs(which)
        return roc_auc(mean_pair_scores(hs, pairs, self.loss, self.theta), labels)

    def state_dict(self):
        return {"generator": self.negatives.generator.get_state()}

    def load_state_dict(self, state):
        self.negatives.generator.set_state(state["generator"])


class GreedyLinkTrainer(_LinkTrainer):
    """Stage ``s`` trains layer ``s`` on the cached output of the frozen layer below, on the
    training graph; its early stopping scores the validation AUC of the mean pair score over
    layers ``1..s+1``. The frozen layers' pair sigmoids of the validation and test pairs are
    kept as running sums (no layer output is kept past the next layer's input, no layer re-run)."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.num_stages = len(model.layers)
        self.h = data.x              # the current stage's (frozen) input
        self.prepared = None
        self.sums = {"val": None, "test": None}
        self.val_auc_per_layer, self.test_auc_per_layer = [], []

    def _cumulative(self, which, h, stage):
        """The running sum of the pair sigmoids with layer ``stage``'s output ``h`` added, and its AUC
        (of the mean over layers ``1..stage+1``, computed as :func:`mean_pair_scores` does)."""
        pairs, labels = self._pairs(which)
        s = torch.sigmoid(pair_logits(h, pairs, self.loss, self.theta)).to(torch.float64)
        if self.sums[which] is not None:
            s = s.add_(self.sums[which])
        return s, roc_auc(s / (stage + 1), labels)

    def begin_stage(self, stage):
        self.prepared = self.model.layers[stage].prepare(self.h, self.split.train_graph)
        self.h = None

    def stage_module(self, stage):
        return self.model.layers[stage]

    def train_epoch(self, stage, epoch):
        return self.model.layers[stage].step_prepared(self.prepared, self._objective()).loss

    def validate(self, stage):
        return self._cumulative("val", self.model.layers[stage].transform(self.prepared), stage)[1]

    def end_stage(self, stage):
        h = self.model.layers[stage].transform(self.prepared)
        self.prepared = None
        self.sums["val"], val = self._cumulative("val", h, stage)
        self.sums["test"], test = self._cumulative("test", h, stage)
        self.val_auc_per_layer.append(val)
        self.test_auc_per_layer.append(test)
        self.h = h if stage + 1 < self.num_stages else None

    def finish(self):
        return {"val_auc_per_layer": list(self.val_auc_per_layer), "test_auc_per_layer": list(self.test_auc_per_layer),
                "pair_loss": self.loss, "theta": self.theta}


class TopDownLinkTrainer(_LinkTrainer):
    """One stage: every epoch draws fresh negatives and updates every layer once (even layers
    from the previous states, then odd layers from the fresh even outputs); validation scores
    the current states. At the end the number of inference refinement passes (0..``steps``)
    is chosen by validation AUC and stored in the model."""

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        self.net = model.network(data.x, self.split.train_graph)
        self.states = self.net.bottom_up()
        self.val_auc_per_pass = []

    def stage_module(self, stage):
        return self.model.layers

    def train_epoch(self, stage, epoch):
        return self.net.refresh(self.states, self._objective())

    def validate(self, stage):
        return self._auc(self.states[1:], "val")

    def end_stage(self, stage):
        # inference from scratch with the best (restored) weights: bottom-up, then refinements
        net = self.model.network(self.data.x, self.split.train_graph)
        states = net.bottom_up()
        curve = [self._auc(states[1:], "val")]
        for _ in range(self.options["steps"]):
            net.refresh(states)
            curve.append(self._auc(states[1:], "val"))
        passes = max(range(len(curve)), key=curve.__getitem__)  # the first best, by validation only
        self.model.inference_passes.fill_(passes)
        self.val_auc_per_pass = curve

    def finish(self):
        return {"inference_passes": int(self.model.inference_passes), "val_auc_per_pass": list(self.val_auc_per_pass),
                "pair_loss": self.loss, "theta": self.theta}

    def state_dict(self):
        return {"generator": self.negatives.generator.get_state(),
                "states": [s.cpu() for s in self.states[1:]]}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        device = self.data.x.device
        self.states = [self.data.x] + [s.to(device) for s in state["states"]]


register("fl-ce", task="link", models=LINK_MODELS, schedule="greedy", model=GreedyLinkModel,
         defaults=LINK_DEFAULTS, variant={"loss": "ce"}, options=SPLIT_OPTIONS,
         description="link prediction, forward learning with the pair cross-entropy loss, greedy layer-wise "
                     "(ForwardGNN FL-CE)")(GreedyLinkTrainer)
register("fl-ff", task="link", models=LINK_MODELS, schedule="greedy", model=GreedyLinkModel,
         defaults={**LINK_DEFAULTS, "lr": 5e-2}, variant={"loss": "ff"},
         options=(nonnegative_float("theta", FF_THETA, "threshold of the pair logit sum_d (h_u h_v)^2 - theta"),)
         + SPLIT_OPTIONS,
         description="link prediction, forward learning with the pair FF loss, greedy layer-wise "
                     "(ForwardGNN FL-FF)")(GreedyLinkTrainer)
register("fl-top", task="link", models=LINK_MODELS, schedule="simultaneous", model=TopDownLinkModel,
         defaults=LINK_DEFAULTS,
         options=(choice("pair_loss", "ce", PAIR_LOSSES, "the pair loss: ce (FL-CE) or ff (FL-FF)"),
                  Option("theta", float, None, f"pair_loss ff only: threshold of the pair logit sum_d (h_u h_v)^2 - "
                                               f"theta; unset: {FF_THETA}", minimum=0.0, nullable=True),
                  Option("steps", int, 10, "most inference refinement passes (how many is chosen by validation)",
                         minimum=0, maximum=1000))
         + SPLIT_OPTIONS,
         description="link prediction with top-to-input signals, simultaneous, alternating even/odd updates "
                     "(ForwardGNN top-down FL-CE)")(TopDownLinkTrainer)

__all__ = ["EdgeSplit", "split_edges", "sample_non_edges", "pair_logits", "pair_loss_grad", "mean_pair_scores",
           "link_split", "check_pairs", "GreedyLinkModel", "TopDownLinkModel", "TopDownLinkNetwork",
           "GreedyLinkTrainer", "TopDownLinkTrainer", "PAIR_LOSSES", "FF_THETA"]
