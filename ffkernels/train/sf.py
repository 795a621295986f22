"""ForwardGNN's single-forward (SF) learning with virtual nodes (ALGORITHMS.md 1.4, 1.5).

Three registered algorithms (task ``node``; models ``gcn``, ``sage``, ``gat``):

- ``sf``: greedy layer-wise. Each layer trains to its own early stop on the cached output of
  the frozen layer below; its ``prepare()`` output (normalised + aggregated input) is computed
  once, and only the ``n_train + C`` rows that carry the SF gradient are gathered for the step
  (a row-gathered GEMM, no sparse op per step). Validation needs only the validation and
  virtual rows of the current layer's transform. Inference: ``sum_l softmax(H_l H_{l,V}^T)``.
- ``sf-top-input``: top-to-input signals, every layer updated every epoch (alternating even /
  odd layers), inference with a fresh bottom-up pass then 10 top-down steps.
- ``sf-top-loss``: top-to-loss signals, every layer updated every epoch, gradient norm clipped
  to 1.0.
"""
from __future__ import annotations

import warnings

import torch

from .. import ops
from ..ops.sf import sf_loss_grad_kernel
from ..nn.functional import normalize_rows
from ..nn.gat import FFGATConv
from .checkpoint import load_checkpoint, optimizer_state_to, save_checkpoint
from .common import (accuracy, augment_with_virtual_nodes, build_layer, rng_state, seed_everything,
                     set_rng_state)
from .early_stopping import EarlyStopping
from .greedy import train_layer
from .progress import Progress
from .registry import TrainConfig, register_algorithm

SF_MODELS = ("gcn", "sage", "gat")


def _run_description(config: TrainConfig) -> dict:
    return {k: getattr(config, k) for k in ("dataset", "model", "algo", "layers", "hidden", "split", "seed",
                                             "lr", "weight_decay", "epochs", "val_every", "patience")}


def _check_model(config: TrainConfig):
    if config.model not in SF_MODELS:
        raise ValueError(f"model must be one of {list(SF_MODELS)} for algo {config.algo!r}, got {config.model!r}")


