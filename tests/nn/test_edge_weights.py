"""Edge weights in the graph layers and trainers, and PyG's GCN normalisation on graphs that
already have self loops (docs/algorithms.md and the FFGCNConv docstring state the choice).

The oracle is a dense float64 operator written here from PyG's definition
(``gcn_norm`` with ``add_remaining_self_loops``: a node's existing self loops are replaced by one
that keeps the weight of the last of them, 1 if it has none); where torch_geometric is
installed the layer is also checked against ``torch_geometric.nn.GCNConv`` itself.
"""
from __future__ import annotations

import pytest
import torch

import ffkernels
from ffkernels import Graph
from ffkernels.datasets import Dataset
from ffkernels.nn import FFGATConv, FFGCNConv, FFSAGEConv

N, F = 9, 5


def _weighted_graph_with_loops(seed=0):
    """Duplicates, isolated node 8, node 1 with two self loops (weights 0.7 then 2.5), node 4 with one."""
    gen = torch.Generator().manual_seed(seed)
    ei = torch.tensor([[0, 1, 2, 3, 1, 1, 4, 5, 6, 0, 7, 2],
                       [1, 2, 3, 4, 1, 1, 4, 6, 5, 1, 0, 7]])
    w = torch.rand(ei.shape[1], generator=gen, dtype=torch.float64) + 0.25
    w[4], w[5] = 0.7, 2.5
    return ei, w


def _pyg_gcn_dense(ei, w, n):
    """``D^-1/2 (A' + I') D^-1/2`` of PyG's GCNConv (A' without the self loops, I' the kept loops)."""
    a = torch.zeros(n, n, dtype=torch.float64)
    loop = torch.ones(n, dtype=torch.float64)
    for e in range(ei.shape[1]):
        s, d = int(ei[0, e]), int(ei[1, e])
        if s == d:
            loop[d] = w[e]  # the last self loop given wins
        else:
            a[d, s] += w[e]
    a += torch.diag(loop)
    dinv = a.sum(1).rsqrt()
    return dinv[:, None] * a * dinv[None, :]


