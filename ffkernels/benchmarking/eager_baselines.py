"""Eager PyTorch baselines, written the way published forward-learning code is written.

These are the implementations a user would otherwise run, kept here as *our own* baseline
code so that the fused path (``ffkernels.train``) is compared with them on the same data,
architecture, hyperparameters and seed. They deliberately keep the habits of the published
reference code (ForwardGNN, Hinton-FF re-implementations), because those habits are what
makes them slow and memory hungry:

- autograd for every layer's local loss (``loss.backward()`` + ``optimizer.step()``);
- PyG-style message passing: gather ``h[src]`` (an ``[E, F]`` message tensor), scale by the
  GCN norm, scatter with ``index_add_``; the GCN normalisation (self loops, degrees, edge
  weights) is recomputed at every forward, as ``GCNConv(cached=False)`` does;
- the input row normalisation recomputed at every step;
- evaluation re-runs every lower layer from the raw features.

Every runner follows the registry contract of ``ffkernels.train``:
``runner(config: BenchConfig, data: Dataset, progress) -> dict`` with ``val_accuracy``,
``test_accuracy`` and ``epochs_per_layer``.

- :func:`run_sf_eager`: single-forward loss with virtual nodes, greedy (docs/algorithms.md#sf);
- :func:`run_ff_la_eager`: FF with label appending, greedy (1.6, loss 1.1);
- :func:`run_ff_mlp_eager`: Hinton's supervised FF for MLPs, simultaneous (1.8);
- :func:`run_fg_eager` / :func:`run_fg_local_eager` / :func:`run_fg_guess_eager`: forward
  gradients for MLPs (docs/algorithms.md#fg, #fg-local, #fg-guess) with ``torch.func.jvp`` over
  ``torch.func.functional_call`` of an ``nn.Linear`` MLP (forward-mode AD as PyTorch users write
  it: ``g . v`` without a backward pass); fg-guess's guesses and the heads' gradients by autograd;
- :func:`run_dfa_eager` / :func:`run_dfa_graph_eager`: direct feedback alignment
  (docs/algorithms.md#dfa, #dfa-graph): autograd for the output error only, every hidden layer
  backpropagates the fixed random projection ``E B_l`` from its own output (its input detached);
  the graph version with :class:`EagerGCNConv` layers;
- :func:`run_bp_gcn` / :func:`run_bp_mlp`: backpropagation, same architecture plus a linear
  classifier (PyG ``GCNConv`` layers when torch_geometric imports, else :class:`EagerGCNConv`).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..algorithms.common import augment_with_virtual_nodes
from ..train.metrics import accuracy
from ..algorithms.mlp_common import (fit_val_rows, make_generator, minibatches, uniform_wrong_labels,
                                      validation_split, with_label)


def seed_everything(seed: int) -> None:
    """Seed torch's global generator, as the published scripts do (each baseline runs alone in
    its own benchmark process)."""
    torch.manual_seed(seed)

__all__ = ["gcn_norm", "l2_normalize", "rms_normalize", "EagerGCNConv", "EagerLinear", "sf_loss",
           "ff_loss", "label_append_inputs", "run_sf_eager", "run_ff_la_eager", "run_ff_mlp_eager",
           "EagerMLP", "fg_directional_derivative", "fg_global_grads", "fg_local_grads", "fg_guess_grads",
           "run_fg_eager", "run_fg_local_eager", "run_fg_guess_eager", "dfa_feedback", "dfa_feedback_blocks",
           "dfa_mlp_backward", "EagerDFAGCN", "dfa_gcn_backward", "run_dfa_eager", "run_dfa_graph_eager",
           "run_bp_gcn", "run_bp_mlp", "pyg_available", "EAGER_RUNNERS", "BP_RUNNERS"]


# --------------------------------------------------------------------------- building blocks
def l2_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """ForwardGNN's input normalisation, recomputed at every step."""
    return x / (x.norm(p=2, dim=1, keepdim=True) + eps)


def rms_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Hinton's input normalisation."""
    return x / (x.pow(2).mean(dim=1, keepdim=True).sqrt() + eps)


def gcn_norm(edge_index: torch.Tensor, num_nodes: int):
    """PyG's ``gcn_norm`` (add self loops, symmetric degree scaling), recomputed per call.

    Returns ``(edge_index_with_loops [2, E + N], norm [E + N])``.
    """
    loops = torch.arange(num_nodes, device=edge_index.device)
    ei = torch.cat([edge_index, torch.stack([loops, loops])], dim=1)
    src, dst = ei[0], ei[1]
    deg = torch.zeros(num_nodes, device=edge_index.device).scatter_add_(
        0, dst, torch.ones(dst.numel(), device=edge_index.device))
    dis = deg.pow(-0.5)
    dis.masked_fill_(torch.isinf(dis), 0.0)
    return ei, dis[src] * dis[dst]


