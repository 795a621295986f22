"""The time-to-accuracy suite on a small graph: probes are recorded after validations with
their own time excluded, the first point at the target is found, and the command line runs the
variants in fresh processes and reports them."""
from __future__ import annotations

import json
import time

import pytest

from ffkernels.benchmarking import time_to_accuracy as tta
from ffkernels.datasets import resolve
from ffkernels.testing import random_graph_data, write_npz


@pytest.fixture(scope="module")
def graph_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tta") / "g.npz"
    return str(write_npz(path, *random_graph_data(num_nodes=120, num_features=10, num_classes=3, seed=4)))


def test_probe_clock_excludes_the_probes_time():
    clock = tta.ProbeClock()
    clock.record(lambda: (time.sleep(0.2), 0.5)[1], 1)
    clock.record(lambda: 0.9, 2)
    assert [p["test_accuracy"] for p in clock.points] == [0.5, 0.9]
    assert clock.points[1]["elapsed"] - clock.points[0]["elapsed"] < 0.1  # the 0.2 s probe is not counted
    assert tta.first_reaching(clock.points, 0.6)["epoch"] == 2
    assert tta.first_reaching(clock.points, 0.95) is None


@pytest.mark.parametrize("variant", ["fused", "eager"])
def test_runners_record_probes(graph_file, variant):
    points, final = tta.RUNNERS[variant](resolve(graph_file), 0)
    assert len(points) >= 2 and 0.0 <= final <= 1.0
    elapsed = [p["elapsed"] for p in points]
    assert elapsed == sorted(elapsed) and elapsed[0] >= 0
    assert all(0.0 <= p["test_accuracy"] <= 1.0 for p in points)
    epochs = [p["epoch"] for p in points]
    assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)


def test_pyg_runner_trains_the_example_way(graph_file):
    pytest.importorskip("torch_geometric.nn")  # a third-party baseline, optional
    points, final = tta.RUNNERS["pyg"](resolve(graph_file), 0, max_epochs=60, patience=1000)
    assert [p["epoch"] for p in points] == list(range(1, 61))
    assert max(p["test_accuracy"] for p in points) > 0.5  # 3 classes: chance is ~0.33


def test_command_line_runs_variants_in_fresh_processes(graph_file, tmp_path, capsys):
    out = tmp_path / "tta.json"
    assert tta.main(["--datasets", graph_file, "--target", "0.0", "--variants", "fused,eager", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert [r["variant"] for r in records] == ["fused", "eager"]
    for r in records:
        assert "error" not in r, r
        assert r["seconds_to_target"] == r["points"][0]["elapsed"]  # target 0: the first probe reaches it
        assert r["threads"] == 1
    assert records[0]["fused_speedup"] == 1.0
    assert "| fused |" in capsys.readouterr().out


def test_bad_arguments_are_errors(graph_file):
    with pytest.raises(SystemExit):
        tta.main(["--datasets", graph_file, "--variants", "fused,nope", "--target", "0.5"])
    with pytest.raises(SystemExit):
        tta.main(["--datasets", graph_file])  # no default target for a user's file
    with pytest.raises(SystemExit):
        tta.main(["--threads", "0"])


def test_fit_probe_needs_an_algorithm_with_a_probe(graph_file):
    import ffkernels
    with pytest.raises(ValueError, match="has no probe"):
        ffkernels.fit(graph_file, "ff-la", layers=1, epochs=1, probe=True, progress=False)
