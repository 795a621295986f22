"""Partitioned ``ff-vn`` == single-process ``ff-vn`` (gloo on 127.0.0.1, 2 and 3 ranks, a tiny
synthetic graph, every run time-boxed by the harness): GCN (``vn_degree`` unit, batch, fixed)
and SAGE (``vn_degree`` does not act on SAGE), replicas bitwise identical across ranks, the
returned model evaluated single-process, ranks that own no training node or no node at all."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ffkernels
from ffkernels.datasets import synthetic
from ffkernels.distributed import partition_graph, run_ranks

# lr 5e-2: in 10 epochs a layer learns (test accuracy 30-77% on 3 classes, not a constant
# prediction), so the scores, early stopping and the test chain are exercised
OPTS = dict(layers=2, hidden=8, epochs=10, lr=5e-2, val_every=2, patience=100, seed=3, progress=False)
# The only difference from single-process ff-vn is the order of float sums: per-rank partial
# gradients then the all-reduce, and the fed-forward input / class prototypes built
# aggregation-first (Agg(n(H)) W^T) where single-process is projection-first (Agg(n(H) W^T)),
# so layer 2 starts from an input that differs by ~1e-7 relative. After 10 Adam steps per
# layer the parameters agree to ~1e-7; rtol 1e-5 / atol 1e-6 leave room for the steps'
# amplification of rounding differences while a wrong gradient (a local instead of a global
# mean, a missing virtual term, a wrong halo degree, rank-local prototypes) moves them by 8e-3
# or more. Measured: the largest difference is 0.25 of the tolerance (3 ranks, SAGE).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def graph():
    return synthetic(num_nodes=240, avg_degree=6, num_classes=3, num_features=12, seed=5, homophily=0.8)


def _state(trained):
    return {k: v.detach().clone() for k, v in trained.model.state_dict().items()}


def _rank(rank, world, directory, model, vn_degree, data):
    trained = ffkernels.fit(None, "ff-vn", model=model, vn_degree=vn_degree,
                            distributed={"partitions": directory, "timeout": 60}, **OPTS)
    # the replica is the single-process model: it evaluates on the whole graph in one process
    local = trained.model.evaluate(data) if rank == 0 else None
    return _state(trained), trained.metrics, trained.report, local


def _check(graph, directory, world, model, vn_degree):
    full = ffkernels.fit(graph, "ff-vn", model=model, vn_degree=vn_degree, **OPTS)
    results = run_ranks(_rank, world, str(directory), model, vn_degree, graph, timeout=90)
    want = _state(full)
    close = 2 / graph.test_idx.numel()
    assert abs(results[0][3]["test_accuracy"] - results[0][1]["test_accuracy"]) <= close
    for state, metrics, report, _ in results:
        for name, value in want.items():
            torch.testing.assert_close(state[name], value, rtol=RTOL, atol=ATOL, msg=name)
        assert abs(metrics["test_accuracy"] - full.metrics["test_accuracy"]) <= close
        assert abs(metrics["val_accuracy"] - full.metrics["val_accuracy"]) <= 2 / graph.val_idx.numel()
        assert report["epochs_per_layer"] == full.report["epochs_per_layer"]
        assert len(report["test_accuracy_per_layer"]) == OPTS["layers"]
    for state, *_ in results[1:]:  # the replicas are identical, bitwise
        assert all(torch.equal(state[k], results[0][0][k]) for k in state)
    return full, results


@pytest.mark.parametrize("world,model,vn_degree,method", [(2, "gcn", "unit", "bfs"), (3, "gcn", "batch", "random"),
                                                          (3, "sage", "batch", "bfs")])
def test_partitioned_ffvn_equals_single_process(graph, tmp_path, world, model, vn_degree, method, one_thread):
    partition_graph(graph, world, method, out_dir=tmp_path / "parts")
    full, results = _check(graph, tmp_path / "parts", world, model, vn_degree)
    dist = results[0][2]["distributed"]
    assert dist["world_size"] == world and dist["mode"] == "partition"
    # per epoch only the layer's gradients and the loss travel (plus the stop flag, two counts
    # every val_every epochs, and the per-layer prototype sums and start-up / final counts
    # spread over the epochs): below twice layer 1's gradient
    grad_bytes = sum(p.numel() * 4 for p in full.model.layers[0].parameters())
    assert 0 < dist["bytes_per_epoch_per_rank"][0] < 2 * grad_bytes
    # one halo exchange per layer, on every rank
    assert all(len(h) == OPTS["layers"] for h in dist["halo_bytes_per_layer"])


def test_rank_without_training_nodes(graph, tmp_path, one_thread):
    """Rank 1 owns only test nodes (no training or validation row), rank 2 owns nothing."""
    assign = np.zeros(graph.num_nodes, dtype=np.int64)
    test = graph.test_idx.numpy()
    assign[test[: test.size // 2]] = 1
    manifest = partition_graph(graph, 3, out_dir=tmp_path / "parts", assignment=assign)
    assert [p["num_train"] for p in manifest["parts"]][1:] == [0, 0] and manifest["parts"][2]["num_owned"] == 0
    _check(graph, tmp_path / "parts", 3, "gcn", "fixed")