class EagerGCNConv(nn.Module):
    """``GCNConv`` the PyG way: ``out = scatter_add(norm * (x W)[src], dst) + b``.

    Transform first, then gather an ``[E, F_out]`` message tensor and scatter it with
    ``index_add_``; the normalisation is recomputed at every forward (``cached=False``).
    Mathematically ``Agg_gcn(x) W^T + b``, the fused ``FFGCNConv``'s pre-activation.
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        ei, norm = gcn_norm(edge_index, n)
        h = self.lin(x)
        msg = h.index_select(0, ei[0]) * norm.unsqueeze(1)
        out = torch.zeros(n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, ei[1], msg)
        return out + self.bias


class EagerLinear(nn.Module):
    """An MLP layer: ``nn.Linear`` (the FF MLP baselines)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.lin = nn.Linear(in_features, out_features)

    def forward(self, x, edge_index=None):
        return self.lin(x)


def sf_loss(h: torch.Tensor, train_idx: torch.Tensor, virtual_idx: torch.Tensor, y_train: torch.Tensor,
            tau: float = 1.0) -> torch.Tensor:
    """ForwardGNN's single-forward loss: CE over ``<H_i, H_v_c> / tau`` for training rows."""
    logits = h[train_idx] @ h[virtual_idx].t() / tau
    return F.cross_entropy(logits, y_train)


def ff_loss(g_pos: torch.Tensor, g_neg: torch.Tensor, theta: float, temperature: float = 1.0) -> torch.Tensor:
    """FF loss: ``mean_pos softplus(-(G - theta)/T) + mean_neg softplus((G - theta)/T)``."""
    total = g_pos.new_zeros(())
    if g_pos.numel():
        total = total + F.softplus(-(g_pos - theta) / temperature).mean()
    if g_neg.numel():
        total = total + F.softplus((g_neg - theta) / temperature).mean()
    return total


def pyg_available() -> bool:
    try:
        from torch_geometric.nn import GCNConv  # noqa: F401
        return True
    except Exception:  # not installed, or a broken install: use our own layer
        return False


