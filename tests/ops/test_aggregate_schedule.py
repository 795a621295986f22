"""The cache-aware schedule of the cpu aggregation: the last-level cache probe, the tile choice,
and the tiled path itself (forced on small graphs through FFKERNELS_LLC_BYTES): same results as
the reference, and bitwise the same as whole rows (a tile splits features, never an edge sum)."""
from __future__ import annotations

import pytest
import torch

from ffkernels import ops
from ffkernels.testing import GRAPHS, assert_close, edge_weights, features, make_graph, require_backend

REDUCES = ("sum", "mean", "max", "gcn")


@pytest.fixture
def ext():
    require_backend("cpu", "aggregate", "cpu", torch.float32)
    from ffkernels import _C
    return _C


def test_cache_probe_is_sane(ext, monkeypatch):
    info = ext.cache_info()
    assert info["source"] in ("sysfs", "sysconf", "fallback")
    assert (256 << 10) <= info["llc_bytes"] <= (512 << 20)
    assert ext.build_info()["llc_bytes"] == info["llc_bytes"]
    monkeypatch.setenv("FFKERNELS_LLC_BYTES", "3M")
    assert ext.cache_info() == {"llc_bytes": 3 << 20, "source": "env"}
    monkeypatch.setenv("FFKERNELS_LLC_BYTES", "garbage")
    assert ext.cache_info()["source"] != "env"


def test_schedule_by_size(ext, monkeypatch):
    monkeypatch.setenv("FFKERNELS_LLC_BYTES", "32M")
    small = ext.aggregate_schedule(10_000, 128, 4)  # 5 MB: fits, whole rows
    assert small["tile_features"] == 128
    tiled = ext.aggregate_schedule(20_000, 1024, 4)  # 80 MB, 8 MB budget: 400 B -> 96-float tiles
    assert tiled["tile_features"] == 96
    assert 20_000 * tiled["tile_features"] * 4 <= (32 << 20) // 4
    huge = ext.aggregate_schedule(1_000_000, 64, 4)  # even a 256 B tile overflows: no tiling
    assert huge["tile_features"] == 64
    for s in (small, tiled, huge):
        assert 8 <= s["prefetch_distance"] <= 64
    with pytest.raises(ValueError):
        ext.aggregate_schedule(10, 10, 0)


def _force_tiles(monkeypatch, ext, n, f, elem):
    monkeypatch.setenv("FFKERNELS_LLC_BYTES", str(4 * max(n, 1) * 300))  # 256-byte tiles per row
    tile = ext.aggregate_schedule(n, f, elem)["tile_features"]
    assert tile < f, (n, f, tile)
    return tile


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", GRAPHS)
def test_tiled_aggregate_matches_reference_and_whole_rows(ext, monkeypatch, kind, dtype):
    g = make_graph(kind)
    f = {torch.float32: 129, torch.float64: 70, torch.float16: 260, torch.bfloat16: 260}[dtype]
    x = features(g.num_nodes, f, dtype)
    w = edge_weights(g, dtype)
    whole = {(r, i): ops.aggregate(g, x, r, ew, backend="cpu") for r in REDUCES for i, ew in enumerate((None, w))}
    _force_tiles(monkeypatch, ext, g.num_nodes, f, x.element_size())
    for r in REDUCES:
        for i, ew in enumerate((None, w)):
            tiled = ops.aggregate(g, x, r, ew, backend="cpu")
            assert torch.equal(tiled, whole[(r, i)]), (r, i)
            if dtype == torch.float32:  # long (hub) rows: compare with the exact sums
                exact = ops.aggregate(g, x.double(), r, None if ew is None else ew.double(), backend="reference")
                assert_close(tiled, exact.float(), dtype)
            else:
                assert_close(tiled, ops.aggregate(g, x, r, ew, backend="reference"), dtype)


def test_tiled_aggregate_is_bitwise_repeatable_across_threads(ext, monkeypatch):
    g = make_graph("hub")
    x = features(g.num_nodes, 129)
    _force_tiles(monkeypatch, ext, g.num_nodes, 129, 4)
    first = [ops.aggregate(g, x, r, backend="cpu") for r in REDUCES]
    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            assert all(torch.equal(a, ops.aggregate(g, x, r, backend="cpu")) for a, r in zip(first, REDUCES)), n
    finally:
        torch.set_num_threads(old)
