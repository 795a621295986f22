"""Forward-Forward for graphs: label appending ``ff-la`` and virtual nodes ``ff-vn``
(docs/algorithms.md#ff-la, docs/algorithms.md#ff-vn), greedy layer-wise.

Each layer trains to its own early stop on the cached, frozen outputs of the layer below. A
layer sees several *streams* (training: the positive and ``C - 1`` negatives; inference: one
per class) that share the graph and the features and differ only in the label part, so the
``C`` passes are batched: one GEMM over the shared feature part for all streams plus a small
per-stream label term (FF-LA) or a ``C x D`` gather (FF-VN).

Memory: the features are never copied per stream or per setting. The first layer keeps only
the rows its loss and its validation read (``Agg(r x)[rows]``, built in column blocks, no
``[N, F]`` temporary); every full-row pass (the output fed to the next layer, inference) is
projection-first (``Agg(r (x W^T))``, ``[N, D]`` temporaries). Inference runs one class stream
at a time through all layers. Measured figures and the reference's quirks: docs/algorithms.md.
"""
from __future__ import annotations

import torch

from .. import ops
from ..nn.functional import normalize_rows
from ..train.metrics import accuracy
from ..train.options import Option, choice, positive_float
from ..train.registry import Model, Trainer, register
from .common import build_layer, project_forward, virtual_node_features

FF_MODELS = ("gcn", "sage")
#: Adam lr 1e-2 (not the reference's 1e-3: the initial goodness, about 0.015 on l2-normalised
#: inputs, is far below theta = 2 and 1e-3 needs hundreds of epochs to get there), wd 5e-4.
FF_DEFAULTS = {"lr": 1e-2, "weight_decay": 5e-4}
THETA = Option("theta", float, 2.0, "goodness threshold of the FF loss and of the inference score")
GOODNESS = choice("goodness", "sum", ("sum", "mean"),
                  "a row's goodness: the sum or the mean of its squared activations")
NEGATIVES = choice("negatives", "query", ("query", "graph"),
                   "query: half the training nodes keep their true label in every stream, the other half is "
                   "relabelled (corrected); graph: every training node relabelled at once (the reference)")
LABEL_SCALE = positive_float("label_scale", 1.0, "factor on the appended label vector before the row normalisation")
VN_DEGREES = ("unit", "batch", "fixed")
VN_DEGREE = choice("vn_degree", "unit", VN_DEGREES,
                   "weight of the virtual link (GCN): unit = like a degree-1 neighbour (corrected); batch = the "
                   "augmented graph's GCN degrees (the reference); fixed = the positive graph's degrees")
_EPS = 1e-8          # the l2 row normalisation's epsilon (normalize_rows)
_COLUMN_BLOCK = 256  # columns per block when gathering rows of an aggregation