class _Stopper:
    """Early stopping the way the reference does it (best state deep-copied, patience in validations)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.best = -1.0
        self.best_state = None
        self.bad = 0

    def step(self, score: float, module) -> bool:
        if score > self.best:
            self.best, self.best_state, self.bad = score, copy.deepcopy(module.state_dict()), 0
        else:
            self.bad += 1
        return self.bad >= self.patience

    def restore(self, module) -> None:
        if self.best_state is not None:
            module.load_state_dict(self.best_state)


def _report(progress, label, epoch, total, **metrics):
    """``progress``: None (the suite's workers are silent) or ``callable(label, epoch, total, **metrics)``."""
    if progress is not None:
        progress(label, epoch, total, **metrics)


def _greedy_layer(layer, opt, step, validate, config, progress, label, on_validated=None):
    """Train one layer to its own early stop (validate every ``val_every`` epochs; then call
    ``on_validated(epoch)``, e.g. a time-to-accuracy probe)."""
    stopper = _Stopper(config.patience)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        loss = step()
        if epoch % config.val_every == 0:
            stop = stopper.step(validate(), layer)
            if on_validated is not None:
                on_validated(epoch)
            if stop:
                break
        _report(progress, label, epoch, config.epochs, loss=loss)
    if stopper.best_state is None:
        stopper.step(validate(), layer)
    stopper.restore(layer)
    return epoch, stopper.best


# --------------------------------------------------------------------------- SF (virtual nodes)
def run_sf_eager(config, data, progress=None, probe=None) -> dict:
    """Greedy SF-GCN with autograd per layer (docs/algorithms.md#sf), the reference code's way.
    ``probe``: a :class:`~ffkernels.benchmarking.time_to_accuracy.ProbeClock` that records the
    test accuracy of the layers so far after every validation."""
    if config.model != "gcn":
        raise ValueError("the eager SF baseline implements model='gcn'")
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    c = data.num_classes
    vg = augment_with_virtual_nodes(data.x, data.edge_index, data.train_idx, data.y[data.train_idx], c,
                                    seed=config.seed)
    x_raw, edge_index, virtual_idx, n = vg.x, vg.edge_index, vg.virtual_idx, vg.num_real
    train_idx, y_train = data.train_idx, data.y[data.train_idx]
    layers: list = []

    def predict(stack, idx):
        # The reference evaluates from the raw features through every layer, every time.
        with torch.no_grad():
            h, p = x_raw, 0.0
            for layer in stack:
                h = F.relu(layer(l2_normalize(h), edge_index))
                p = p + torch.softmax(h[:n] @ h[virtual_idx].t(), dim=1)
            return accuracy(p[idx].argmax(1), data.y[idx])

    x_in = x_raw
    epochs_per_layer = []
    for depth in range(config.layers):
        layer = EagerGCNConv(x_in.shape[1], config.hidden).to(device)
        opt = torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        def step():
            layer.train()
            opt.zero_grad()
            h = F.relu(layer(l2_normalize(x_in), edge_index))
            loss = sf_loss(h, train_idx, virtual_idx, y_train)
            loss.backward()
            opt.step()
            return loss.item()

        on_validated = None
        if probe is not None:
            done = sum(epochs_per_layer)
            on_validated = lambda epoch, stack=layers + [layer]: probe.record(  # noqa: E731
                lambda: predict(stack, data.test_idx), done + epoch)
        epochs, _ = _greedy_layer(layer, opt, step, lambda: predict(layers + [layer], data.val_idx), config,
                                  progress, f"eager-sf layer {depth + 1}", on_validated)
        epochs_per_layer.append(epochs)
        layers.append(layer)
        with torch.no_grad():
            x_in = F.relu(layer(l2_normalize(x_in), edge_index))
    return {"val_accuracy": predict(layers, data.val_idx), "test_accuracy": predict(layers, data.test_idx),
            "epochs_per_layer": epochs_per_layer}


# --------------------------------------------------------------------------- FF label appending
def label_append_inputs(x: torch.Tensor, y: torch.Tensor, train_idx: torch.Tensor, num_classes: int,
                        seed: int = 0):
    """FF-LA inputs (docs/algorithms.md#ff-la): the positive stream and ``C - 1`` negative streams.

    Positive: ``x || onehot(y)`` for training nodes, ``x || 1/C`` for the others. Negative copy
    ``k``: training node ``i`` appends its ``k``-th wrong class (a per-node permutation of the
    wrong classes, drawn once with ``seed``); the others keep ``1/C``.
    """
    n, c = x.shape[0], num_classes
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    lab = torch.full((n, c), 1.0 / c, dtype=x.dtype, device=x.device)
    pos_lab = lab.clone()
    pos_lab[train_idx] = F.one_hot(y[train_idx], c).to(x.dtype)
    # Per training node, a random ordering of the C - 1 wrong classes: (y + 1 + perm) mod C.
    offsets = torch.argsort(torch.rand(train_idx.numel(), c - 1, generator=gen), dim=1).to(x.device) + 1
    wrong = (y[train_idx].unsqueeze(1) + offsets) % c
    negatives = []
    for k in range(c - 1):
        neg_lab = lab.clone()
        neg_lab[train_idx] = F.one_hot(wrong[:, k], c).to(x.dtype)
        negatives.append(torch.cat([x, neg_lab], dim=1))
    return torch.cat([x, pos_lab], dim=1), negatives


def run_ff_la_eager(config, data, progress=None) -> dict:
    """Greedy FF-LA GCN with autograd per layer: each stream its own pass, C eval passes each time."""
    if config.model != "gcn":
        raise ValueError("the eager FF-LA baseline implements model='gcn'")
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    c, theta = data.num_classes, (2.0 if config.theta is None else float(config.theta))
    edge_index, train_idx, y = data.edge_index, data.train_idx, data.y
    x_pos, x_negs = label_append_inputs(data.x, y, train_idx, c, config.seed)
    layers: list = []

    def predict(stack, idx):
        # Labelled nodes keep their true label (training nodes for validation, training and
        # validation nodes for test, as the reference); every other node is given class c.
        known = train_idx if idx is data.val_idx else torch.cat([train_idx, data.val_idx])
        with torch.no_grad():
            scores = []
            for cls in range(c):  # one full pass per candidate label, from the raw features
                lab = F.one_hot(torch.full((data.num_nodes,), cls, device=device), c).to(data.x.dtype)
                lab[known] = F.one_hot(y[known], c).to(data.x.dtype)
                h, s = torch.cat([data.x, lab], dim=1), 0.0
                for layer in stack:
                    h = F.relu(layer(l2_normalize(h), edge_index))
                    s = s + (h.pow(2).mean(dim=1) - theta)
                scores.append(s)
            return accuracy(torch.stack(scores, 1)[idx].argmax(1), y[idx])

    epochs_per_layer = []
    for depth in range(config.layers):
        layer = EagerGCNConv(x_pos.shape[1], config.hidden).to(device)
        opt = torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)

        def step():
            layer.train()
            opt.zero_grad()
            h_pos = F.relu(layer(l2_normalize(x_pos), edge_index))
            g_pos = h_pos[train_idx].pow(2).sum(dim=1)
            g_neg = torch.cat([F.relu(layer(l2_normalize(xn), edge_index))[train_idx].pow(2).sum(dim=1)
                               for xn in x_negs])
            loss = ff_loss(g_pos, g_neg, theta)
            loss.backward()
            opt.step()
            return loss.item()

        epochs, _ = _greedy_layer(layer, opt, step, lambda: predict(layers + [layer], data.val_idx), config,
                                  progress, f"eager-ff-la layer {depth + 1}")
        epochs_per_layer.append(epochs)
        layers.append(layer)
        with torch.no_grad():
            x_pos = F.relu(layer(l2_normalize(x_pos), edge_index))
            x_negs = [F.relu(layer(l2_normalize(xn), edge_index)) for xn in x_negs]
    return {"val_accuracy": predict(layers, data.val_idx), "test_accuracy": predict(layers, data.test_idx),
            "epochs_per_layer": epochs_per_layer}


