"""Distributed training == single-process training (gloo on 127.0.0.1, 2 and 3 ranks, tiny data,
every run time-boxed by the harness): partitioned sf, data-parallel ff / symba / cff, pipelined ff;
partitions that do not fit the run are refused before training."""
from __future__ import annotations

import pytest
import torch

import ffkernels
from ffkernels.datasets import Dataset, synthetic
from ffkernels.distributed import RankError, partition_graph, run_ranks

# without dropout the distributed run computes what single-process sf does (dropout masks come
# from another random stream per rank: equal in distribution, not bitwise)
SF_OPTS = dict(layers=2, hidden=8, epochs=12, val_every=2, patience=100, seed=3, dropout=0.0, input_dropout=0.0,
               progress=False)
# float sums in another order (per-rank partials, then the all-reduce) are the only difference:
# after a dozen Adam steps parameters agree to ~1e-7 relative; 1e-5 leaves room for the
# steps' amplification of rounding differences without hiding a wrong gradient (~1e-2).
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def graph():
    return synthetic(num_nodes=240, avg_degree=6, num_classes=3, num_features=12, seed=5, homophily=0.8)


def _state(trained):
    return {k: v.detach().clone() for k, v in trained.model.state_dict().items()}


def _sf_rank(rank, world, directory, model):
    trained = ffkernels.fit(None, "sf", model=model, distributed={"partitions": directory, "timeout": 60}, **SF_OPTS)
    return _state(trained), trained.metrics, trained.report["distributed"]


@pytest.mark.parametrize("world,model,method", [(2, "gcn", "metis"), (3, "gcn", "random"), (2, "sage", "bfs")])
def test_partitioned_sf_equals_single_process(graph, tmp_path, world, model, method, one_thread):
    partition_graph(graph, world, method, out_dir=tmp_path / "parts")
    full = ffkernels.fit(graph, "sf", model=model, **SF_OPTS)
    results = run_ranks(_sf_rank, world, str(tmp_path / "parts"), model, timeout=120)
    want = _state(full)
    for state, metrics, report in results:
        for name, value in want.items():
            torch.testing.assert_close(state[name], value, rtol=RTOL, atol=ATOL, msg=name)
        assert abs(metrics["test_accuracy"] - full.metrics["test_accuracy"]) <= 2 / graph.test_idx.numel()
    for state, _, _ in results[1:]:  # the replicas are identical, bitwise
        assert all(torch.equal(state[k], results[0][0][k]) for k in state)
    report = results[0][2]
    assert report["world_size"] == world and report["mode"] == "partition"
    # per epoch only the layer's gradients (plus the virtual rows' and the loss) travel
    per_epoch = report["bytes_per_epoch_per_rank"][0]
    grad_bytes = sum(p.numel() * 4 for p in full.model.layers[0].parameters())
    assert 0 < per_epoch < 4 * grad_bytes


def _mlp_rank(rank, world, data, algo, mode, opts):
    trained = ffkernels.fit(data, algo, distributed={"mode": mode, "timeout": 60}, **opts)
    return _state(trained), trained.metrics, trained.report


def _features(graph):
    return Dataset("features", graph.x, graph.y, graph.train_idx, graph.val_idx, graph.test_idx, graph.num_classes)


@pytest.mark.parametrize("algo", ["ff", "symba", "cff"])
def test_data_parallel_mlp_equals_single_process(graph, algo, one_thread):
    data = _features(graph)
    opts = dict(layers=2, hidden=16, epochs=4, batch_size=20, patience=100, seed=2, progress=False)
    full = ffkernels.fit(data, algo, **opts)
    results = run_ranks(_mlp_rank, 2, data, algo, "data", opts, timeout=120)
    for state, metrics, _ in results:
        for name, value in _state(full).items():
            torch.testing.assert_close(state[name], value, rtol=1e-4, atol=1e-5, msg=name)


def test_pipelined_ff_equals_the_single_process_schedule(graph, one_thread):
    data = _features(graph)
    opts = dict(layers=3, hidden=16, epochs=6, batch_size=20, patience=100, seed=2, head=False,
                inference="goodness", progress=False)
    full = ffkernels.fit(data, "ff", **opts)
    results = run_ranks(_mlp_rank, 3, data, "ff", "pipeline", opts, timeout=120)
    for state, metrics, report in results:
        for name, value in _state(full).items():
            torch.testing.assert_close(state[name], value, rtol=RTOL, atol=ATOL, msg=name)
        assert metrics["test_accuracy"] == pytest.approx(full.metrics["test_accuracy"])
        assert metrics["test_accuracy"] > 0.5  # 3 classes: it learned
    timeline = [r["distributed"]["ranks"] for r, in [(results[0][2],)]][0]
    busy = [r["pipeline"]["busy_seconds"] for r in timeline]
    assert all(b > 0 for b in busy) and timeline[2]["pipeline"]["idle_seconds"] >= 0


def _refused_rank(rank, world, directory):
    ffkernels.fit(None, "sf", distributed={"partitions": directory, "timeout": 30}, **SF_OPTS)


def test_partitions_that_do_not_fit_the_run_are_refused(graph, tmp_path):
    partition_graph(graph, 3, "random", out_dir=tmp_path / "three")
    with pytest.raises(RankError, match="world.size|num_parts|3 parts"):
        run_ranks(_refused_rank, 2, str(tmp_path / "three"), timeout=60)


def _sf_dropout_rank(rank, world, directory, ckpt, stop):
    opts = dict(SF_OPTS, dropout=0.5, input_dropout=0.2)
    dist = {"partitions": directory, "timeout": 60}
    full = ffkernels.fit(None, "sf", distributed=dist, **opts)
    ffkernels.fit(None, "sf", distributed=dist, save=ckpt, stop_after_epochs=stop, **opts)
    resumed = ffkernels.fit(None, "sf", distributed=dist, resume=ckpt, **opts)
    return _state(full), _state(resumed), full.metrics


def test_partitioned_sf_with_dropout_learns_and_resumes_exactly(graph, tmp_path, one_thread):
    partition_graph(graph, 2, "metis", out_dir=tmp_path / "parts")
    results = run_ranks(_sf_dropout_rank, 2, str(tmp_path / "parts"), str(tmp_path / "ck.pt"), 7, timeout=180)
    for full, resumed, metrics in results:
        assert all(torch.equal(full[k], resumed[k]) for k in full)
        assert metrics["test_accuracy"] > 0.45  # 3 classes: chance 1/3 after 12 epochs a layer
    assert all(torch.equal(results[0][0][k], results[1][0][k]) for k in results[0][0])
