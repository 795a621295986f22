"""The SF loss op (docs/algorithms.md#sf), the virtual-node graph and the trainer's row-gathered steps."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ffkernels import ops
from ffkernels.datasets import synthetic
from ffkernels.algorithms.common import augment_with_virtual_nodes
from ffkernels.algorithms.forwardgnn import (TRAIN_FIELD, ReceptiveFieldOperand, RowsOperand, _LinearStepper,
                                            _prepare_unnormalized, make_row_operands)
from ffkernels.nn.functional import normalize_rows
from ffkernels.testing import build_trainer
from ffkernels.train.metrics import accuracy


def _case(seed=0, n=30, d=6, c=4, n_train=12, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    h = torch.rand(n, d, generator=gen, dtype=dtype)
    perm = torch.randperm(n - c, generator=gen)
    train_idx = perm[:n_train]
    y_train = torch.randint(0, c, (n_train,), generator=gen)
    virtual_idx = torch.arange(n - c, n)
    return h, train_idx, y_train, virtual_idx


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_sf_loss_grad_matches_autograd(tau):
    h, train_idx, y_train, virtual_idx = _case()
    loss, grad_rows, rows = ops.sf_loss_grad(h, train_idx, y_train, virtual_idx, tau)
    hh = h.clone().requires_grad_(True)
    ref = F.cross_entropy(hh[train_idx] @ hh[virtual_idx].t() / tau, y_train)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-12)
    torch.testing.assert_close(rows, torch.cat([train_idx, virtual_idx]))
    torch.testing.assert_close(grad_rows, hh.grad[rows], rtol=1e-10, atol=1e-14)
    others = torch.ones(h.shape[0], dtype=torch.bool)
    others[rows] = False
    assert hh.grad[others].abs().max() == 0  # only n_train + C rows are non-zero
    dense_loss, dense = ops.sf_loss_grad(h, train_idx, y_train, virtual_idx, tau, dense=True)
    torch.testing.assert_close(dense, hh.grad, rtol=1e-10, atol=1e-14)


def test_sf_loss_grad_float32_and_gathered_rows():
    h, train_idx, y_train, virtual_idx = _case(dtype=torch.float32)
    rows = torch.cat([train_idx, virtual_idx])
    full = ops.sf_loss_grad(h, train_idx, y_train, virtual_idx)
    n = train_idx.numel()
    local = ops.sf_loss_grad(h[rows], torch.arange(n), y_train, torch.arange(n, n + virtual_idx.numel()))
    torch.testing.assert_close(full[0], local[0])
    torch.testing.assert_close(full[1], local[1])
    assert full[1].dtype == torch.float32


def test_sf_loss_grad_validation():
    h, train_idx, y_train, virtual_idx = _case()
    with pytest.raises(TypeError, match="h"):
        ops.sf_loss_grad(h.numpy(), train_idx, y_train, virtual_idx)
    with pytest.raises(TypeError, match="train_idx"):
        ops.sf_loss_grad(h, train_idx.double(), y_train, virtual_idx)
    with pytest.raises(ValueError, match="train_idx"):
        ops.sf_loss_grad(h, train_idx + 100, y_train, virtual_idx)
    with pytest.raises(ValueError, match="y_train"):
        ops.sf_loss_grad(h, train_idx, y_train[:-1], virtual_idx)
    with pytest.raises(ValueError, match="y_train"):
        ops.sf_loss_grad(h, train_idx, y_train + 10, virtual_idx)
    with pytest.raises(TypeError, match="y_train"):
        ops.sf_loss_grad(h, train_idx, y_train.float(), virtual_idx)
    with pytest.raises(ValueError, match="overlap"):
        ops.sf_loss_grad(h, torch.cat([train_idx[:-1], virtual_idx[:1]]), y_train, virtual_idx)
    with pytest.raises(ValueError, match="tau"):
        ops.sf_loss_grad(h, train_idx, y_train, virtual_idx, tau=0.0)
    with pytest.raises(ValueError, match="h"):
        ops.sf_loss_grad(h[0], train_idx, y_train, virtual_idx)


def test_augment_with_virtual_nodes_structure():
    x = torch.rand(10, 5)
    ei = torch.tensor([[0, 1, 2], [1, 2, 3]])
    link = torch.tensor([0, 4, 7])
    cls = torch.tensor([1, 0, 1])
    vg = augment_with_virtual_nodes(x, ei, link, cls, 2, seed=3)
    assert vg.num_nodes == 12 and vg.num_real == 10 and vg.virtual_idx.tolist() == [10, 11]
    edges = set(map(tuple, vg.edge_index.t().tolist()))
    for node, c in zip(link.tolist(), cls.tolist()):
        assert (node, 10 + c) in edges and (10 + c, node) in edges
    assert vg.graph.num_edges == 3 + 2 * 3
    torch.testing.assert_close(vg.x[:10], x)
    again = augment_with_virtual_nodes(x, ei, link, cls, 2, seed=3)
    assert torch.equal(vg.x, again.x)  # seeded, repeatable virtual features
    with pytest.raises(ValueError, match="link_class"):
        augment_with_virtual_nodes(x, ei, link, cls + 5, 2)


def test_accuracy():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    y = torch.tensor([1, 1, 1])
    assert accuracy(scores, y) == pytest.approx(2 / 3)
    assert accuracy(scores, y, torch.tensor([0, 2])) == 1.0
    assert accuracy(scores[:0], y[:0]) == 0.0


def _small_data():
    return synthetic(num_nodes=400, avg_degree=6, num_classes=4, num_features=64, seed=1, train_fraction=0.3)


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_trainer_row_gathered_step_matches_autograd(model):
    """The trainer's step (sparse + low-rank first-layer input, gathered rows) = autograd of the
    SF loss of the full layer on the augmented graph."""
    data = _small_data()
    x = (data.x - 0.4).clamp_min(0)  # sparse (1.5% non-zeros), non-negative: the sparse form
    data.x = x
    trainer = build_trainer("sf", data, model=model, layers=1, hidden=16)
    p, layer = trainer.problem, trainer.model.layers[0]
    stepper = _LinearStepper(layer, p.vg.x, p, 1.0)
    assert isinstance(stepper.step_input, ReceptiveFieldOperand)
    captured = {}
    layer.apply_gradients = lambda grads: captured.update(grads)
    stepper.step()
    w = layer.weight.detach().clone().requires_grad_(True)
    b = layer.bias.detach().clone().requires_grad_(True)
    prepared = layer.prepare(p.vg.x, p.vg.graph)
    h = torch.relu(prepared @ w.t() + b)
    F.cross_entropy(h[p.train_idx] @ h[p.virtual_idx].t(), p.y_train).backward()
    torch.testing.assert_close(captured["weight"], w.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(captured["bias"], b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_rows_operand_dense_and_sparse_agree(model, weighted):
    """The sparse-throughout first-layer operand (CSR features, SpGEMM aggregation, gathered rows)
    equals the dense prepared input, on a graph with self loops and, weighted, edge weights."""
    p, layer = _field_case(model, sparse=True, weighted=weighted, dtype=torch.float32)
    sparse_ops = make_row_operands(layer, p.vg.x, p, (p.step_rows, None))
    dense_ops = make_row_operands(layer, p.vg.x, p, (p.step_rows, None), allow_sparse=False)
    for sparse, dense in zip(sparse_ops, dense_ops):
        assert isinstance(sparse, RowsOperand) and sparse.sparse is not None and dense.dense is not None
        torch.testing.assert_close(sparse.matmul_wt(layer.weight, layer.bias),
                                   dense.matmul_wt(layer.weight, layer.bias), rtol=1e-4, atol=1e-6)
        g = torch.randn(sparse.num_rows, 16)
        torch.testing.assert_close(sparse.grad_weight(g), dense.grad_weight(g), rtol=1e-4, atol=1e-5)


def test_top_to_loss_gradient_matches_autograd():
    """Top-to-loss: layer j's gradient is the SF gradient of mean(h_j, n(h_{j+1}), ...) through h_j only."""
    data = _small_data()
    trainer = build_trainer("sf-top-loss", data, model="gcn", layers=2, hidden=16, clip=1e9)
    net = trainer.net
    p = net.problem
    captured = []
    for layer in net.layers:
        layer.apply_gradients = lambda grads, store=captured: store.append(grads)
    net.epoch([None] * 3)
    l0, l1 = net.layers
    w0 = l0.weight.detach().clone().requires_grad_(True)
    b0 = l0.bias.detach().clone().requires_grad_(True)
    h0 = torch.relu(l0.prepare(p.vg.x, p.vg.graph) @ w0.t() + b0)
    h1 = l1(h0.detach(), p.vg.graph)
    h1n = h1 / (h1.norm(dim=1, keepdim=True) + 1e-8)
    m = (h0 + h1n) / 2
    F.cross_entropy(m[p.train_idx] @ m[p.virtual_idx].t(), p.y_train).backward()
    torch.testing.assert_close(captured[0]["weight"], w0.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(captured[0]["bias"], b0.grad, rtol=1e-4, atol=1e-6)


def _field_case(model, sparse, weighted, dtype=torch.float64):
    """A small graph with self loops (and edge weights), sparse or dense features, one SF layer."""
    data = _small_data()
    data.x = data.x.to(dtype)
    if sparse:  # about 1.5% non-zeros: the aggregated first-layer input stays sparse
        data.x = (data.x - 0.4).clamp_min(0)
    loops = torch.arange(0, 40, 3)
    data.edge_index = torch.cat([data.edge_index, torch.stack([loops, loops])], 1)
    if weighted:
        data.edge_weight = torch.rand(data.edge_index.shape[1], generator=torch.Generator().manual_seed(2)) + 0.5
    trainer = build_trainer("sf", data, model=model, layers=1, hidden=16)
    layer = trainer.model.layers[0].to(dtype)
    return trainer.problem, layer


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_step_operand_matches_gathered_rows(model, sparse, weighted):
    """The step rows' operand (sparse: factored A_t X_K, transform-first; dense: the gathered
    rows) = the gathered rows of the prepared input, forward and weight gradient, float64."""
    p, layer = _field_case(model, sparse, weighted)
    with torch.no_grad():
        step, rows = make_row_operands(layer, p.vg.x, p, (TRAIN_FIELD, p.step_rows))
        assert isinstance(step, ReceptiveFieldOperand if sparse else RowsOperand)
        assert step.num_rows == p.step_rows.numel()
        torch.testing.assert_close(step.matmul_wt(layer.weight, layer.bias), rows.matmul_wt(layer.weight, layer.bias),
                                   rtol=1e-12, atol=1e-12)
        g = torch.randn(step.num_rows, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        torch.testing.assert_close(step.grad_weight(g), rows.grad_weight(g), rtol=1e-12, atol=1e-12)


def test_held_first_layer_weight_trains_like_the_row_major_one(monkeypatch):
    """The sparse first layer's weight, held column-major in a padded buffer while it trains
    (no transposing copies per step), gives the same forward, gradient and training as the
    row-major weight, and end_stage hands the layer back row-major with the same values."""
    def train(hold: bool, steps=5):
        if not hold:
            monkeypatch.setattr(ReceptiveFieldOperand, "hold_weight", lambda self, weight: None)
        torch.manual_seed(0)
        p, layer = _field_case("gcn", sparse=True, weighted=True, dtype=torch.float32)
        stepper = _LinearStepper(layer, p.vg.x, p, 1.0, dropout=0.2, input_dropout=0.2,
                                 generator=torch.Generator().manual_seed(5))
        assert isinstance(stepper.step_input, ReceptiveFieldOperand)
        losses = [stepper.step() for _ in range(steps)]
        layout = layer.weight.stride()
        state = layer.optimizer.state[layer.weight]
        moments_match = all(state[k].stride() == layer.weight.stride() for k in ("exp_avg", "exp_avg_sq"))
        probs = stepper.val_probs()
        stepper.release()
        monkeypatch.undo()
        return losses, layer.weight.detach().clone(), layout, moments_match, probs, layer.weight.is_contiguous()

    held, plain = train(True), train(False)
    d, f = plain[1].shape
    assert held[2] == (1, d) and plain[2] == (f, 1)  # held column-major, the other row-major
    assert held[3] and plain[3]  # Adam's moments in the weight's layout
    assert held[5] and plain[5]  # released: row-major again
    assert held[0] == pytest.approx(plain[0], rel=1e-5)
    torch.testing.assert_close(held[1], plain[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(held[4], plain[4], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_dense_input_dropout_hits_the_aggregated_training_rows(model):
    """A dense input's dropped-out step operand: the training rows' aggregated entries kept and
    scaled by 1/(1-p) or zeroed (about the rate p), the virtual rows whole; a second step draws
    another mask and leaves the undropped operand untouched."""
    p, layer = _field_case(model, sparse=False, weighted=False)
    q, gen = 0.3, torch.Generator().manual_seed(7)
    with torch.no_grad():
        (step,) = make_row_operands(layer, p.vg.x, p, (TRAIN_FIELD,))
        original = step.dense.clone()
        n = p.train_idx.numel()
        first = step.dropped(q, gen).dense.clone()
        kept = first[:n] != 0
        torch.testing.assert_close(first[:n][kept], original[:n][kept] / (1 - q))
        nonzero = original[:n] != 0
        assert abs(float((~kept & nonzero).sum() / nonzero.sum()) - q) < 0.02
        assert torch.equal(first[n:], original[n:])
        second = step.dropped(q, gen).dense
        assert not torch.equal(second[:n] != 0, kept)
        assert torch.equal(step.dense, original)


@pytest.mark.parametrize("model", ["gcn", "sage"])
def test_sparse_input_dropout_hits_input_features_before_aggregation(model):
    """A sparse input's dropped-out step operand = the layer's prepare of the input with the real
    nodes' features dropped (one mask per node and feature, scaled by 1/(1-p)) on the training
    rows, and of the whole input on the virtual rows; its gradient is autograd's of that product."""
    p, layer = _field_case(model, sparse=True, weighted=False)
    q = 0.4
    with torch.no_grad():
        (field,) = make_row_operands(layer, p.vg.x, p, (TRAIN_FIELD,))
        dropped = field.dropped(q, torch.Generator().manual_seed(7))
        xn = normalize_rows(p.vg.x, layer.normalize)
        x_field = torch.sparse_csr_tensor(dropped.x.rowptr[: field.field.numel() + 1].long(), dropped.x.col.long(),
                                          dropped.values, dropped.x.shape).to_dense()
        k_real = int((field.field < p.num_real).sum())
        real = field.field[:k_real]
        kept = x_field[:k_real] != 0
        original = xn.index_select(0, real)
        # every kept entry is scaled, every other one zeroed, at about the rate q
        torch.testing.assert_close(x_field[:k_real][kept], original[kept] / (1 - q))
        nonzero = original != 0
        assert nonzero.sum() > 200 and abs(float((~kept & nonzero).sum() / nonzero.sum()) - q) < 0.12  # 3.5 sd
        x_drop = xn.clone()
        x_drop[real] = x_field[:k_real]
    w = layer.weight.detach().clone().requires_grad_(True)
    m_train = _prepare_unnormalized(layer, x_drop, p.vg.graph)[p.train_idx]
    m_virtual = layer.prepare(p.vg.x, p.vg.graph)[p.virtual_idx]
    z = torch.cat([m_train, m_virtual]) @ w.t() + layer.bias.detach()
    g = torch.randn_like(z)
    (z * g).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(dropped.matmul_wt(layer.weight, layer.bias), z.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(dropped.grad_weight(g), w.grad, rtol=1e-12, atol=1e-12)
        # the undropped operand is untouched (a step's dropout never leaks into the next)
        torch.testing.assert_close(field.matmul_wt(layer.weight, layer.bias),
                                   make_row_operands(layer, p.vg.x, p, (p.step_rows,))[0].matmul_wt(
                                       layer.weight, layer.bias), rtol=1e-12, atol=1e-12)