# --------------------------------------------------------------------------- Hinton FF (MLP)
def run_ff_mlp_eager(config, data, progress=None) -> dict:
    """Hinton's supervised FF (docs/algorithms.md#ff): all layers step on every mini-batch.

    Label one-hot prepended (``with_label``), uniform wrong-label negatives redrawn per batch,
    rms input normalisation, summed goodness, ``theta = hidden``; goodness-mode inference with
    one full pass per label, summing layers 2..L (layer 1 too when it is the only one).
    """
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    c, hidden = data.num_classes, config.hidden
    theta = float(hidden) if config.theta is None else float(config.theta)
    if data.val_idx.numel():
        fit_idx, val_idx = data.train_idx, data.val_idx
    else:
        fit_idx, val_idx = validation_split(data.train_idx)
    gen = make_generator(config.seed)
    dims = [data.num_features + c] + [hidden] * config.layers
    layers = [EagerLinear(dims[i], dims[i + 1]).to(device) for i in range(config.layers)]
    opts = [torch.optim.Adam(layer.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            for layer in layers]
    model = nn.ModuleList(layers)

    def predict(idx):
        with torch.no_grad():
            x = data.x[idx]
            first = 1 if len(layers) > 1 else 0
            scores = []
            for cls in range(c):  # one full pass per label
                h, s = with_label(x, torch.full((x.shape[0],), cls, device=device), c), 0.0
                for i, layer in enumerate(layers):
                    h = F.relu(layer(rms_normalize(h)))
                    if i >= first:
                        s = s + h.pow(2).sum(dim=1)
                scores.append(s)
            return accuracy(torch.stack(scores, 1).argmax(1), data.y[idx])

    stopper = _Stopper(config.patience)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        loss_sum = 0.0
        for batch in minibatches(fit_idx.numel(), config.batch_size, gen, device):
            rows = fit_idx[batch]
            x, yb = data.x[rows], data.y[rows]
            h_pos = with_label(x, yb, c)
            h_neg = with_label(x, uniform_wrong_labels(yb, c, gen), c)
            for layer, opt in zip(layers, opts):
                opt.zero_grad()
                z_pos = F.relu(layer(rms_normalize(h_pos)))
                z_neg = F.relu(layer(rms_normalize(h_neg)))
                loss = ff_loss(z_pos.pow(2).sum(1), z_neg.pow(2).sum(1), theta)
                loss.backward()
                opt.step()
                loss_sum += loss.item()
                h_pos, h_neg = z_pos.detach(), z_neg.detach()
        if epoch % config.val_every == 0 and stopper.step(predict(val_idx), model):
            break
        _report(progress, "eager-ff-mlp", epoch, config.epochs, loss=loss_sum)
    if stopper.best_state is None:
        stopper.step(predict(val_idx), model)
    stopper.restore(model)
    return {"val_accuracy": predict(val_idx), "test_accuracy": predict(data.test_idx),
            "epochs_per_layer": [epoch] * config.layers}


# --------------------------------------------------------------------------- shared by the new MLP baselines
class EagerMLP(nn.Module):
    """A ReLU MLP with a linear output layer: ``layers`` ``nn.Linear`` layers, the output layer
    included (``layers - 1`` hidden layers of width ``hidden``), ``nn.Linear``'s initialisation.
    The network of the fused ``fg`` / ``fg-local`` / ``fg-guess`` / ``dfa`` (docs/algorithms.md#fg,
    #dfa): no input normalisation."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, layers: int):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        dims = [in_features] + [hidden] * (layers - 1) + [num_classes]
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(layers))

    @property
    def widths(self) -> list:
        return [layer.out_features for layer in self.layers[:-1]]

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The logits from layer ``start`` up (``x``: that layer's input)."""
        last = len(self.layers) - 1
        for i in range(start, last + 1):
            x = self.layers[i](x)
            if i < last:
                x = F.relu(x)
        return x


def _mlp_split(data):
    """The fused MLP algorithms' fit / validation rows (``fit_val_rows``, val_fraction 0.1)."""
    return fit_val_rows(data, 0.1)


def _simultaneous_loop(config, train_epoch, validate, module, progress, label) -> int:
    """The fused engine's simultaneous schedule: validate every ``val_every`` epochs and after the
    last one, stop after ``patience`` validations without improvement, restore the best state."""
    stopper = _Stopper(config.patience)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        loss = train_epoch()
        if (epoch % config.val_every == 0 or epoch == config.epochs) and stopper.step(validate(), module):
            break
        _report(progress, label, epoch, config.epochs, loss=loss)
    if stopper.best_state is None:
        stopper.step(validate(), module)
    stopper.restore(module)
    return epoch


def _mlp_accuracy(model, x, y) -> float:
    with torch.no_grad():
        return accuracy(model(x).argmax(1), y)


# --------------------------------------------------------------------------- forward gradients (MLP)
FG_MODES = ("global", "local", "guess")


def _detached(module: nn.Module) -> dict:
    return {name: p.detach() for name, p in module.named_parameters()}


def fg_directional_derivative(model: EagerMLP, x: torch.Tensor, y: torch.Tensor, tangent: dict):
    """``(loss, g . v)``: the mean cross-entropy and its directional derivative along ``tangent``
    (``{parameter name: v}``), by ``torch.func.jvp`` over ``functional_call`` (one forward pass in
    dual numbers, no backward)."""
    def loss_of(params):
        return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)
    with torch.no_grad():
        loss, dd = torch.func.jvp(loss_of, (_detached(model),), (tangent,))
    return loss, dd


