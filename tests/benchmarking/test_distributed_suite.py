"""The distributed benchmark suite on a tiny graph with 2 ranks (time-boxed: one suite run of
three multi-process rounds, well under 60 s): its records have the fields the report needs, the
distributed BP baseline equals a single-process autograd GCN on the full graph (loss, first
gradients, parameters after some Adam steps), and SF sends fewer bytes per epoch than BP."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch
import torch.nn.functional as F

from ffkernels.benchmarking import distributed_suite as ds
from ffkernels.distributed.bp_baseline import make_model

GRAPH = ds.GraphSpec(300, avg_degree=6, num_features=16, num_classes=3, locality=0.9, community_size=50, seed=1)
TRAIN = ds.TrainSpec(layers=2, hidden=16, epochs=3, bp_lr=5e-2, weight_decay=0.0, seed=3)
#: the ranks' gradients are partial sums added by the all-reduce, the halo aggregation sums in
#: another order than a dense matmul: rounding only (a wrong gradient is off by 1e-2 or more)
RTOL, ATOL = 1e-5, 1e-6
#: the time box: each of the suite's three multi-process rounds (the two single-process runs side
#: by side, SF on 2 ranks, BP on 2 ranks; ~10 s each on an idle 2-core machine, most of it
#: process start-up) is killed after this long, and the test fails
ROUND_TIMEOUT_S = 45.0


@pytest.fixture(scope="module")
def suite():
    start = time.perf_counter()
    # warm_up=False: no dummy Adam step per process (seconds of lazy imports; timings are not checked)
    res = ds.run_suite(graphs=[GRAPH], ranks=(2,), train=TRAIN, parallel_single=True, capture_bp=True,
                       warm_up=False, timeout=ROUND_TIMEOUT_S, collective_timeout=ROUND_TIMEOUT_S - 10,
                       log=lambda msg: None)
    res["elapsed"] = time.perf_counter() - start
    return res


def _full_graph_reference(epochs: int):
    """Single-process autograd: the same model, the dense GCN operator of the whole graph."""
    data = GRAPH.generate()
    n = data.num_nodes
    ei = data.edge_index
    deg = torch.bincount(ei[1], minlength=n).to(torch.float32)
    d = (deg + 1.0).rsqrt()
    a = torch.zeros(n, n)
    a.index_put_((ei[1], ei[0]), d[ei[1]] * d[ei[0]], accumulate=True)
    a += torch.diag(d * d)
    model = make_model(data.num_features, TRAIN.hidden, data.num_classes, TRAIN.layers, TRAIN.seed)
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN.bp_lr, weight_decay=TRAIN.weight_decay)
    losses, first = [], None
    for epoch in range(epochs):
        opt.zero_grad()
        out = model(data.x, lambda i, h: a @ h)
        loss = F.cross_entropy(out[data.train_idx], data.y[data.train_idx])
        loss.backward()
        if epoch == 0:
            first = {k: p.grad.clone() for k, p in model.named_parameters()}
        opt.step()
        losses.append(loss.item())
    return losses, first, model.state_dict()


def test_records_have_the_required_fields(suite, tmp_path):
    recs = suite["records"]
    assert {(r["algo"], r["world_size"]) for r in recs} == {("sf", 1), ("bp", 1), ("sf", 2), ("bp", 2)}
    for r in recs:
        missing = [f for f in ds.RUN_FIELDS if f not in r]
        assert not missing, (r["algo"], r["world_size"], missing)
        assert len(r["peak_memory_bytes"]) == r["world_size"] == len(r["bytes_per_epoch_per_rank"])
        assert all(p > 0 for p in r["peak_total_bytes"]) and r["seconds_per_epoch"] > 0
        for key in ("memory_ratio", "total_memory_ratio", "data_memory_ratio"):
            assert all(m is not None and m > 0 for m in r[key]), key
    dist = [r for r in recs if r["world_size"] == 2]
    for r in dist:
        assert r["method"] == "metis" and 0 < r["edge_cut"] < r["num_edges"]
        assert sum(r["owned_rows"]) == GRAPH.num_nodes and all(h > 0 for h in r["halo_rows"])
        assert all(0 <= f <= 1 for f in r["comm_fraction"])
    sf = next(r for r in dist if r["algo"] == "sf")
    assert sf["epochs"] == TRAIN.layers * TRAIN.epochs
    # the once-per-layer halo exchange: layer 1 moves the features, layer 2 the hidden units
    for rank, per_layer in enumerate(sf["halo_bytes_per_layer"]):
        send = sf["send_rows"][rank]
        assert per_layer == [send * GRAPH.num_features * 4, send * TRAIN.hidden * 4]
        # plus the start-up exchange of one column (which halo nodes are training nodes)
        assert sf["halo_bytes_amortised_per_epoch"][rank] == pytest.approx(
            (sum(per_layer) + send * 4) / sf["epochs"])
    bp = next(r for r in dist if r["algo"] == "bp")
    for rank, layers in enumerate(bp["halo_bytes_per_layer"]):
        send, halo = bp["send_rows"][rank], bp["halo_rows"][rank]
        assert layers["forward"] == [send * GRAPH.num_features * 4, send * TRAIN.hidden * 4]
        assert layers["backward"] == [0, halo * TRAIN.hidden * 4]   # the features need no gradient
    (c,) = suite["comparisons"]
    assert all(f in c for f in ds.COMPARISON_FIELDS)
    # the JSON and the table are produced from the records
    path = tmp_path / "out.json"
    ds._write_json(suite, str(path))
    saved = json.loads(path.read_text())
    assert len(saved["records"]) == 4 and saved["comparisons"][0]["bytes_ratio"] == pytest.approx(c["bytes_ratio"])
    table = ds.markdown_table(saved)
    assert "BP / SF per epoch" in table and GRAPH.name in table and "no wall-clock speedup" in table


def test_bp_baseline_equals_single_process_autograd(suite):
    capture = suite["bp_capture"][(GRAPH.name, 2)]
    losses, first, state = _full_graph_reference(TRAIN.epochs)
    assert capture["losses"] == pytest.approx(losses, rel=RTOL, abs=ATOL)
    for name, grad in first.items():
        torch.testing.assert_close(capture["first_grads"][name], grad, rtol=RTOL, atol=ATOL, msg=name)
    for name, value in state.items():
        torch.testing.assert_close(capture["state"][name], value, rtol=RTOL, atol=ATOL, msg=name)
    assert not math.isclose(losses[0], losses[-1])  # it trained


def test_sf_sends_fewer_bytes_per_epoch_than_bp(suite):
    sf = next(r for r in suite["records"] if r["algo"] == "sf" and r["world_size"] == 2)
    bp = next(r for r in suite["records"] if r["algo"] == "bp" and r["world_size"] == 2)
    for s, b in zip(sf["bytes_per_epoch_per_rank"], bp["bytes_per_epoch_per_rank"]):
        assert 0 < s < b
    (c,) = suite["comparisons"]
    assert c["bytes_ratio"] > 1 and c["bytes_ratio"] == pytest.approx(bp["bytes_per_epoch"] / sf["bytes_per_epoch"])