# ============================================================================ shared helpers
def draw_negative_classes(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``[N, C-1]``: per node a random permutation of its wrong classes (drawn once, on the CPU
    generator ``generator``, then moved to ``y``'s device).

    Column ``k`` is the label the node carries in negative stream ``k + 1``; never the true label.
    """
    n = y.shape[0]
    r = torch.rand(n, num_classes, generator=generator)
    r[torch.arange(n), y.cpu().clamp_min(0)] = 2.0  # sorts last: the true class is dropped
    return torch.argsort(r, dim=1)[:, : num_classes - 1].to(y.device)


def _score(h: torch.Tensor, theta: float) -> torch.Tensor:
    """Per-row inference score of one layer: ``mean_d H^2 - theta``."""
    return h.pow(2).mean(dim=-1) - theta


def _mask(n: int, idx: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    m = torch.zeros(n, dtype=dtype, device=idx.device)
    m[idx] = 1.0
    return m


def _row_norms(x: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """``||x_i||_2`` per row (as :func:`normalize_rows` computes it) without an ``[N, F]`` temporary."""
    return torch.cat([x[i:i + rows].norm(dim=1) for i in range(0, x.shape[0], rows)]) if x.shape[0] else \
        x.new_zeros(0)


def _row_sq_sums(x: torch.Tensor, rows: int = 1024) -> torch.Tensor:
    """``sum_d x_id^2`` per row, in row blocks (no ``[N, F]`` temporary)."""
    return torch.cat([x[i:i + rows].pow(2).sum(1) for i in range(0, x.shape[0], rows)]) if x.shape[0] else \
        x.new_zeros(0)


def rows_of_aggregate(graph, x: torch.Tensor, rows: torch.Tensor, reduce: str, divide: torch.Tensor | None = None,
                      multiply: torch.Tensor | None = None, block: int = _COLUMN_BLOCK) -> torch.Tensor:
    """``Agg_reduce(x / divide * multiply)[rows]`` ``[R, F]`` (row factors ``[N]``), computed in
    column blocks of ``block``: the only temporaries are ``[N, block]``, never ``[N, F]``."""
    out = x.new_empty(rows.numel(), x.shape[1])
    for lo in range(0, x.shape[1], block):
        part = x[:, lo:lo + block]
        if divide is not None:
            part = part / divide[:, None]
        if multiply is not None:
            part = part * multiply[:, None]
        out[:, lo:lo + block] = ops.aggregate(graph, part, reduce=reduce).index_select(0, rows)
    return out


def _consume_prepare(layer, h: torch.Tensor, graph) -> torch.Tensor:
    """``layer.prepare(h, graph)``, normalising ``h`` in place (its caller no longer needs it)."""
    hn = normalize_rows(h, layer.normalize, inplace=True)
    if layer.weight.shape[1] == 2 * layer.in_features:  # SAGE: [n(h) | Agg_mean(n(h))]
        return torch.cat([hn, ops.aggregate(graph, hn, reduce="mean")], dim=1)
    return ops.aggregate(graph, hn, reduce="gcn")


def _ff_loss_grad(z: torch.Tensor, theta: float, goodness: str):
    """FF loss over streams ``z`` ``[S, n, D]`` (stream 0 positive, the others negative):
    ``(loss, dL/dZ [S, n, D])``. ``z`` is a per-step temporary of the callers, so the fused op
    writes the gradient over it (``inplace=True``: no second ``[S n, D]`` buffer)."""
    s, n, d = z.shape
    h = torch.relu_(z).reshape(s * n, d)
    if not h.is_contiguous():
        h = h.contiguous()
    flags = torch.zeros(s * n, dtype=torch.bool, device=h.device)
    flags[:n] = True
    loss, _, dz = ops.goodness_loss_grad(h, flags, theta=theta, goodness=goodness, inplace=True)
    return loss, dz.reshape(s, n, d)


def _check_data(data, dims: dict, name: str) -> None:
    if data.graph is None:
        raise ValueError(f"{name} runs on a graph, but dataset {data.name!r} has no edge_index")
    if data.num_classes != dims["num_classes"]:
        raise ValueError(f"this {name} model scores {dims['num_classes']} classes, dataset {data.name!r} has "
                         f"{data.num_classes}")
    y_train = data.y[data.train_idx]
    if y_train.numel() and int(y_train.min()) < 0:
        raise ValueError(f"dataset {data.name!r}: every training node needs a label ({name} conditions on the "
                         f"training labels); found label -1 in train_idx")


def _complement(n: int, idx: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool, device=idx.device)
    keep[idx] = False
    return keep.nonzero().reshape(-1)


class _FFGraphModel(Model):
    """What both models share: the layer stack and the evaluation protocol.

    ``_layer_scores(data, known, query)`` yields, layer by layer, the cumulative class scores
    ``[len(query), C]`` of the queried nodes with the ``known`` nodes carrying their true label.
    """

    name = "ff-graph"

    def _build(self, in_features: int) -> None:
        opts = self.options
        widths = [in_features] + [opts["hidden"]] * opts["layers"]
        self.layers = torch.nn.ModuleList(
            build_layer(opts["model"], widths[i], widths[i + 1], lr=opts["lr"], weight_decay=opts["weight_decay"])
            for i in range(opts["layers"]))

    def _final_scores(self, data, known, query) -> torch.Tensor:
        scores = None
        for scores in self._layer_scores(data, known, query):
            pass
        return scores

    @torch.no_grad()
    def evaluate(self, data) -> dict:
        """Validation: the training nodes keep their labels, the validation nodes are queried;
        test: the training and validation nodes keep their labels, the test nodes are queried."""
        _check_data(data, self.dims, self.name)
        known_test = torch.cat([data.train_idx, data.val_idx])
        return {"val_accuracy": accuracy(self._final_scores(data, data.train_idx, data.val_idx), data.y[data.val_idx]),
                "test_accuracy": accuracy(self._final_scores(data, known_test, data.test_idx), data.y[data.test_idx])}

    @torch.no_grad()
    def layer_accuracies(self, data) -> dict:
        """Validation and test accuracy of the summed score of layers ``1..l``, for every ``l``."""
        _check_data(data, self.dims, self.name)
        known_test = torch.cat([data.train_idx, data.val_idx])
        return {"val_accuracy_per_layer": [accuracy(s, data.y[data.val_idx])
                                           for s in self._layer_scores(data, data.train_idx, data.val_idx)],
                "test_accuracy_per_layer": [accuracy(s, data.y[data.test_idx])
                                            for s in self._layer_scores(data, known_test, data.test_idx)]}

    @torch.no_grad()
    def predict(self, data) -> torch.Tensor:
        """Class per node ``[N]``: the training nodes keep (and are given) their true label, every
        other node is queried at once, ``argmax_c sum_l (mean_d H_l^2 - theta)``."""
        _check_data(data, self.dims, self.name)
        query = _complement(data.num_nodes, data.train_idx)
        pred = data.y.clone()
        pred[query] = self._final_scores(data, data.train_idx, query).argmax(dim=1)
        return pred


# ============================================================================ FF-LA
def label_matrix(num_nodes: int, num_classes: int, labelled: torch.Tensor, labels: torch.Tensor,
                 label_scale: float = 1.0, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[N, C]``: one-hot ``labels`` on rows ``labelled``, uniform ``1/C`` elsewhere (times scale)."""
    m = torch.full((num_nodes, num_classes), 1.0 / num_classes, device=device, dtype=dtype)
    m[labelled] = 0.0
    m[labelled, labels] = 1.0
    return m * label_scale


def la_stream_labels(data, known: torch.Tensor, query: torch.Tensor, query_labels: torch.Tensor,
                     label_scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """``[S, N, C]`` label part of ``S`` streams: ``known`` nodes carry their true label in every
    stream, ``query`` nodes carry ``query_labels[s]`` (``[S, len(query)]``), the others ``1/C``."""
    n, c = data.num_nodes, data.num_classes
    labelled = torch.cat([known, query])
    return torch.stack([label_matrix(n, c, labelled, torch.cat([data.y[known], ql]), label_scale, data.x.device,
                                     dtype) for ql in query_labels])


def la_row_scale(x_sq: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``r`` with ``n([x || l]) = r [x || l]`` (l2), for label rows ``labels`` ``[N, C]`` of any
    stream (every stream gives a node a label vector of the same norm)."""
    return 1.0 / ((x_sq + labels.pow(2).sum(1)).sqrt() + _EPS)


def _la_columns(model: str, f: int, c: int, device):
    """Weight columns of the feature part and of the label part of the first layer's input."""
    ar = torch.arange
    if model == "gcn":
        return ar(f, device=device), ar(f, f + c, device=device)
    return (torch.cat([ar(f, device=device), ar(f + c, 2 * f + c, device=device)]),
            torch.cat([ar(f, f + c, device=device), ar(2 * f + c, 2 * f + 2 * c, device=device)]))


def la_label_part(model: str, graph, r: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Prepared label part of every stream over all rows ``[S, N, C']`` (GCN ``Agg(r l)``,
    SAGE ``[r l | Agg_mean(r l)]``): all streams aggregated in one call."""
    s, n, c = labels.shape
    lr = (labels * r[None, :, None]).permute(1, 0, 2).reshape(n, s * c)
    if model == "gcn":
        return ops.aggregate(graph, lr, reduce="gcn").reshape(n, s, c).permute(1, 0, 2)
    lm = ops.aggregate(graph, lr, reduce="mean")
    return torch.cat([lr.reshape(n, s, c), lm.reshape(n, s, c)], 2).permute(1, 0, 2)


def la_feature_rows(model: str, graph, x: torch.Tensor, r: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Prepared feature part of the first layer's input on ``rows`` only: GCN ``Agg(r x)[rows]``,
    SAGE ``[r x | Agg_mean(r x)][rows]`` (shared by every stream of a setting)."""
    if model == "gcn":
        return rows_of_aggregate(graph, x, rows, "gcn", multiply=r)
    return torch.cat([x.index_select(0, rows) * r.index_select(0, rows)[:, None],
                      rows_of_aggregate(graph, x, rows, "mean", multiply=r)], 1)


def la_feature_full(layer, model: str, graph, x: torch.Tensor, r: torch.Tensor, c: int, proj=None) -> torch.Tensor:
    """The feature part's contribution to ``Z`` over all rows, projection-first ``[N, D]``:
    GCN ``Agg(r (x W_x^T))``, SAGE ``r (x W_self,x^T) + Agg_mean(r (x W_neigh,x^T))``.
    ``proj`` (from :func:`la_project_features`) is reused across settings."""
    proj = la_project_features(layer, model, x, c) if proj is None else proj
    if model == "gcn":
        return ops.aggregate(graph, proj[0] * r[:, None], reduce="gcn")
    return proj[0] * r[:, None] + ops.aggregate(graph, proj[1] * r[:, None], reduce="mean")


def la_project_features(layer, model: str, x: torch.Tensor, c: int) -> tuple:
    """``x W_x^T`` (GCN) or ``(x W_self,x^T, x W_neigh,x^T)`` (SAGE), each ``[N, D]``."""
    w, f = layer.weight, x.shape[1]
    if model == "gcn":
        return (x @ w[:, :f].t(),)
    return x @ w[:, :f].t(), x @ w[:, f + c:2 * f + c].t()


class LAStreams:
    """One setting's streams at one layer on its loss (or scored) rows:
    ``Z_s = shared W[:, xcols]^T + streams_s W[:, lcols]^T + b``.

    ``shared`` ``[n, Fx]`` (first layer: the feature part, one for every stream; None for a
    deeper layer), ``streams`` ``[S, n, Fl]`` (the label part, or a deeper layer's whole
    prepared input). Stream 0 is the positive one.
    """

    def __init__(self, shared, streams, xcols, lcols):
        self.shared, self.streams, self.xcols, self.lcols = shared, streams, xcols, lcols

    def z(self, layer) -> torch.Tensor:
        w = layer.weight
        z = torch.matmul(self.streams, w[:, self.lcols].t())
        if self.shared is not None:
            z = z + (self.shared @ w[:, self.xcols].t()).unsqueeze(0)
        if layer.bias is not None:
            z = z + layer.bias
        return z

    @torch.no_grad()
    def step(self, layer, theta: float, goodness: str) -> float:
        """One FF step (closed form): ``dW_l = sum_s dZ_s^T P_s``, ``dW_x = (sum_s dZ_s)^T P_shared``."""
        loss, dz = _ff_loss_grad(self.z(layer), theta, goodness)
        gw = torch.zeros_like(layer.weight)
        gw[:, self.lcols] = torch.einsum("snd,snf->df", dz, self.streams)
        if self.shared is not None:
            gw[:, self.xcols] = dz.sum(0).t() @ self.shared
        layer.apply_gradients({"weight": gw, "bias": dz.sum((0, 1)) if layer.bias is not None else None})
        return float(loss)


def la_training_settings(data, negatives: str, neg_classes: torch.Tensor, gen: torch.Generator) -> list:
    """Training settings ``[(known, query, query_labels [C, len(query)])]``; the loss is on ``query``.

    ``graph`` (reference): no known node; stream 0 gives every training node its true label,
    stream ``k`` relabels every training node with its ``k``-th wrong class. ``query``
    (default): the training nodes are split into two fixed halves; in each half's setting the
    other half keeps its true labels in every stream.
    """
    tr, y = data.train_idx, data.y
    if negatives == "graph":
        groups = [(tr[:0], tr)]
    elif negatives == "query":
        perm = tr[torch.randperm(tr.numel(), generator=gen).to(tr.device)]
        half = perm.numel() // 2
        a, b = perm[:half].sort()[0], perm[half:].sort()[0]
        groups = [(b, a), (a, b)]
    else:
        raise ValueError(f"negatives must be 'graph' or 'query', got {negatives!r}")
    c = data.num_classes
    return [(known, query, torch.stack([y[query]] + [neg_classes[query, k] for k in range(c - 1)]))
            for known, query in groups]


def la_query_labels(num_classes: int, query: torch.Tensor) -> torch.Tensor:
    """``[C, len(query)]``: stream ``c`` queries class ``c`` for every queried node."""
    return torch.arange(num_classes, device=query.device)[:, None].expand(num_classes, query.numel())


class FFLAModel(_FFGraphModel):
    """FF-LA's layers: ``F + C -> hidden -> ... -> hidden`` (the first layer reads ``[x || l]``).

    Inference (:meth:`_layer_scores`) runs one class stream at a time through every layer: the
    first layer's feature part ``Agg(r (x W_x^T))`` is computed once per setting and shared by
    the ``C`` streams, each stream adds its ``[N, C]`` label part; only ``[N, D]`` activations
    are alive.
    """

    name = "ff-la"

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        self._build(dims["num_features"] + dims["num_classes"])

    def _streams(self, data, labels: torch.Tensor):
        """Yield each stream's per-layer outputs ``[h_1, ..., h_L]`` (``[N, D]`` each, lazily)."""
        model, graph, c = self.options["model"], data.graph, data.num_classes
        first = self.layers[0]
        _, lcols = _la_columns(model, data.num_features, c, data.x.device)
        r = la_row_scale(_row_sq_sums(data.x), labels[0])
        shared = la_feature_full(first, model, graph, data.x, r, c)
        part = la_label_part(model, graph, r, labels)
        wl = first.weight[:, lcols].t()
        for s in range(labels.shape[0]):
            def outputs(s=s):
                z = shared + part[s] @ wl
                if first.bias is not None:
                    z += first.bias
                h = z.relu_()
                yield h
                for layer in self.layers[1:]:
                    h = project_forward(layer, h, graph)
                    yield h
            yield outputs()

    def _layer_scores(self, data, known, query):
        c, theta = data.num_classes, self.options["theta"]
        labels = la_stream_labels(data, known, query, la_query_labels(c, query), self.options["label_scale"],
                                  data.x.dtype)
        per_layer = torch.zeros(len(self.layers), c, query.numel(), dtype=data.x.dtype, device=data.x.device)
        for s, outputs in enumerate(self._streams(data, labels)):
            for li, h in enumerate(outputs):
                per_layer[li, s] = _score(h.index_select(0, query), theta)
        return list(per_layer.cumsum(0).transpose(1, 2).unbind(0))

    @torch.no_grad()
    def embed(self, data) -> list:
        """Per-layer ``[N, D]`` outputs of the stream in which the training nodes carry their
        true label and every other node the uniform ``1/C`` label vector."""
        _check_data(data, self.dims, self.name)
        empty = data.train_idx[:0]
        labels = la_stream_labels(data, data.train_idx, empty, empty[None], self.options["label_scale"],
                                  data.x.dtype)
        return [h.clone() for h in next(iter(self._streams(data, labels)))]


class FFLATrainer(Trainer):
    """Greedy FF-LA: stage ``s`` trains layer ``s`` on the frozen per-stream outputs of layer ``s - 1``.

    Settings: the training ones (two halves for ``negatives="query"``, one for ``"graph"``) and
    the validation one (training nodes known, validation nodes queried). Layer 1 keeps only the
    shared feature rows its loss / validation read and the per-stream label rows; a deeper
    layer keeps each setting's per-stream prepared input ``[S, N, D']`` (released once the next
    layer's input is built). Validation scores the cumulative ``sum_l (mean_d H^2 - theta)``.
    """

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        _check_data(data, model.dims, spec.name)
        self.num_stages = len(model.layers)
        self.kind, self.theta, self.goodness = options["model"], options["theta"], options["goodness"]
        self.scale = options["label_scale"]
        gen = torch.Generator().manual_seed(options["seed"] + 17)
        neg = draw_negative_classes(data.y, data.num_classes, gen)
        self.settings = la_training_settings(data, options["negatives"], neg, gen)
        va = data.val_idx
        self.settings.append((data.train_idx, va, la_query_labels(data.num_classes, va)))
        self.val_y = data.y[va]
        self.cum_val = torch.zeros(data.num_classes, va.numel(), device=data.x.device)
        self.prepared = None   # per setting: the current layer's prepared input [S, N, D'] (stage >= 1)
        self.streams = None    # per setting: LAStreams on its rows (the last one: validation)

    def _labels(self, setting):
        known, query, qlabels = setting
        return la_stream_labels(self.data, known, query, qlabels, self.scale, self.data.x.dtype)

    @torch.no_grad()
    def begin_stage(self, stage):
        data, graph = self.data, self.data.graph
        if stage == 0:
            x_sq = _row_sq_sums(data.x)
            xcols, lcols = _la_columns(self.kind, data.num_features, data.num_classes, data.x.device)
            self.streams = []
            for setting in self.settings:
                labels = self._labels(setting)
                rows = setting[1]
                r = la_row_scale(x_sq, labels[0])
                shared = la_feature_rows(self.kind, graph, data.x, r, rows)
                part = la_label_part(self.kind, graph, r, labels).index_select(1, rows).contiguous()
                self.streams.append(LAStreams(shared, part, xcols, lcols))
        else:
            cols = torch.arange(self.prepared[0].shape[2], device=data.x.device)
            self.streams = [LAStreams(None, p.index_select(1, setting[1]), None, cols)
                            for p, setting in zip(self.prepared, self.settings)]

    def stage_module(self, stage):
        return self.model.layers[stage]

    def train_epoch(self, stage, epoch):
        layer = self.model.layers[stage]
        train = self.streams[:-1]
        return sum(st.step(layer, self.theta, self.goodness) for st in train) / len(train)

    @torch.no_grad()
    def _val_scores(self, stage):
        return self.cum_val + _score(torch.relu_(self.streams[-1].z(self.model.layers[stage])), self.theta)

    def validate(self, stage):
        return accuracy(self._val_scores(stage).t(), self.val_y)

    @torch.no_grad()
    def end_stage(self, stage):
        data, layer = self.data, self.model.layers[stage]
        self.cum_val = self._val_scores(stage)
        self.streams = None
        if stage + 1 == self.num_stages:
            self.prepared = None
            return
        nxt = self.model.layers[stage + 1]
        prepared = []
        if stage == 0:
            x_sq = _row_sq_sums(data.x)
            proj = la_project_features(layer, self.kind, data.x, data.num_classes)
            _, lcols = _la_columns(self.kind, data.num_features, data.num_classes, data.x.device)
            wl = layer.weight[:, lcols].t()
        for i, setting in enumerate(self.settings):
            if stage == 0:
                labels = self._labels(setting)
                r = la_row_scale(x_sq, labels[0])
                shared = la_feature_full(layer, self.kind, data.graph, data.x, r, data.num_classes, proj)
                z = torch.matmul(la_label_part(self.kind, data.graph, r, labels), wl).add_(shared)
            else:
                z = torch.matmul(self.prepared[i], layer.weight.t())
                self.prepared[i] = None
            if layer.bias is not None:
                z += layer.bias
            h = z.relu_()                                  # [S, N, D]: every stream's output
            if nxt.weight.shape[1] == h.shape[2]:          # GCN: the prepared input reuses h's storage
                for s in range(h.shape[0]):
                    h[s] = _consume_prepare(nxt, h[s], data.graph)
                prepared.append(h)
            else:
                prepared.append(torch.stack([_consume_prepare(nxt, h[s], data.graph) for s in range(h.shape[0])]))
                del h
        self.prepared = prepared

    def finish(self):
        return self.model.layer_accuracies(self.data)


register("ff-la", task="node", models=FF_MODELS, schedule="greedy", model=FFLAModel, defaults=FF_DEFAULTS,
         options=(THETA, GOODNESS, NEGATIVES, LABEL_SCALE),
         description="Forward-Forward with label appending, greedy layer-wise, batched label streams (ForwardGNN)"
         )(FFLATrainer)


# ============================================================================ FF-VN
class VNStreams:
    """One setting's FF-VN streams at one layer: ``Z_s = base W^T + coef_s * (U_V W_blk^T)[cls_s] + b``.

    ``base`` ``[n, Dp]`` (the queried rows' prepared input without the virtual link, shared by
    every stream), ``coef`` ``[S, n]``, ``cls`` ``[S, n]`` (the virtual node each queried row
    links to per stream), ``uv`` ``[C, Fin]`` normalised virtual-node inputs, ``blk`` the weight
    columns the virtual term enters (all for GCN, the neighbour block for SAGE).
    """

    def __init__(self, base, coef, cls, uv, blk):
        self.base, self.coef, self.cls, self.uv, self.blk = base, coef, cls, uv, blk

    def z(self, layer):
        w = layer.weight
        v = self.uv @ w[:, self.blk].t()                              # [C, D]
        z = (self.base @ w.t()).unsqueeze(0) + self.coef.unsqueeze(2) * v[self.cls]
        if layer.bias is not None:
            z = z + layer.bias
        return z

    @torch.no_grad()
    def step(self, layer, theta, goodness) -> float:
        """One FF step: ``dW = (sum_s dZ_s)^T base``, ``dW_blk += Mv^T U_V`` with
        ``Mv[c] = sum_{(s, i): cls_s(i) = c} coef_s(i) dZ_s(i)``."""
        loss, dz = _ff_loss_grad(self.z(layer), theta, goodness)
        d = dz.shape[2]
        gw = dz.sum(0).t() @ self.base
        m = torch.zeros(self.uv.shape[0], d, dtype=dz.dtype, device=dz.device)
        m.index_add_(0, self.cls.reshape(-1), (self.coef.unsqueeze(2) * dz).reshape(-1, d))
        gw[:, self.blk] += m.t() @ self.uv
        layer.apply_gradients({"weight": gw, "bias": dz.sum((0, 1)) if layer.bias is not None else None})
        return float(loss)


def vn_virtual_dinv(known_cls: torch.Tensor, query_cls: torch.Tensor, num_classes: int, vn_degree: str,
                    positive_cls: torch.Tensor | None = None, dtype=torch.float32) -> torch.Tensor:
    """``[S, C]`` GCN factor ``(1 + deg(v_c))^-1/2`` of each virtual node per stream.

    - ``batch`` (reference): the degree in the stream's graph, every queried node linked at once
      (at inference all eval nodes link to ``v_c`` together: a class-dependent factor);
    - ``fixed``: the positive graph's degree in every stream (training: ``positive_cls``), the
      known nodes' count + 1 at inference (each query counted alone);
    - ``unit``: every virtual link weighted as a degree-1 neighbour's (``(1 + 1)^-1/2``).
    """
    s, dev = query_cls.shape[0], query_cls.device

    def count(cls):
        return torch.bincount(cls, minlength=num_classes).to(dtype)
    if vn_degree == "batch":
        base = count(known_cls)
        vdeg = torch.stack([base + count(q) for q in query_cls]) if s else \
            torch.zeros(0, num_classes, dtype=dtype, device=dev)
    elif vn_degree == "fixed":
        vdeg = count(positive_cls) if positive_cls is not None else count(known_cls) + 1.0
        vdeg = vdeg.unsqueeze(0).expand(s, num_classes)
    elif vn_degree == "unit":
        vdeg = torch.ones(s, num_classes, dtype=dtype, device=dev)
    else:
        raise ValueError(f"vn_degree must be one of {list(VN_DEGREES)}, got {vn_degree!r}")
    return (1.0 + vdeg).rsqrt()


def vn_inference_dinv(known_cls: torch.Tensor, num_query: int, num_classes: int, vn_degree: str,
                      dtype=torch.float32) -> torch.Tensor:
    """``[C]`` factor of ``v_c`` when every queried node links to it (class ``c``'s stream at
    inference): the :func:`vn_virtual_dinv` of that stream, per class."""
    count = torch.bincount(known_cls, minlength=num_classes).to(dtype)
    if vn_degree == "batch":
        return (1.0 + count + num_query).rsqrt()
    if vn_degree == "fixed":
        return (1.0 + count + 1.0).rsqrt()
    if vn_degree == "unit":
        return torch.full_like(count, 0.5 ** 0.5)
    raise ValueError(f"vn_degree must be one of {list(VN_DEGREES)}, got {vn_degree!r}")


def vn_streams(model: str, graph, xr: torch.Tensor, xv: torch.Tensor, linked: torch.Tensor, query: torch.Tensor,
               query_cls: torch.Tensor, vdinv: torch.Tensor | None = None) -> VNStreams:
    """:class:`VNStreams` of the queried rows ``query`` (per-stream virtual classes ``query_cls``
    ``[S, n]``) on the layer input ``xr`` ``[N, Fin]`` (real rows) / ``xv`` ``[C, Fin]`` (virtual
    rows). ``linked``: every real node linked to a virtual node in these streams (known + queried).
    ``vdinv`` ``[S, C]`` (GCN): :func:`vn_virtual_dinv`. Only the queried rows are built (in
    column blocks: no ``[N, Fin]`` temporary)."""
    n, fin = xr.shape
    nrm = _row_norms(xr).add_(_EPS)
    uv = normalize_rows(xv)
    u_q = xr.index_select(0, query) / nrm.index_select(0, query)[:, None]
    deg = graph.in_degree.to(xr.dtype) + _mask(n, linked, xr.dtype)
    if model == "gcn":
        dinv = (1.0 + deg).rsqrt()
        dq = dinv.index_select(0, query)[:, None]
        base = dq * (rows_of_aggregate(graph, xr, query, "sum", divide=nrm, multiply=dinv) + dq * u_q)
        coef = dinv.index_select(0, query).unsqueeze(0) * torch.gather(vdinv.to(xr.dtype), 1, query_cls)
        blk = torch.arange(fin, device=xr.device)
    else:
        deg = deg.clamp_min(1.0)
        base = torch.cat([u_q, rows_of_aggregate(graph, xr, query, "sum", divide=nrm) /
                          deg.index_select(0, query)[:, None]], 1)
        coef = (1.0 / deg.index_select(0, query)).unsqueeze(0).expand(query_cls.shape[0], -1).contiguous()
        blk = torch.arange(fin, 2 * fin, device=xr.device)
    return VNStreams(base.contiguous(), coef, query_cls, uv.contiguous(), blk)


def _vn_project(layer, model: str, xr, xv):
    """``n(x) W^T`` of the real and virtual rows (GCN), or of both SAGE blocks: lists of
    ``([N, D], [C, D])`` pairs, projection-first (the row normalisation commutes with it)."""
    w, fin = layer.weight, layer.in_features
    nr, nv = _row_norms(xr).add_(_EPS)[:, None], _row_norms(xv).add_(_EPS)[:, None]
    blocks = [w] if model == "gcn" else [w[:, :fin], w[:, fin:]]
    return [((xr @ wb.t()).div_(nr), (xv @ wb.t()).div_(nv)) for wb in blocks]


@torch.no_grad()
def vn_forward(layer, model: str, graph, xr, xv, known: torch.Tensor, known_cls: torch.Tensor, vn_degree: str):
    """The next layer's input ``([N, D], [C, D])``: the layer on the graph where only ``known``
    is linked, to ``known_cls``, projection-first (``[N, D]`` temporaries only).

    Real rows weigh the virtual link as training and inference do (``vn_degree``, GCN); virtual
    rows are the plain layer on the augmented graph (their members' aggregate). With
    ``vn_degree="batch"``/``"fixed"`` (or SAGE) this is exactly ``layer(x_aug, augmented graph)``.
    """
    n, c = xr.shape[0], xv.shape[0]
    deg = graph.in_degree.to(xr.dtype) + _mask(n, known, xr.dtype)
    count = torch.bincount(known_cls, minlength=c).to(xr.dtype)
    if model == "gcn":
        ((p, pv),) = _vn_project(layer, model, xr, xv)
        dinv, dv = (1.0 + deg).rsqrt(), (1.0 + count).rsqrt()
        z = ops.aggregate(graph, p * dinv[:, None], reduce="sum").add_(p * dinv[:, None]).mul_(dinv[:, None])
        vd = dv if vn_degree in ("batch", "fixed") else torch.full_like(dv, 0.5 ** 0.5)
        z.index_add_(0, known, (dinv[known] * vd[known_cls])[:, None] * pv[known_cls])
        zv = torch.zeros_like(pv).index_add_(0, known_cls, dinv[known][:, None] * p[known])
        zv = dv[:, None] * (zv + dv[:, None] * pv)
    else:
        (ps, pvs), (pn, pvn) = _vn_project(layer, model, xr, xv)
        z = ops.aggregate(graph, pn, reduce="sum").index_add_(0, known, pvn[known_cls])
        z = ps + z / deg.clamp_min(1.0)[:, None]
        zv = pvs + torch.zeros_like(pvn).index_add_(0, known_cls, pn[known]) / count.clamp_min(1.0)[:, None]
    if layer.bias is not None:
        z += layer.bias
        zv += layer.bias
    return z.relu_(), zv.relu_()


def vn_query_scores(layer, model: str, graph, xr, xv, known, known_cls, query, vn_degree: str, theta: float):
    """``[C, len(query)]`` one layer's score ``mean_d H^2 - theta`` of the queried rows linked to
    ``v_c`` for each class ``c`` (the known nodes linked to their true class), projection-first."""
    n, c = xr.shape[0], xv.shape[0]
    linked = torch.cat([known, query])
    deg = graph.in_degree.to(xr.dtype) + _mask(n, linked, xr.dtype)
    if model == "gcn":
        ((p, pv),) = _vn_project(layer, model, xr, xv)
        dinv = (1.0 + deg).rsqrt()
        base = ops.aggregate(graph, p * dinv[:, None], reduce="sum").add_(p * dinv[:, None]).mul_(dinv[:, None])
        base = base.index_select(0, query)
        coef, virt = dinv.index_select(0, query), pv * vn_inference_dinv(known_cls, query.numel(), c, vn_degree,
                                                                          xr.dtype)[:, None]
    else:
        (ps, pvs), (pn, pvn) = _vn_project(layer, model, xr, xv)
        inv = 1.0 / deg.clamp_min(1.0).index_select(0, query)
        base = ps.index_select(0, query) + ops.aggregate(graph, pn, reduce="sum").index_select(0, query) * inv[:, None]
        coef, virt = inv, pvn
    out = torch.empty(c, query.numel(), dtype=xr.dtype, device=xr.device)
    for k in range(c):
        z = base + coef[:, None] * virt[k]
        if layer.bias is not None:
            z += layer.bias
        out[k] = _score(z.relu_(), theta)
    return out


class FFVNModel(_FFGraphModel):
    """FF-VN's layers ``F -> hidden -> ... -> hidden`` and the virtual nodes' fixed ``N(0, 1)``
    features ``[C, F]`` (a buffer, drawn from their own generator)."""

    name = "ff-vn"

    def __init__(self, options: dict, dims: dict, variant: dict | None = None):
        super().__init__(options, dims, variant)
        self._build(dims["num_features"])
        self.register_buffer("virtual_features", virtual_node_features(dims["num_classes"], dims["num_features"],
                                                                       options["seed"]))

    def _chain(self, data, known):
        """Yield ``(layer, xr, xv)``: each layer with its input on the graph where ``known`` is linked."""
        model, vn_degree, graph = self.options["model"], self.options["vn_degree"], data.graph
        xr, xv = data.x, self.virtual_features.to(data.x.dtype)
        known_cls = data.y[known]
        for i, layer in enumerate(self.layers):
            yield layer, xr, xv
            if i + 1 < len(self.layers):
                xr, xv = vn_forward(layer, model, graph, xr, xv, known, known_cls, vn_degree)

    def _layer_scores(self, data, known, query):
        opts, known_cls = self.options, data.y[known]
        total = 0.0
        for layer, xr, xv in self._chain(data, known):
            total = total + vn_query_scores(layer, opts["model"], data.graph, xr, xv, known, known_cls, query,
                                            opts["vn_degree"], opts["theta"])
            yield total.t()

    @torch.no_grad()
    def embed(self, data) -> list:
        """Per-layer ``[N, D]`` outputs of the real nodes on the graph where the training nodes
        are linked to their class's virtual node (what training feeds forward)."""
        _check_data(data, self.dims, self.name)
        model, graph, tr = self.options["model"], data.graph, data.train_idx
        xr, xv = data.x, self.virtual_features.to(data.x.dtype)
        out = []
        for layer in self.layers:
            xr, xv = vn_forward(layer, model, graph, xr, xv, tr, data.y[tr], self.options["vn_degree"])
            out.append(xr)
        return out


class FFVNTrainer(Trainer):
    """Greedy FF-VN: stage ``s`` trains layer ``s`` on the frozen output of layer ``s - 1`` on the
    graph where the training nodes are linked to their true class (one chain, not per stream).

    Training streams: the training nodes linked to their class (positive) or to their ``k``-th
    wrong class (negative ``k``); validation: the training nodes linked to their class, the
    validation nodes to ``v_c`` for each class ``c``. Only the queried rows are prepared.
    """

    def __init__(self, spec, options, data, model):
        super().__init__(spec, options, data, model)
        _check_data(data, model.dims, spec.name)
        self.num_stages = len(model.layers)
        self.kind, self.theta, self.goodness = options["model"], options["theta"], options["goodness"]
        self.vn_degree = options["vn_degree"]
        c, y, tr = data.num_classes, data.y, data.train_idx
        gen = torch.Generator().manual_seed(options["seed"] + 17)
        neg = draw_negative_classes(y, c, gen)
        self.train_cls = torch.stack([y[tr]] + [neg[tr, k] for k in range(c - 1)])       # [C, n_train]
        self.val_cls = torch.arange(c, device=y.device)[:, None].expand(c, data.val_idx.numel())
        self.val_y = y[data.val_idx]
        self.cum_val = torch.zeros(c, data.val_idx.numel(), device=data.x.device)
        self.xr, self.xv = data.x, model.virtual_features.to(data.x.dtype)   # the current stage's input
        self.train_st = self.val_st = None

    @torch.no_grad()
    def begin_stage(self, stage):
        data, c = self.data, self.data.num_classes
        tr, va, y = data.train_idx, data.val_idx, data.y
        dt = data.x.dtype
        vd = (vn_virtual_dinv(tr[:0], self.train_cls, c, self.vn_degree, y[tr], dt),
              vn_virtual_dinv(y[tr], self.val_cls, c, self.vn_degree, dtype=dt)) if self.kind == "gcn" else (None, None)
        self.train_st = vn_streams(self.kind, data.graph, self.xr, self.xv, tr, tr, self.train_cls, vd[0])
        self.val_st = vn_streams(self.kind, data.graph, self.xr, self.xv, torch.cat([tr, va]), va, self.val_cls,
                                 vd[1])

    def stage_module(self, stage):
        return self.model.layers[stage]

    def train_epoch(self, stage, epoch):
        return self.train_st.step(self.model.layers[stage], self.theta, self.goodness)

    @torch.no_grad()
    def _val_scores(self, stage):
        return self.cum_val + _score(torch.relu_(self.val_st.z(self.model.layers[stage])), self.theta)

    def validate(self, stage):
        return accuracy(self._val_scores(stage).t(), self.val_y)

    @torch.no_grad()
    def end_stage(self, stage):
        self.cum_val = self._val_scores(stage)
        self.train_st = self.val_st = None
        if stage + 1 < self.num_stages:
            tr = self.data.train_idx
            self.xr, self.xv = vn_forward(self.model.layers[stage], self.kind, self.data.graph, self.xr, self.xv,
                                          tr, self.data.y[tr], self.vn_degree)
        else:
            self.xr = self.xv = None

    def finish(self):
        return self.model.layer_accuracies(self.data)


register("ff-vn", task="node", models=FF_MODELS, schedule="greedy", model=FFVNModel, defaults=FF_DEFAULTS,
         options=(THETA, GOODNESS, VN_DEGREE),
         description="Forward-Forward with virtual nodes, greedy layer-wise, batched class streams (ForwardGNN)"
         )(FFVNTrainer)


__all__ = ["FFLAModel", "FFLATrainer", "FFVNModel", "FFVNTrainer", "LAStreams", "VNStreams", "draw_negative_classes",
           "label_matrix", "la_stream_labels", "la_training_settings", "la_row_scale", "la_label_part",
           "la_feature_rows", "la_feature_full", "la_project_features", "vn_streams", "vn_virtual_dinv",
           "vn_forward", "vn_query_scores", "vn_inference_dinv", "rows_of_aggregate", "FF_MODELS", "FF_DEFAULTS",
           "VN_DEGREES"]