def fg_global_grads(model: EagerMLP, x, y, tangents: list | None = None, num_tangents: int = 1):
    """``fg`` (Baydin et al.): ``(loss, {name: mean_k (g . v_k) v_k})``, ``v_k ~ N(0, I)`` over every
    parameter (``tangents``: the ``v_k`` as dicts; None: ``num_tangents`` drawn with ``randn_like``)."""
    if tangents is None:
        tangents = [{name: torch.randn_like(p) for name, p in model.named_parameters()} for _ in range(num_tangents)]
    grads, loss = None, None
    for v in tangents:
        loss, dd = fg_directional_derivative(model, x, y, v)
        est = {name: dd * t for name, t in v.items()}
        grads = est if grads is None else {name: grads[name] + est[name] for name in grads}
    return loss, {name: g / len(tangents) for name, g in grads.items()}


def _head_grads(head: nn.Linear, h: torch.Tensor, y: torch.Tensor) -> dict:
    """The exact gradient of a head's cross-entropy on a detached ``h`` (autograd)."""
    with torch.enable_grad():
        params = [head.weight, head.bias]
        gw, gb = torch.autograd.grad(F.cross_entropy(head(h.detach()), y), params)
    return {"weight": gw, "bias": gb}


def fg_local_grads(model: EagerMLP, heads: nn.ModuleList, x, y, tangents: list | None = None,
                   num_tangents: int = 1):
    """``fg-local``: every layer's forward gradient of its OWN local loss (its input detached,
    tangents of its own parameters only): hidden layer ``l``'s is ``CE(head_l(ReLU(layer_l(h))), y)``,
    the output layer's the network's cross-entropy.

    Args:
        tangents: ``[[{"weight": V_l, "bias": db_l} per layer] per draw]`` (None: drawn).

    Returns:
        ``(loss, {name: estimate}, [{"weight", "bias"} exact head gradients])``, ``loss`` the
        network's cross-entropy.
    """
    n_layers = len(model.layers)
    if tangents is None:
        tangents = [[{k: torch.randn_like(p) for k, p in layer.named_parameters()} for layer in model.layers]
                    for _ in range(num_tangents)]
    sums = [None] * n_layers
    loss, head_grads = None, []
    for draw, v_all in enumerate(tangents):
        h = x
        for i, layer in enumerate(model.layers):
            last = i == n_layers - 1
            head = None if last else heads[i]

            def local_loss(params, h_in=h, layer=layer, head=head):
                z = torch.func.functional_call(layer, params, (h_in,))
                if head is None:
                    return F.cross_entropy(z, y), z
                out = F.relu(z)
                return F.cross_entropy(torch.func.functional_call(head, _detached(head), (out,)), y), out
            with torch.no_grad():
                value, dd, h = torch.func.jvp(local_loss, (_detached(layer),), (v_all[i],), has_aux=True)
            est = {k: dd * t for k, t in v_all[i].items()}
            sums[i] = est if sums[i] is None else {k: sums[i][k] + est[k] for k in est}
            if last:
                loss = value
            elif draw == 0:
                head_grads.append(_head_grads(head, h, y))
    grads = {}
    for i, est in enumerate(sums):
        for k, g in est.items():
            grads[f"layers.{i}.{k}"] = g / len(tangents)
    return loss, grads, head_grads


def _unit(u: list) -> list:
    """``u / ||u||`` (all of ``u`` as one vector; zero stays zero)."""
    norm = torch.sqrt(sum(t.square().sum() for t in u))
    return u if float(norm) == 0.0 else [t / norm for t in u]


def fg_guess_grads(model: EagerMLP, heads: nn.ModuleList, x, y):
    """``fg-guess`` (Fournier et al.'s local guesses): layer ``l``'s guess is the gradient (autograd)
    of its local head loss with respect to its own parameters, its input detached (the output
    layer's: the network's cross-entropy), scaled to unit norm; the step is ``(g . u_l) u_l``,
    ``g . u_l`` the directional derivative of the GLOBAL loss (``torch.func.jvp`` from layer ``l``
    up, input constant).

    Returns ``(loss, {name: step}, [{"weight", "bias"} exact head gradients])``.
    """
    with torch.no_grad():
        hs = [x]  # the layers' inputs [x, h_1, ..., h_{L-1}]
        for layer in model.layers[:-1]:
            hs.append(F.relu(layer(hs[-1])))
        loss = F.cross_entropy(model.layers[-1](hs[-1]), y)
    n_layers = len(model.layers)
    grads, head_grads = {}, []
    for i, layer in enumerate(model.layers):
        with torch.enable_grad():
            z = layer(hs[i].detach())
            if i == n_layers - 1:
                u = list(torch.autograd.grad(F.cross_entropy(z, y), [layer.weight, layer.bias]))
            else:
                head = heads[i]
                g = torch.autograd.grad(F.cross_entropy(head(F.relu(z)), y),
                                        [layer.weight, layer.bias, head.weight, head.bias])
                u = list(g[:2])
                head_grads.append({"weight": g[2], "bias": g[3]})
        u_w, u_b = _unit(u)

        def global_loss(params, i=i, layer=layer):
            out = torch.func.functional_call(layer, params, (hs[i],))
            if i < n_layers - 1:
                out = model(F.relu(out), start=i + 1)
            return F.cross_entropy(out, y)
        with torch.no_grad():
            _, dd = torch.func.jvp(global_loss, (_detached(layer),), ({"weight": u_w, "bias": u_b},))
        grads[f"layers.{i}.weight"], grads[f"layers.{i}.bias"] = dd * u_w, dd * u_b
    return loss, grads, head_grads


