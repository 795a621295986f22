"""The halo exchange over torch.distributed (gloo on 127.0.0.1, 2 and 3 ranks) and the harness.

Every rank loads its part, exchanges the halo rows and aggregates locally; the results must
be bitwise equal to the single-process ``ops.aggregate`` on the full graph (each row's edges
are summed in the same order on the CPU kernels, and the GCN/mean factors are the global
ones), for every reduce, with and without edge weights, on a random graph with duplicates and
self loops, a hub graph, a graph with isolated nodes and partitionings with an empty part.
"""
from __future__ import annotations

import multiprocessing
import os
import time

import pytest
import torch

import ffkernels
from ffkernels import ops
from ffkernels.distributed import (HaloExchange, RankError, load_partition, local_aggregate, partition_graph,
                                   run_ranks)
from test_partition import REDUCES, hub_graph, isolated_graph, make_dataset, random_graph

FEATURES = 6


def _expected_outputs(data, x):
    graph = ffkernels.Graph.from_edge_index(data.edge_index, data.num_nodes)
    expected = {}
    for reduce in REDUCES:
        expected[(reduce, "none")] = ops.aggregate(graph, x, reduce)
        if data.edge_weight is not None:
            expected[(reduce, "stored")] = ops.aggregate(graph, x, reduce, data.edge_weight)
    if data.edge_weight is not None:
        expected[("gcn", "double")] = ops.aggregate(graph, x, "gcn", 2.0 * data.edge_weight)
    return expected


def make_case(tmp_path, name, data, world, method="metis", assignment=None):
    out_dir = tmp_path / name
    partition_graph(data, world, method, out_dir=out_dir, seed=1, assignment=assignment)
    gen = torch.Generator().manual_seed(len(name))
    x = torch.randn(data.num_nodes, FEATURES, generator=gen) - 0.25
    grads = torch.randn(data.num_nodes, FEATURES, generator=gen)
    parts = [load_partition(out_dir, r, world) for r in range(world)]
    reverse = torch.zeros(data.num_nodes, FEATURES)
    for r, p in enumerate(parts):  # each node's halo copies come back in rank order
        reverse.index_add_(0, p.halo, grads[p.halo] * (r + 1))
    return {"name": name, "dir": str(out_dir), "fingerprint": data.fingerprint(), "x": x, "grads": grads,
            "expected": _expected_outputs(data, x), "reverse": reverse,
            "send": [int(p.send_counts.sum()) for p in parts], "halo": [p.num_halo for p in parts]}


def _exchange_rank(rank, world, cases):
    """Rank body: exchange, aggregate and compare, for every case; returns the byte counts."""
    report = {"rank": rank, "ifname": os.environ.get("GLOO_SOCKET_IFNAME"), "env": os.environ.get("FFK_TEST_ENV"),
              "addr": os.environ.get("MASTER_ADDR"), "threads": torch.get_num_threads(), "cases": {}}
    for case in cases:
        name = case["name"]
        part = load_partition(case["dir"], rank, world, expect={"fingerprint": case["fingerprint"]})
        ex = HaloExchange(part)
        x = case["x"]
        owned = x[part.owned]
        halo = ex.exchange(owned)
        assert torch.equal(halo, x[part.halo]), f"{name}: exchanged rows differ from the owners' rows"
        row_bytes = FEATURES * 4
        assert ex.bytes_sent == int(part.send_counts.sum()) * row_bytes, name
        assert ex.bytes_received == part.num_halo * row_bytes, name
        assert torch.equal(ex.exchange(part.owned), part.halo), f"{name}: 1-D int64 exchange"  # ids travel too
        x_local = ex.with_halo(owned)
        for (reduce, weights), ref in case["expected"].items():
            if weights == "double":
                w = 2.0 * part.edge_weight
                if part.num_local_edges:
                    with pytest.raises(ValueError, match="deg_inv_sqrt"):
                        local_aggregate(part, x_local, reduce, w)
                out = local_aggregate(part, x_local, reduce, w, deg_inv_sqrt=ex.gcn_deg_inv_sqrt(w))
            else:
                out = local_aggregate(part, x_local, reduce, part.edge_weight if weights == "stored" else None)
            assert out.shape == (part.num_owned, FEATURES)
            torch.testing.assert_close(out, ref[part.owned], msg=lambda m: f"{name} {reduce} {weights}: {m}")
            assert torch.equal(out, ref[part.owned]), f"{name} {reduce} {weights}: not bitwise equal"
        before = ex.bytes_sent
        back = ex.reverse(case["grads"][part.halo] * (rank + 1))
        assert torch.equal(back, case["reverse"][part.owned]), f"{name}: reverse exchange"
        assert ex.bytes_sent - before == part.num_halo * row_bytes
        acc = torch.ones(part.num_owned, FEATURES)
        ex.reverse(case["grads"][part.halo] * (rank + 1), out=acc)
        torch.testing.assert_close(acc, 1.0 + case["reverse"][part.owned], rtol=1e-6, atol=1e-6)
        report["cases"][name] = {"bytes_sent": ex.bytes_sent, "bytes_received": ex.bytes_received,
                                 "calls": ex.calls, "seconds": ex.seconds}
    if world == 2:  # the part of another rank is refused
        other = load_partition(cases[0]["dir"], 1 - rank, world)
        with pytest.raises(ValueError, match="this process is rank"):
            HaloExchange(other)
    return report


