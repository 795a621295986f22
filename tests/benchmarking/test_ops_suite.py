"""``ffkernels bench --suite ops``: runs from the package (no benchmarks/ checkout needed), one
record per op and implementation with the limit and the ratio to ffkernels; the CLI wiring."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ffkernels
from ffkernels.benchmarking import ops_suite

pytestmark = pytest.mark.skipif(not ffkernels.available_backends()["cpu"]["available"], reason="cpu backend")


def test_power_law_graph_is_skewed():
    ei = ops_suite.power_law_edges(10_000, 100_000)
    deg = ei[1].bincount(minlength=10_000)
    assert ei.shape == (2, 100_000) and int(deg.max()) > 50 * float(deg.float().mean())


def test_suite_records(tmp_path):
    results = ops_suite.run(quick=True, threads=1, only="sf,linear", min_run_time=0.01)
    meta, records = results["meta"], results["records"]
    assert meta["threads"] == 1 and meta["copy_bandwidth_gbps"] > 0 and meta["backends"]["sf_loss_grad"] == "cpu"
    ops = {r["op"] for r in records}
    assert ops == {"sf_loss_grad", "linear_goodness_step ff"}
    for r in records:
        assert r["best_ms"] > 0 and r["limit_ms"] > 0 and r["median_ms"] >= r["best_ms"]
        assert r["ratio_vs_ours"] == pytest.approx(r["best_ms"] / next(
            o["best_ms"] for o in records if o["op"] == r["op"] and o["kind"] == "ours"))
    text = ops_suite.markdown(results)
    assert "| sf_loss_grad | ffkernels |" in text and "copy bandwidth" in text and "1 threads" in text


def test_cli_runs_the_ops_suite(tmp_path):
    out = tmp_path / "ops.json"
    md = tmp_path / "ops.md"
    proc = subprocess.run([sys.executable, "-m", "ffkernels", "bench", "--suite", "ops", "--quick", "--only", "sf",
                           "--threads", "1", "--min-run-time", "0.01", "--json", str(out), "--out", str(md)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| sf_loss_grad |" in proc.stdout and md.read_text().startswith("ffkernels op benchmarks")
    assert {r["impl"] for r in json.loads(out.read_text())["records"]} == {"ffkernels", "eager torch (reference)"}
    bad = subprocess.run([sys.executable, "-m", "ffkernels", "bench", "--suite", "ops", "--threads", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "threads" in bad.stderr