class SFProblem:
    """The augmented graph and the index sets of one SF run, built once.

    Attributes: ``vg`` (:class:`~ffkernels.train.common.VirtualGraph`), ``train_idx``, ``y_train``,
    ``val_idx``, ``test_idx``, ``num_classes``, ``step_rows`` = ``cat(train_idx, virtual_idx)``,
    ``val_rows`` = ``cat(val_idx, virtual_idx)`` and the local index sets into those gathers.
    """

    def __init__(self, data, seed: int):
        dev = data.x.device
        self.num_classes = data.num_classes
        self.y = data.y
        self.train_idx, self.val_idx, self.test_idx = data.train_idx, data.val_idx, data.test_idx
        self.y_train = data.y[data.train_idx]
        self.vg = augment_with_virtual_nodes(data.x, data.edge_index, data.train_idx, self.y_train,
                                             data.num_classes, seed=seed)
        self.virtual_idx = self.vg.virtual_idx
        n_train, c = self.train_idx.numel(), self.num_classes
        self.step_rows = torch.cat([self.train_idx, self.virtual_idx])
        self.val_rows = torch.cat([self.val_idx, self.virtual_idx])
        self.local_train = torch.arange(n_train, device=dev)
        self.local_virtual = torch.arange(n_train, n_train + c, device=dev)
        self.num_real = self.vg.num_real
        # validate the index sets once with the public op; steps then call its unchecked core
        ops.sf_loss_grad(torch.zeros(n_train + c, 1, device=dev), self.local_train, self.y_train, self.local_virtual)

    def class_probs(self, h: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
        """``softmax(H_real H_V^T / tau)`` ``[N, C]`` (SF inference for one layer)."""
        return torch.softmax(ops.sf_logits(h, self.virtual_idx, tau, None)[: self.num_real], dim=1)


class RowsOperand:
    """A gathered block ``M`` ``[R, Fin]`` of a layer's prepared input, in the cheapest exact form.

    ``dense``: ``M`` itself. ``sparse``: ``M = S + sum_b Cm_b XV`` (per column block ``b``) where
    ``S`` (CSR, with its transpose) is the aggregation of the real nodes' sparse features and the
    rank-``C`` term carries the virtual nodes' dense random features ``XV`` ``[C, F]`` through the
    coefficients ``Cm_b`` ``[R, C]`` (the aggregation is linear in the normalised input). On
    Cora-ML's first layer ``S`` is about 8% dense, so the step costs a third of the dense GEMMs.
    """

    def __init__(self, dense=None, sparse=None, sparse_t=None, coef=None, xv=None, blocks=1):
        self.dense, self.sparse, self.sparse_t, self.coef, self.xv, self.blocks = dense, sparse, sparse_t, coef, xv, blocks

    @property
    def num_rows(self) -> int:
        return self.dense.shape[0] if self.dense is not None else self.sparse.shape[0]

    def matmul_wt(self, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``M W^T + b``."""
        if self.dense is not None:
            return torch.addmm(bias, self.dense, weight.t()) if bias is not None else self.dense @ weight.t()
        z = self.sparse @ weight.t().contiguous()
        f = self.xv.shape[1]
        for b in range(self.blocks):
            c = self.coef[:, b * self.xv.shape[0]:(b + 1) * self.xv.shape[0]]
            z.addmm_(c, self.xv @ weight[:, b * f:(b + 1) * f].t())
        if bias is not None:
            z += bias
        return z

    def grad_weight(self, grad_z: torch.Tensor) -> torch.Tensor:
        """``grad_z^T M`` ``[Dout, Fin]``."""
        if self.dense is not None:
            return grad_z.t() @ self.dense
        if self.sparse_t is None:  # built on first use: only the step rows need it
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                self.sparse_t = self.sparse.t().to_sparse_csr()
        gw = (self.sparse_t @ grad_z).t().contiguous()
        f, c = self.xv.shape[1], self.xv.shape[0]
        for b in range(self.blocks):
            gw[:, b * f:(b + 1) * f].addmm_(grad_z.t() @ self.coef[:, b * c:(b + 1) * c], self.xv)
        return gw


SPARSE_DENSITY = 0.3  # below this fraction of non-zeros the sparse + low-rank form is used


def _density(x: torch.Tensor) -> float:
    return float(torch.count_nonzero(x)) / max(x.numel(), 1)


def _prepare_unnormalized(layer, x, graph):
    saved = layer.normalize
    layer.normalize = None
    try:
        return layer.prepare(x, graph)
    finally:
        layer.normalize = saved


@torch.no_grad()
def make_row_operands(layer, h_in: torch.Tensor, problem: "SFProblem", row_sets, allow_sparse: bool = True,
                      consume_input: bool = False):
    """:class:`RowsOperand` for each index set in ``row_sets`` of ``layer.prepare(h_in)``.

    The sparse form is used when the layer's prepare is linear in the normalised input (GCN,
    SAGE) and the real nodes' aggregated features are sparse; else the dense gathered rows.
    A ``None`` entry in ``row_sets`` means all rows (the dense form is then the prepared input
    itself, not a copy). ``consume_input=True`` lets the dense form normalise ``h_in`` in
    place: a frozen layer's cached output is needed only to build the next layer's input, so
    greedy training holds one ``[N, D]`` activation less and its peak does not grow with depth.
    """
    graph, virtual_idx = problem.vg.graph, problem.virtual_idx
    blocks = layer.weight.shape[1] // h_in.shape[1]
    # Aggregation only adds non-zeros, so a dense input (e.g. a post-ReLU hidden layer) is not
    # probed: the probe holds three input-sized temporaries.
    if (allow_sparse and blocks * h_in.shape[1] == layer.weight.shape[1]
            and _density(h_in) < SPARSE_DENSITY):
        row_sets_sparse = [torch.arange(h_in.shape[0], device=h_in.device) if rows is None else rows
                           for rows in row_sets]
        real = normalize_rows(h_in, layer.normalize)
        if real is h_in:  # no normalisation: do not zero the caller's rows
            real = real.clone()
        xv = real.index_select(0, virtual_idx)
        real[virtual_idx] = 0
        s_full = _prepare_unnormalized(layer, real, graph)
        del real
        if _density(s_full) < SPARSE_DENSITY:
            indicator = torch.zeros(h_in.shape[0], virtual_idx.numel(), dtype=h_in.dtype, device=h_in.device)
            indicator[virtual_idx, torch.arange(virtual_idx.numel(), device=h_in.device)] = 1.0
            coef_full = _prepare_unnormalized(layer, indicator, graph)
            out = []
            with warnings.catch_warnings():  # "sparse CSR support is in beta"
                warnings.simplefilter("ignore", UserWarning)
                sparse_rows = [s_full.index_select(0, rows).to_sparse_csr() for rows in row_sets_sparse]
            del s_full
            for rows, csr in zip(row_sets_sparse, sparse_rows):
                out.append(RowsOperand(sparse=csr,
                                       coef=coef_full.index_select(0, rows).contiguous(), xv=xv, blocks=blocks))
            return out
        del s_full
    if consume_input:
        prepared = _prepare_unnormalized(layer, normalize_rows(h_in, layer.normalize, inplace=True), graph)
    else:
        prepared = layer.prepare(h_in, graph)
    return [RowsOperand(dense=prepared if rows is None else prepared.index_select(0, rows).contiguous())
            for rows in row_sets]


class _LinearStepper:
    """SF steps for a GCN/SAGE layer on its cached prepared input (gathered rows only)."""

    def __init__(self, layer, h_in: torch.Tensor, problem: "SFProblem", tau: float, consume_input: bool = False):
        self.layer, self.problem, self.tau = layer, problem, tau
        self.step_input, self.val_input, self.full = make_row_operands(
            layer, h_in, problem, (problem.step_rows, problem.val_rows, None), consume_input=consume_input)
        self.nv = problem.val_idx.numel()

    @torch.no_grad()
    def step(self) -> float:
        layer, p = self.layer, self.problem
        h = self.step_input.matmul_wt(layer.weight, layer.bias).relu_()
        loss, grad_rows = sf_loss_grad_kernel(h, p.local_train, p.y_train, p.local_virtual, self.tau)
        grad_z = grad_rows.mul_(h > 0)
        grads = {"weight": self.step_input.grad_weight(grad_z),
                 "bias": grad_z.sum(0) if layer.bias is not None else None}
        layer.apply_gradients(grads)
        return float(loss)

    @torch.no_grad()
    def val_probs(self) -> torch.Tensor:
        h = self.val_input.matmul_wt(self.layer.weight, self.layer.bias).relu_()
        return torch.softmax(h[: self.nv] @ h[self.nv:].t() / self.tau, dim=1)

    @torch.no_grad()
    def output(self) -> torch.Tensor:
        return self.full.matmul_wt(self.layer.weight, self.layer.bias).relu_()


class _GATStepper:
    """SF steps for a GAT layer: the attention couples every row, so the forward is full."""

    def __init__(self, layer, prepared: torch.Tensor, problem: SFProblem, tau: float):
        self.layer, self.problem, self.tau = layer, problem, tau
        self.full = prepared

    def _objective(self, h):
        p = self.problem
        return ops.sf_loss_grad(h, p.train_idx, p.y_train, p.virtual_idx, self.tau, dense=True)

    @torch.no_grad()
    def step(self) -> float:
        loss, _, grads = self.layer.gradients(self.full, self.problem.vg.graph, self._objective)
        self.layer.apply_gradients(grads)
        return float(loss)

    @torch.no_grad()
    def val_probs(self) -> torch.Tensor:
        h = self.output()
        p = self.problem
        return torch.softmax(ops.sf_logits(h, p.virtual_idx, self.tau, p.val_idx), dim=1)

    @torch.no_grad()
    def output(self) -> torch.Tensor:
        return self.layer.transform(self.full, self.problem.vg.graph)


def _stepper(layer, h_in, problem, tau, consume_input=False):
    if isinstance(layer, FFGATConv):
        return _GATStepper(layer, layer.prepare(h_in, problem.vg.graph), problem, tau)
    return _LinearStepper(layer, h_in, problem, tau, consume_input)


def build_sf_layers(config: TrainConfig, in_features: int) -> list:
    """``config.layers`` layers of ``config.model`` (``in -> hidden -> ... -> hidden``), each
    with its own Adam (``config.lr``, ``config.weight_decay``), on ``config.device``."""
    dims = [in_features] + [config.hidden] * config.layers
    return [build_layer(config.model, dims[i], dims[i + 1], lr=config.lr, weight_decay=config.weight_decay)
            .to(config.device) for i in range(config.layers)]


# ---------------------------------------------------------------------------- greedy SF
class GreedySF:
    """Greedy layer-wise SF training (``algo="sf"``); see the module docstring.

    ``run()`` returns the registry's result dict. ``config.extra`` keys: ``tau`` (1.0),
    ``val_mode`` (``"cumulative"``: a layer's early stopping scores the sum of the softmaxes
    of the layers so far, as at inference; ``"layer"``: the layer's own softmax only).
    """

    def __init__(self, config: TrainConfig, data, progress: Progress | None = None):
        _check_model(config)
        if data.graph is None:
            raise ValueError(f"dataset {data.name!r} has no graph; algo {config.algo!r} needs a graph dataset")
        self.config = config
        self.progress = progress or Progress(enabled=False)
        self.tau = float(config.extra.get("tau", 1.0))
        self.val_mode = config.extra.get("val_mode", "cumulative")
        if self.val_mode not in ("cumulative", "layer"):
            raise ValueError(f"extra['val_mode'] must be 'cumulative' or 'layer', got {self.val_mode!r}")
        seed_everything(config.seed)
        self.data = data
        self.problem = SFProblem(data, config.seed)
        self.layers = build_sf_layers(config, data.num_features)
        self.total_epochs = 0

    # -- checkpoints
    def _save(self, layer_index, epoch, stopper, epochs_per_layer, done=False):
        cfg = self.config
        layer = self.layers[layer_index] if layer_index < len(self.layers) else None
        state = {
            "algo": cfg.algo, "run": _run_description(cfg), "layer": layer_index, "epoch": epoch,
            "done": done, "total_epochs": self.total_epochs, "epochs_per_layer": list(epochs_per_layer),
            "layers": [m.state_dict() for m in self.layers],
            "optimizer": layer.optimizer.state_dict() if layer is not None else None,
            "stopper": stopper.state_dict() if stopper is not None else None,
            "rng": rng_state(),
        }
        save_checkpoint(cfg.save, state)

    def run(self) -> dict:
        cfg, p = self.config, self.problem
        start_layer, start_epoch, stopper_state, opt_state, epochs_per_layer = 0, 1, None, None, []
        if cfg.resume:
            ckpt = load_checkpoint(cfg.resume, cfg.algo, {k: v for k, v in _run_description(cfg).items()
                                                           if k not in ("epochs",)})
            for m, sd in zip(self.layers, ckpt["layers"]):
                m.load_state_dict(sd)
            start_layer, start_epoch = ckpt["layer"], ckpt["epoch"] + 1
            stopper_state, opt_state = ckpt["stopper"], ckpt["optimizer"]
            epochs_per_layer = list(ckpt["epochs_per_layer"])
            self.total_epochs = ckpt["total_epochs"]
            set_rng_state(ckpt["rng"])

        h = p.vg.x
        probs_sum = torch.zeros(p.num_real, p.num_classes, device=h.device)
        val_sum = torch.zeros(p.val_idx.numel(), p.num_classes, device=h.device)
        stopped = False
        for index, layer in enumerate(self.layers):
            # Layer 1 reads the dataset's features (kept); a deeper layer's input is the frozen
            # output below it, consumed here so that it is not held while this layer trains.
            stepper = _stepper(layer, h, p, self.tau, consume_input=index > 0)
            h = None
            if index < start_layer:  # frozen before the checkpoint: recompute its cached output only
                h = stepper.output()
            else:
                stopper = EarlyStopping(cfg.patience)
                first_epoch = 1
                if index == start_layer and cfg.resume:
                    if stopper_state is not None:
                        stopper.load_state_dict(stopper_state)
                    if opt_state is not None:
                        layer.optimizer.load_state_dict(optimizer_state_to(opt_state, p.vg.x.device))
                    first_epoch = start_epoch

                prev = val_sum if self.val_mode == "cumulative" else None

                def validate(stepper=stepper, prev=prev):
                    probs = stepper.val_probs()
                    if prev is not None:
                        probs = probs + prev
                    return accuracy(probs, p.y[p.val_idx])

                interrupted = []

                def on_epoch_end(epoch, stopper, index=index):
                    self.total_epochs += 1
                    if cfg.stop_after_epochs is not None and self.total_epochs >= cfg.stop_after_epochs:
                        if cfg.save:
                            self._save(index, epoch, stopper, epochs_per_layer)
                        interrupted.append(epoch)
                        return True
                    return False

                if first_epoch > 1 and (stopper.bad_validations >= cfg.patience or first_epoch > cfg.epochs):
                    # the checkpoint was taken on this layer's last epoch: only the restore is left
                    stopper.restore(layer)
                    epochs_done = first_epoch - 1
                else:
                    report = train_layer(lambda epoch, s=stepper: s.step(), validate, layer, epochs=cfg.epochs,
                                         val_every=cfg.val_every, patience=cfg.patience, progress=self.progress,
                                         label=f"layer {index + 1}/{len(self.layers)}", start_epoch=first_epoch,
                                         stopper=stopper, on_epoch_end=on_epoch_end)
                    if interrupted:
                        stopped = True
                        self.progress.close()
                        break
                    epochs_done = report.epochs
                epochs_per_layer.append(epochs_done)
                h = stepper.output()
            probs_layer = p.class_probs(h, self.tau)
            probs_sum += probs_layer
            val_sum += probs_layer[p.val_idx]
            stepper = validate = None  # the closure holds the stepper (its prepared input) too
        result = {"epochs_per_layer": epochs_per_layer, "stopped": stopped,
                  "total_epochs": self.total_epochs}
        if stopped:
            result.update(val_accuracy=float("nan"), test_accuracy=float("nan"))
            return result
        if cfg.save:
            self._save(len(self.layers), 0, None, epochs_per_layer, done=True)
        result.update(val_accuracy=accuracy(probs_sum, p.y, p.val_idx),
                      test_accuracy=accuracy(probs_sum, p.y, p.test_idx),
                      train_accuracy=accuracy(probs_sum, p.y, p.train_idx))
        self.probs = probs_sum
        return result


@register_algorithm("sf", task="node", models=SF_MODELS,
                    description="single-forward with virtual nodes, greedy layer-wise (ForwardGNN)")
def run_sf(config: TrainConfig, data, progress: Progress) -> dict:
    return GreedySF(config, data, progress).run()


# ---------------------------------------------------------------------------- top-down SF
class TopDownSF:
    """SF with top-down signals, simultaneous schedule (ALGORITHMS.md 1.5).

    ``mode="input"`` (top-to-input, GCN): layer ``j`` reads ``[n(s_j) || n(s_{j+2})]`` and writes
    ``s_{j+1}``; ``s_{L+1}`` is the label state (one-hot for training and virtual nodes, uniform
    elsewhere). Each epoch updates even layers first, then odd layers on the fresh even outputs.
    Inference: a fresh bottom-up pass (zero top-down input) then 10 state updates, summing every
    layer's SF softmax over steps 2..9.

    ``mode="loss"`` (top-to-loss, GCN/SAGE): a bottom-up pass, then layer ``j`` minimises the SF
    loss of ``mean(h_j, n(h_{j+1}), ..., n(h_{L-1}))`` (only ``h_j`` carries gradient), with the
    layer's gradient norm clipped to ``config.extra["clip"]`` (1.0). Inference as greedy SF.

    The first layer's aggregation of the fixed input is cached (sparse + low-rank form);
    validation scores the current states' per-layer SF softmax on the validation rows.
    Checkpoints hold the states too, so a resumed run is exact.
    """

    def __init__(self, config: TrainConfig, data, progress: Progress | None, mode: str):
        models = ("gcn",) if mode == "input" else ("gcn", "sage")
        if config.model not in models:
            raise ValueError(f"model must be one of {list(models)} for algo {config.algo!r}, got {config.model!r}")
        if data.graph is None:
            raise ValueError(f"dataset {data.name!r} has no graph; algo {config.algo!r} needs a graph dataset")
        self.config, self.mode = config, mode
        self.progress = progress or Progress(enabled=False)
        self.tau = float(config.extra.get("tau", 1.0))
        self.clip = float(config.extra.get("clip", 1.0)) if mode == "loss" else None
        seed_everything(config.seed)
        self.problem = p = SFProblem(data, config.seed)
        c, f, hid, num_layers = p.num_classes, data.num_features, config.hidden, config.layers
        self.num_layers = num_layers
        if mode == "input":
            top = [hid] * (num_layers - 1) + [c]   # width of s_{j+2}
            self.layers = torch.nn.ModuleList(
                build_layer(config.model, (f if j == 0 else hid) + top[j], hid, lr=config.lr,
                            weight_decay=config.weight_decay, normalize=None).to(config.device)
                for j in range(num_layers))
            self.top_width = top
        else:
            self.layers = torch.nn.ModuleList(build_sf_layers(config, f))
        # the first layer's constant bottom input, in its cheapest exact form
        shadow = build_layer(config.model, f, hid)
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
        for t in range(10):
            _, states = self.epoch(states, train=False)
            if t >= 2:
                total = total + self._probs(states, real)
        return total

    def _save(self, epoch, stopper, states):
        cfg = self.config
        save_checkpoint(cfg.save, {
            "algo": cfg.algo, "run": _run_description(cfg), "epoch": epoch, "layers": self.layers.state_dict(),
            "optimizers": [m.optimizer.state_dict() for m in self.layers], "stopper": stopper.state_dict(),
            "states": [None if s is None else s.cpu() for s in states], "rng": rng_state()})

    def run(self) -> dict:
        cfg, p = self.config, self.problem
        stopper = EarlyStopping(cfg.patience)
        start_epoch, total = 1, 0
        if cfg.resume:
            ckpt = load_checkpoint(cfg.resume, cfg.algo, {k: v for k, v in _run_description(cfg).items()
                                                           if k != "epochs"})
            self.layers.load_state_dict(ckpt["layers"])
            for m, st in zip(self.layers, ckpt["optimizers"]):
                m.optimizer.load_state_dict(optimizer_state_to(st, p.vg.x.device))
            stopper.load_state_dict(ckpt["stopper"])
            states = [None if s is None else s.to(p.vg.x.device) for s in ckpt["states"]]
            start_epoch = total = ckpt["epoch"]
            start_epoch += 1
            set_rng_state(ckpt["rng"])
        else:
            states = self.bottom_up()
        holder = {"states": states}
        interrupted = []

        def step(epoch):
            loss, holder["states"] = self.epoch(holder["states"])
            return loss

        def validate():
            return accuracy(self._probs(holder["states"], p.val_idx), p.y[p.val_idx])

        def on_epoch_end(epoch, stopper):
            nonlocal total
            total += 1
            if cfg.stop_after_epochs is not None and total >= cfg.stop_after_epochs:
                if cfg.save:
                    self._save(epoch, stopper, holder["states"])
                interrupted.append(epoch)
                return True
            return False

        report = train_layer(step, validate, self.layers, epochs=cfg.epochs, val_every=cfg.val_every,
                             patience=cfg.patience, progress=self.progress, label=cfg.algo, start_epoch=start_epoch,
                             stopper=stopper, on_epoch_end=on_epoch_end)
        if interrupted:
            self.progress.close()
            return {"epochs_per_layer": [report.epochs] * self.num_layers, "total_epochs": total, "stopped": True,
                    "val_accuracy": float("nan"), "test_accuracy": float("nan")}
        probs = self.predict()
        return {"epochs_per_layer": [report.epochs] * self.num_layers, "total_epochs": report.epochs,
                "stopped": False, "val_accuracy": accuracy(probs, p.y, p.val_idx),
                "test_accuracy": accuracy(probs, p.y, p.test_idx), "train_accuracy": accuracy(probs, p.y, p.train_idx)}


@register_algorithm("sf-top-input", task="node", models=("gcn",),
                    description="SF with top-to-input signals, simultaneous, alternating even/odd updates (ForwardGNN)")
def run_sf_top_input(config: TrainConfig, data, progress: Progress) -> dict:
    return TopDownSF(config, data, progress, "input").run()


@register_algorithm("sf-top-loss", task="node", models=("gcn", "sage"),
                    description="SF with top-to-loss signals, simultaneous, gradient-norm clip 1.0 (ForwardGNN)")
def run_sf_top_loss(config: TrainConfig, data, progress: Progress) -> dict:
    return TopDownSF(config, data, progress, "loss").run()