def _set_grads(module: nn.Module, grads: dict) -> None:
    for name, p in module.named_parameters():
        p.grad = grads[name].to(p.dtype)


def run_fg_eager(config, data, progress=None, mode: str = "global") -> dict:
    """Forward gradients for a ReLU MLP (``mode``: ``global`` = fg, ``local`` = fg-local, ``guess``
    = fg-guess), the fused algorithms' hyperparameters: one estimate and one Adam step per
    mini-batch (the estimates given to Adam as ``.grad``), the heads (fg-local / fg-guess) with
    their own Adam on their exact gradients; ``config.extra``: ``tangents`` (fg / fg-local, 1),
    ``optimizer`` (``adam`` | ``sgd``) and ``momentum``."""
    if mode not in FG_MODES:
        raise ValueError(f"mode must be one of {list(FG_MODES)}, got {mode!r}")
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    c = data.num_classes
    fit_idx, val_idx = _mlp_split(data)
    x_fit, y_fit = data.x[fit_idx], data.y[fit_idx]
    model = EagerMLP(data.num_features, config.hidden, c, config.layers).to(device)
    heads = nn.ModuleList(nn.Linear(w, c) for w in model.widths).to(device) if mode != "global" else nn.ModuleList()
    extra = config.extra or {}
    k = int(extra.get("tangents", 1))

    def make_opt(params):
        params = list(params)
        if not params:
            return None
        if extra.get("optimizer", "adam") == "sgd":
            return torch.optim.SGD(params, lr=config.lr, momentum=float(extra.get("momentum", 0.9)),
                                   weight_decay=config.weight_decay)
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    opt, head_opt = make_opt(model.parameters()), make_opt(heads.parameters())
    gen = make_generator(config.seed)
    both = nn.ModuleDict({"body": model, "heads": heads})

    def train_epoch():
        losses = []
        for batch in minibatches(x_fit.shape[0], config.batch_size, gen, device):
            xb, yb = x_fit[batch], y_fit[batch]
            if mode == "global":
                loss, grads = fg_global_grads(model, xb, yb, num_tangents=k)
                head_grads = []
            elif mode == "local":
                loss, grads, head_grads = fg_local_grads(model, heads, xb, yb, num_tangents=k)
            else:
                loss, grads, head_grads = fg_guess_grads(model, heads, xb, yb)
            _set_grads(model, grads)
            opt.step()
            opt.zero_grad()
            if head_opt is not None and head_grads:
                for head, g in zip(heads, head_grads):
                    _set_grads(head, g)
                head_opt.step()
                head_opt.zero_grad()
            losses.append(float(loss))
        return sum(losses) / max(len(losses), 1)

    label = {"global": "eager-fg", "local": "eager-fg-local", "guess": "eager-fg-guess"}[mode]
    epoch = _simultaneous_loop(config, train_epoch, lambda: _mlp_accuracy(model, data.x[val_idx], data.y[val_idx]),
                               both, progress, label)
    return {"val_accuracy": _mlp_accuracy(model, data.x[val_idx], data.y[val_idx]),
            "test_accuracy": _mlp_accuracy(model, data.x[data.test_idx], data.y[data.test_idx]),
            "epochs_per_layer": [epoch] * config.layers, "epochs": epoch}


def run_fg_local_eager(config, data, progress=None) -> dict:
    """:func:`run_fg_eager` with ``mode="local"`` (fg-local)."""
    return run_fg_eager(config, data, progress, mode="local")


def run_fg_guess_eager(config, data, progress=None) -> dict:
    """:func:`run_fg_eager` with ``mode="guess"`` (fg-guess)."""
    return run_fg_eager(config, data, progress, mode="guess")


# --------------------------------------------------------------------------- direct feedback alignment
def dfa_feedback(num_classes: int, widths: list, scale: float = 1.0, device=None) -> torch.Tensor:
    """The fixed random feedback ``R = [R_1 | ... | R_{L-1}]`` ``[C, sum D_l]``, entries
    ``N(0, 1) * scale / sqrt(C)`` (docs/algorithms.md#dfa), from torch's global generator."""
    return torch.randn(num_classes, sum(widths), device=device) * (scale / math.sqrt(num_classes))


def dfa_feedback_blocks(feedback: torch.Tensor, widths: list, kind: str = "random", maps: list | None = None) -> list:
    """``[B_1, ..., B_{L-1}]``: ``R``'s blocks (``random``), or sign-concordant
    ``|R_l| * sign(W_L ... W_{l+1})`` (``sign``; ``maps`` = ``[W_2, ..., W_L]``, the current weights)."""
    blocks = list(torch.split(feedback, list(widths), dim=1)) if widths else []
    if kind == "random":
        return blocks
    if kind != "sign":
        raise ValueError(f"feedback must be 'random' or 'sign', got {kind!r}")
    with torch.no_grad():
        out, path = [None] * len(blocks), None
        for i in range(len(blocks) - 1, -1, -1):  # hidden layer i + 1's path to the output
            w = maps[i].detach()
            path = w if path is None else (path / path.abs().max().clamp_min(1e-30)) @ w  # signs kept
            out[i] = blocks[i].abs() * torch.sign(path)
    return out