def _features(seed=1):
    return torch.randn(N, F, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_gcn_prepare_is_pygs_normalisation_with_weights_and_self_loops():
    ei, w = _weighted_graph_with_loops()
    x = _features()
    conv = FFGCNConv(F, 4, normalize=None)
    expected = _pyg_gcn_dense(ei, w, N) @ x
    graph = Graph.from_edge_index(ei, N)
    torch.testing.assert_close(conv.prepare(x, graph, edge_weight=w), expected)  # weights as an argument
    torch.testing.assert_close(conv.prepare(x, Graph.from_edge_index(ei, N, edge_weight=w)), expected)  # on the Graph
    unweighted = _pyg_gcn_dense(ei, torch.ones_like(w), N) @ x
    torch.testing.assert_close(conv.prepare(x, graph), unweighted)
    # a self loop is not doubled: different from D^-1/2 (A + I) D^-1/2 on this graph
    a = torch.zeros(N, N, dtype=torch.float64).index_put_((ei[1], ei[0]), torch.ones(ei.shape[1], dtype=torch.float64),
                                                         accumulate=True) + torch.eye(N, dtype=torch.float64)
    d = a.sum(1).rsqrt()
    assert not torch.allclose(conv.prepare(x, graph), (d[:, None] * a * d[None, :]) @ x)


def test_gcn_matches_torch_geometric_gcnconv():
    geometric = pytest.importorskip("torch_geometric.nn")  # a third-party oracle, optional
    ei, w = _weighted_graph_with_loops()
    x = _features()
    ours = FFGCNConv(F, 4, normalize=None).double()
    pyg = geometric.GCNConv(F, 4).double()
    with torch.no_grad():
        pyg.lin.weight.copy_(ours.weight)
        pyg.bias.copy_(ours.bias)
    for weight in (w, None):
        expected = torch.relu(pyg(x, ei, weight))
        torch.testing.assert_close(ours(x, Graph.from_edge_index(ei, N), edge_weight=weight), expected)


def test_weights_from_a_pyg_data_object():
    ei, w = _weighted_graph_with_loops()
    x = _features()

    class Data:  # the attributes a torch_geometric Data has
        edge_index, edge_weight, num_nodes = ei, w, N

    conv = FFGCNConv(F, 4, normalize=None)
    torch.testing.assert_close(conv.prepare(x, Data()), _pyg_gcn_dense(ei, w, N) @ x)


def test_sage_weighted_mean():
    ei, w = _weighted_graph_with_loops()
    x = _features()
    conv = FFSAGEConv(F, 4, normalize=None)
    a = torch.zeros(N, N, dtype=torch.float64).index_put_((ei[1], ei[0]), w, accumulate=True)
    total = a.sum(1, keepdim=True)
    mean = torch.where(total > 0, a / total.clamp_min(1e-300), torch.zeros_like(a)) @ x
    torch.testing.assert_close(conv.prepare(x, Graph.from_edge_index(ei, N), edge_weight=w), torch.cat([x, mean], 1))
    # unit weights: the plain neighbour mean
    ones = torch.ones_like(w)
    torch.testing.assert_close(conv.prepare(x, Graph.from_edge_index(ei, N), edge_weight=ones),
                               conv.prepare(x, Graph.from_edge_index(ei, N)))


def test_local_step_uses_the_weights():
    ei, w = _weighted_graph_with_loops()
    x = _features().float()
    steps = []
    for weight in (None, w.float()):
        torch.manual_seed(0)
        conv = FFGCNConv(F, 4)
        conv.local_step(x, Graph.from_edge_index(ei, N), edge_weight=weight, positive=torch.arange(N) % 2 == 0)
        steps.append(conv.weight.detach().clone())
    assert not torch.equal(steps[0], steps[1])


@pytest.mark.parametrize("bad,err,match", [
    (torch.ones(3), ValueError, "edge_weight"),
    (torch.ones(12, dtype=torch.int64), TypeError, "edge_weight"),
])
def test_bad_edge_weight_is_a_clear_error(bad, err, match):
    ei, _ = _weighted_graph_with_loops()
    with pytest.raises(err, match=match):
        Graph.from_edge_index(ei, N, edge_weight=bad)
    with pytest.raises((ValueError, TypeError), match=match):
        FFGCNConv(F, 4).prepare(_features().float(), Graph.from_edge_index(ei, N), edge_weight=bad)


def test_gat_refuses_weights_rather_than_ignoring_them():
    ei, w = _weighted_graph_with_loops()
    with pytest.raises(ValueError, match="edge weights"):
        FFGATConv(F, 4)(_features().float(), Graph.from_edge_index(ei, N, edge_weight=w.float()))


def _cora_ml(weighted: bool):
    d = ffkernels.datasets.resolve("cora_ml")
    w = torch.rand(d.edge_index.shape[1], generator=torch.Generator().manual_seed(0)) * 3 + 0.1 if weighted else None
    return Dataset.from_tensors(d.x, d.edge_index, d.y, d.train_idx, d.val_idx, d.test_idx, edge_weight=w)


@pytest.mark.parametrize("algo", ["sf", "bp"])
def test_trainers_use_the_datasets_weights(algo):
    a = ffkernels.fit(_cora_ml(True), algo, layers=1, hidden=16, epochs=2, progress=False)
    b = ffkernels.fit(_cora_ml(False), algo, layers=1, hidden=16, epochs=2, progress=False)
    first = [p for p in a.model.parameters()][0], [p for p in b.model.parameters()][0]
    assert not torch.equal(*first)


@pytest.mark.parametrize("algo", ["ff-la", "fl-ce", "dfa-graph"])
def test_algorithms_without_weights_refuse_a_weighted_dataset(algo):
    with pytest.raises(ValueError, match="does not use edge weights"):
        ffkernels.fit(_cora_ml(True), algo, layers=2, epochs=1, progress=False)
