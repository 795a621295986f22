"""ffkernels.Graph: CSR construction and validation of edge_index."""
from __future__ import annotations

import pytest
import torch

from ffkernels import Graph, as_graph
from ffkernels.testing import DEVICES


def naive_csr(edge_index, num_nodes):
    """Rows = destinations; within a row, sources in increasing order (duplicates kept)."""
    rows = [[] for _ in range(num_nodes)]
    for k, (s, d) in enumerate(edge_index.t().tolist()):
        rows[d].append((s, k))
    rowptr, col, perm = [0], [], []
    for r in rows:
        r.sort()
        col += [s for s, _ in r]
        perm += [k for _, k in r]
        rowptr.append(len(col))
    return rowptr, col, perm


def check_against_naive(g, edge_index, num_nodes):
    rowptr, col, perm = naive_csr(edge_index.cpu(), num_nodes)
    assert g.num_nodes == num_nodes and g.num_edges == edge_index.shape[1]
    assert g.rowptr.tolist() == rowptr
    assert g.col.tolist() == col
    assert g.edge_perm.tolist() == perm
    assert g.in_degree.tolist() == [rowptr[i + 1] - rowptr[i] for i in range(num_nodes)]
    expected_scale = (g.in_degree.to(torch.float32) + 1).rsqrt()
    torch.testing.assert_close(g.deg_inv_sqrt, expected_scale)


@pytest.mark.parametrize("num_nodes,num_edges", [(1, 1), (7, 30), (60, 400)])
def test_csr_matches_naive_build(num_nodes, num_edges):
    gen = torch.Generator().manual_seed(num_edges)
    ei = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    check_against_naive(Graph.from_edge_index(ei, num_nodes), ei, num_nodes)


def test_empty_graph():
    g = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.int64), 5)
    assert g.num_nodes == 5 and g.num_edges == 0
    assert g.rowptr.tolist() == [0] * 6 and g.col.numel() == 0
    g0 = Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.int64))
    assert g0.num_nodes == 0 and g0.rowptr.tolist() == [0]


def test_isolated_nodes_duplicates_and_self_loops():
    ei = torch.tensor([[0, 0, 2, 2, 5], [1, 1, 2, 1, 5]])  # duplicate 0->1, self loops 2->2, 5->5
    g = Graph.from_edge_index(ei, 8)  # nodes 3, 4, 6, 7 isolated
    check_against_naive(g, ei, 8)
    assert g.in_degree.tolist() == [0, 3, 1, 0, 0, 1, 0, 0]
    assert g.col[g.rowptr[1]:g.rowptr[2]].tolist() == [0, 0, 2]


def test_int32_when_fits_and_num_nodes_inference():
    ei = torch.tensor([[0, 3], [4, 1]], dtype=torch.int64)
    g = Graph.from_edge_index(ei)
    assert g.num_nodes == 5
    assert g.rowptr.dtype == torch.int32 and g.col.dtype == torch.int32 and g.index_dtype == torch.int32
    assert g.edge_perm.dtype == torch.int64
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert Graph.from_edge_index(ei.to(dtype)).col.tolist() == g.col.tolist()
    assert Graph.from_edge_index(ei, torch.tensor(9)).num_nodes == 9


def test_edge_perm_maps_edge_data_to_csr_order():
    gen = torch.Generator().manual_seed(3)
    ei = torch.randint(0, 20, (2, 100), generator=gen)
    g = Graph.from_edge_index(ei, 20)
    assert torch.equal(ei[0][g.edge_perm], g.col.to(torch.int64))
    assert torch.equal(ei[1][g.edge_perm], g.row.to(torch.int64))
    assert torch.equal(g.edge_index(), ei[:, g.edge_perm])


def test_transposed():
    gen = torch.Generator().manual_seed(4)
    ei = torch.randint(0, 30, (2, 200), generator=gen)
    g = Graph.from_edge_index(ei, 30)
    t = g.transposed()
    check_against_naive(Graph.from_edge_index(ei.flip(0), 30), ei.flip(0), 30)
    assert t.rowptr.tolist() == Graph.from_edge_index(ei.flip(0), 30).rowptr.tolist()
    # edge_perm of the transposed graph still indexes the ORIGINAL edge_index
    assert torch.equal(ei[1][t.edge_perm], t.col.to(torch.int64))
    assert torch.equal(ei[0][t.edge_perm], t.row.to(torch.int64))
    assert t.transposed() is g and g.transposed() is t


@pytest.mark.parametrize("device", DEVICES)
def test_to_device(device):
    ei = torch.tensor([[0, 1, 2], [1, 2, 0]])
    g = Graph.from_edge_index(ei, 3)
    h = g.to(device)
    assert h.device.type == device and h.col.device.type == device and h.deg_inv_sqrt.device.type == device
    assert h.rowptr.cpu().tolist() == g.rowptr.tolist()
    assert g.to("cpu") is g


def test_as_graph():
    ei = torch.tensor([[0, 1], [1, 0]])
    g = as_graph(ei)
    assert isinstance(g, Graph) and as_graph(g) is g
    with pytest.raises(TypeError, match="graph"):
        as_graph([[0, 1], [1, 0]])


def test_to_torch_sparse_csr():
    ei = torch.tensor([[0, 2, 1], [1, 1, 2]])
    dense = Graph.from_edge_index(ei, 3).to_torch_sparse_csr().to_dense()
    expected = torch.zeros(3, 3)
    expected[1, 0] = expected[1, 2] = expected[2, 1] = 1
    assert torch.equal(dense, expected)


@pytest.mark.parametrize("bad,exc,match", [
    (torch.zeros(2, 3, dtype=torch.float32), TypeError, "edge_index"),
    (torch.zeros(2, 3, dtype=torch.bool), TypeError, "edge_index"),
    (torch.zeros(3, 3, dtype=torch.int64), ValueError, "edge_index"),
    (torch.zeros(6, dtype=torch.int64), ValueError, "edge_index"),
    (torch.tensor([[0, -1], [1, 0]]), ValueError, "edge_index"),
    ([[0, 1], [1, 0]], TypeError, "edge_index"),
])
def test_bad_edge_index(bad, exc, match):
    with pytest.raises(exc, match=match):
        Graph.from_edge_index(bad)


def test_bad_num_nodes():
    ei = torch.tensor([[0, 4], [1, 0]])
    with pytest.raises(ValueError, match="num_nodes"):
        Graph.from_edge_index(ei, 3)  # index 4 out of range
    with pytest.raises(ValueError, match="num_nodes"):
        Graph.from_edge_index(ei, -1)
    with pytest.raises(TypeError, match="num_nodes"):
        Graph.from_edge_index(ei, 5.0)
    with pytest.raises(TypeError, match="num_nodes"):
        Graph.from_edge_index(ei, True)