def dfa_mlp_backward(model: EagerMLP, x: torch.Tensor, y: torch.Tensor, blocks: list) -> torch.Tensor:
    """One DFA step's gradients into ``.grad`` (Nøkland 2016): each layer sees its input detached;
    autograd gives the output error ``E = dL/dlogits`` and the output layer's true gradient; every
    hidden layer backpropagates ``E B_l`` from its own output (``delta_l = (E B_l) * 1[z_l > 0]``).
    Returns the mean cross-entropy."""
    h, hidden = x, []
    for layer in model.layers[:-1]:
        h = F.relu(layer(h.detach()))
        hidden.append(h)
    logits = model.layers[-1](h.detach())
    loss = F.cross_entropy(logits, y)
    (error,) = torch.autograd.grad(loss, logits, retain_graph=True)
    torch.autograd.backward([logits] + hidden, [error] + [error @ b for b in blocks])
    return loss.detach()


def run_dfa_eager(config, data, progress=None) -> dict:
    """Direct feedback alignment for a ReLU MLP (docs/algorithms.md#dfa): one Adam over the network,
    one DFA step per mini-batch; ``config.extra``: ``feedback`` (``random`` | ``sign``) and
    ``feedback_scale`` (1.0)."""
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    extra = config.extra or {}
    kind = extra.get("feedback", "random")
    fit_idx, val_idx = _mlp_split(data)
    x_fit, y_fit = data.x[fit_idx], data.y[fit_idx]
    model = EagerMLP(data.num_features, config.hidden, data.num_classes, config.layers).to(device)
    feedback = dfa_feedback(data.num_classes, model.widths, float(extra.get("feedback_scale", 1.0)), device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = make_generator(config.seed)

    def train_epoch():
        losses = []
        for batch in minibatches(x_fit.shape[0], config.batch_size, gen, device):
            blocks = dfa_feedback_blocks(feedback, model.widths, kind, [layer.weight for layer in model.layers[1:]])
            opt.zero_grad()
            losses.append(float(dfa_mlp_backward(model, x_fit[batch], y_fit[batch], blocks)))
            opt.step()
        return sum(losses) / max(len(losses), 1)

    epoch = _simultaneous_loop(config, train_epoch, lambda: _mlp_accuracy(model, data.x[val_idx], data.y[val_idx]),
                               model, progress, "eager-dfa")
    return {"val_accuracy": _mlp_accuracy(model, data.x[val_idx], data.y[val_idx]),
            "test_accuracy": _mlp_accuracy(model, data.x[data.test_idx], data.y[data.test_idx]),
            "epochs_per_layer": [epoch] * config.layers, "epochs": epoch}


class EagerDFAGCN(nn.Module):
    """``layers`` :class:`EagerGCNConv` layers, the last one the output layer (``C`` outputs, no
    ReLU), every layer's input l2-normalised (docs/algorithms.md#dfa-graph)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, layers: int):
        super().__init__()
        dims = [in_features] + [hidden] * (layers - 1) + [num_classes]
        self.convs = nn.ModuleList(EagerGCNConv(dims[i], dims[i + 1]) for i in range(layers))

    @property
    def widths(self) -> list:
        return [conv.lin.out_features for conv in self.convs[:-1]]

    def forward(self, x, edge_index, detach_inputs: bool = False):
        """``(hidden [h_1 .. h_{L-1}], logits)``; ``detach_inputs``: each layer's input detached."""
        h, hidden = x, []
        for conv in self.convs[:-1]:
            h = F.relu(conv(l2_normalize(h.detach() if detach_inputs else h), edge_index))
            hidden.append(h)
        return hidden, self.convs[-1](l2_normalize(h.detach() if detach_inputs else h), edge_index)


def dfa_gcn_backward(model: EagerDFAGCN, x, edge_index, train_idx, y_train, blocks: list) -> torch.Tensor:
    """One full-batch DFA step's gradients into ``.grad``: the training nodes' cross-entropy gives
    ``E`` (zero on the other rows) and the output layer's gradient; hidden layer ``l`` backpropagates
    ``E B_l`` through its own ReLU and GCN layer only. Returns the training loss."""
    hidden, logits = model(x, edge_index, detach_inputs=True)
    loss = F.cross_entropy(logits[train_idx], y_train)
    (error,) = torch.autograd.grad(loss, logits, retain_graph=True)
    torch.autograd.backward([logits] + hidden, [error] + [error @ b for b in blocks])
    return loss.detach()


def run_dfa_graph_eager(config, data, progress=None) -> dict:
    """Graph DFA with GCN layers (docs/algorithms.md#dfa-graph): full batch, one DFA step of every
    layer per epoch, one Adam over all layers (per parameter: the fused per-layer Adams' update);
    evaluation is a fresh full forward. ``config.extra``: ``feedback``, ``feedback_scale``."""
    if config.model != "gcn":
        raise ValueError("the eager DFA graph baseline implements model='gcn'")
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    extra = config.extra or {}
    kind = extra.get("feedback", "random")
    model = EagerDFAGCN(data.num_features, config.hidden, data.num_classes, config.layers).to(device)
    feedback = dfa_feedback(data.num_classes, model.widths, float(extra.get("feedback_scale", 1.0)), device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    edge_index, train_idx, y_train = data.edge_index, data.train_idx, data.y[data.train_idx]

    def evaluate(idx):
        with torch.no_grad():
            return accuracy(model(data.x, edge_index)[1][idx].argmax(1), data.y[idx])

    def train_epoch():
        blocks = dfa_feedback_blocks(feedback, model.widths, kind, [conv.lin.weight for conv in model.convs[1:]])
        opt.zero_grad()
        loss = dfa_gcn_backward(model, data.x, edge_index, train_idx, y_train, blocks)
        opt.step()
        return float(loss)

    epoch = _simultaneous_loop(config, train_epoch, lambda: evaluate(data.val_idx), model, progress,
                               "eager-dfa-graph")
    return {"val_accuracy": evaluate(data.val_idx), "test_accuracy": evaluate(data.test_idx),
            "epochs_per_layer": [epoch] * config.layers, "epochs": epoch}


# --------------------------------------------------------------------------- backpropagation
class BPGCN(nn.Module):
    """``layers`` GCN layers (hidden width, ReLU) and a linear classifier, trained end to end."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, layers: int, use_pyg: bool):
        super().__init__()
        if use_pyg:
            from torch_geometric.nn import GCNConv
            make = lambda i, o: GCNConv(i, o)  # noqa: E731  (cached=False: norm recomputed per step)
        else:
            make = EagerGCNConv
        dims = [in_features] + [hidden] * layers
        self.convs = nn.ModuleList(make(dims[i], dims[i + 1]) for i in range(layers))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x, edge_index):
        for conv in self.convs:
            x = F.relu(conv(x, edge_index))
        return self.head(x)


class BPMLP(nn.Module):
    def __init__(self, in_features: int, hidden: int, num_classes: int, layers: int):
        super().__init__()
        dims = [in_features] + [hidden] * layers
        self.layers = nn.ModuleList(nn.Linear(dims[i], dims[i + 1]) for i in range(layers))
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x, edge_index=None):
        for layer in self.layers:
            x = F.relu(layer(x))
        return self.head(x)


def _bp_train(model, x, edge_index, y, fit_idx, val_idx, test_idx, config, progress, label, batch_size=None):
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = make_generator(config.seed)
    stopper = _Stopper(config.patience)

    def evaluate(idx):
        model.eval()
        with torch.no_grad():
            out = model(x[idx], None) if edge_index is None else model(x, edge_index)[idx]
            return accuracy(out.argmax(1), y[idx])

    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        batches = [fit_idx] if edge_index is not None else [
            fit_idx[b] for b in minibatches(fit_idx.numel(), batch_size, gen, x.device)]
        for rows in batches:
            opt.zero_grad()
            out = model(x, edge_index)[rows] if edge_index is not None else model(x[rows])
            loss = F.cross_entropy(out, y[rows])
            loss.backward()
            opt.step()
        if epoch % config.val_every == 0 and stopper.step(evaluate(val_idx), model):
            break
        _report(progress, label, epoch, config.epochs, loss=loss.item())
    if stopper.best_state is None:
        stopper.step(evaluate(val_idx), model)
    stopper.restore(model)
    return {"val_accuracy": evaluate(val_idx), "test_accuracy": evaluate(test_idx),
            "epochs_per_layer": [epoch] * config.layers, "epochs": epoch}


def run_bp_gcn(config, data, progress=None) -> dict:
    """Backprop GCN (PyG ``GCNConv`` when torch_geometric imports, else :class:`EagerGCNConv`)."""
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    use_pyg = bool(config.extra.get("pyg", True)) and pyg_available()
    model = BPGCN(data.num_features, config.hidden, data.num_classes, config.layers, use_pyg).to(device)
    out = _bp_train(model, data.x, data.edge_index, data.y, data.train_idx, data.val_idx, data.test_idx, config,
                    progress, "bp-gcn")
    out["bp_layers"] = "torch_geometric.nn.GCNConv" if use_pyg else "EagerGCNConv"
    return out


def run_bp_mlp(config, data, progress=None) -> dict:
    """Backprop MLP (same widths plus a linear classifier), mini-batches as the FF run."""
    seed_everything(config.seed)
    device = torch.device(config.device)
    data = data.to(device)
    fit_idx, val_idx = (data.train_idx, data.val_idx) if data.val_idx.numel() else validation_split(data.train_idx)
    model = BPMLP(data.num_features, config.hidden, data.num_classes, config.layers).to(device)
    return _bp_train(model, data.x, None, data.y, fit_idx, val_idx, data.test_idx, config, progress, "bp-mlp",
                     batch_size=config.batch_size)


#: algorithm family -> eager runner / BP runner (the suite's keys).
EAGER_RUNNERS = {"sf": run_sf_eager, "ff_la": run_ff_la_eager, "ff_mlp": run_ff_mlp_eager,
                 "fg": run_fg_eager, "fg_local": run_fg_local_eager, "fg_guess": run_fg_guess_eager,
                 "dfa": run_dfa_eager, "dfa_graph": run_dfa_graph_eager}
BP_RUNNERS = {"gcn": run_bp_gcn, "mlp": run_bp_mlp}