def _check_reports(cases, reports, world):
    assert [r["rank"] for r in reports] == list(range(world))
    for r in reports:
        assert (r["ifname"], r["addr"], r["threads"]) == ("lo", "127.0.0.1", 1)
    for case in cases:
        for rank, report in enumerate(reports):
            got = report["cases"][case["name"]]
            extra_int64 = (case["send"][rank] * 8, case["halo"][rank] * 8)  # the 1-D int64 id exchange
            # exchange x, ids, with_halo(x), gcn factors (if weighted), reverse twice
            gcn = ("gcn", "double") in case["expected"]
            sent = case["send"][rank] * FEATURES * 4 * 2 + extra_int64[0] + case["send"][rank] * 4 * gcn \
                + 2 * case["halo"][rank] * FEATURES * 4
            assert got["bytes_sent"] == sent, (case["name"], rank, got)
            assert got["calls"] == 5 + gcn
            assert got["seconds"] >= 0


def test_exchange_and_aggregate_two_ranks(tmp_path):
    cases = [make_case(tmp_path, "random-metis-w", random_graph(weighted=True), 2, "metis"),
             make_case(tmp_path, "random-bfs", random_graph(), 2, "bfs"),
             make_case(tmp_path, "hub-random-w", hub_graph(weighted=True), 2, "random"),
             make_case(tmp_path, "isolated-range-w", isolated_graph(weighted=True), 2, "range")]
    assert all(sum(c["halo"]) > 0 for c in cases)
    reports = run_ranks(_exchange_rank, 2, cases, timeout=60, env={"FFK_TEST_ENV": "seen"})
    _check_reports(cases, reports, 2)
    assert [r["env"] for r in reports] == ["seen", "seen"] and "FFK_TEST_ENV" not in os.environ


def test_exchange_and_aggregate_three_ranks_with_empty_parts(tmp_path):
    tiny = make_dataset([[0, 1, 1], [1, 0, 1]], 2, name="two")
    data = random_graph(weighted=True)
    empty_middle = torch.tensor([0 if v % 3 else 2 for v in range(data.num_nodes)])
    cases = [make_case(tmp_path, "two-range", tiny, 3, "range"),  # P > N: part 2 is empty
             make_case(tmp_path, "random-empty-middle-w", data, 3, assignment=empty_middle),
             make_case(tmp_path, "random-random-w", random_graph(weighted=True, seed=5), 3, "random"),
             make_case(tmp_path, "hub-metis", hub_graph(), 3, "metis")]
    assert cases[0]["halo"] == [1, 1, 0] and cases[1]["halo"][1] == 0  # parts 2 and 1 are empty
    reports = run_ranks(_exchange_rank, 3, cases, timeout=60)
    _check_reports(cases, reports, 3)


# ---------------------------------------------------------------------------- the harness
def _raise_on_rank_one(rank, world):
    import torch.distributed as dist
    if rank == 1:
        raise KeyError("boom on rank one")
    dist.barrier()  # rank 0 waits for rank 1 (which never arrives): must not hang the test
    return rank


def _hang_on_rank_zero(rank, world, pid_dir):
    import torch.distributed as dist
    with open(os.path.join(pid_dir, f"{rank}.pid"), "w") as fh:
        fh.write(str(os.getpid()))
    if rank == 0:
        time.sleep(600)
    dist.barrier()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead, just not reaped
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_rank_exception_is_reported_with_its_rank():
    with pytest.raises(KeyError) as err:  # the rank's exception type, mixed with RankError
        run_ranks(_raise_on_rank_one, 2, timeout=30)
    assert isinstance(err.value, RankError) and err.value.rank == 1 and err.value.exc_type == "KeyError"
    text = str(err.value)
    assert text.startswith("rank 1 failed with KeyError")
    assert "boom on rank one" in text and "_raise_on_rank_one" in text  # the rank's traceback
    assert multiprocessing.active_children() == []


def test_hanging_rank_times_out_and_leaves_nothing_behind(tmp_path):
    timeout = 8.0
    start = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        run_ranks(_hang_on_rank_zero, 2, str(tmp_path), timeout=timeout)
    elapsed = time.monotonic() - start
    assert elapsed < timeout + 5, elapsed
    text = str(err.value)
    assert "ranks [0, 1] of 2 did not finish within the timeout of 8 s" in text
    assert "_hang_on_rank_zero" in text  # the stacks at the deadline
    assert err.value.ranks == [0, 1]
    pids = [int((tmp_path / f"{r}.pid").read_text()) for r in range(2)]
    assert sorted(pids) == sorted(err.value.pids)
    assert not any(_alive(pid) for pid in pids)
    assert multiprocessing.active_children() == []


def test_harness_rejects_unpicklable_functions():
    with pytest.raises(TypeError, match="module-level function"):
        run_ranks(lambda rank, world: rank, 2)
    with pytest.raises(ValueError, match="world_size"):
        run_ranks(_raise_on_rank_one, 0)
