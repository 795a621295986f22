"""The training engine, for every registered algorithm: resume == uninterrupted (bitwise),
checkpoints refuse other runs, the caller's RNG is left alone, options are typed and checked."""
from __future__ import annotations

import os

import pytest
import torch

import ffkernels
from ffkernels.datasets import Dataset, synthetic
from ffkernels.train import CheckpointError, load_algorithms
from ffkernels.train.checkpoint import read_checkpoint

ALL_ALGORITHMS = ("sf", "sf-top-input", "sf-top-loss", "ff-la", "ff-vn", "fl-ce", "fl-ff", "fl-top", "ff",
                  "ff-hard", "symba", "cff", "pepita", "bp", "dfa", "dfa-graph", "fg", "fg-local", "fg-guess")


def _graph():
    return synthetic(num_nodes=90, avg_degree=6, num_classes=3, num_features=12, seed=5, homophily=0.8)


def _features_only(data):
    return Dataset("features", data.x, data.y, data.train_idx, data.val_idx, data.test_idx, data.num_classes)


@pytest.fixture(scope="module")
def tiny():
    graph = _graph()
    return {"node": graph, "link": graph, "mlp": _features_only(graph)}


def _options(spec):
    opts = dict(layers=2, hidden=8, epochs=5, val_every=2, patience=2, seed=3, progress=False)
    if spec.task == "mlp":
        opts["batch_size"] = 16
    return opts


def test_every_algorithm_is_registered():
    assert sorted(load_algorithms()) == sorted(ALL_ALGORITHMS)


def _stop_points(total: int):
    """A mid-stage stop, and stops around the first stage boundary."""
    return sorted({1, max(total // 2, 1), max(total - 1, 1)})


@pytest.mark.parametrize("algo", sorted(load_algorithms()))
def test_resume_equals_uninterrupted(algo, tiny, tmp_path, one_thread):
    spec = load_algorithms()[algo]
    data, opts = tiny[spec.task], _options(spec)
    full = ffkernels.fit(data, algo, **opts)
    assert not full.report["stopped"]
    total = full.report["total_epochs"]
    assert total >= 2
    for stop in _stop_points(total):
        ckpt = str(tmp_path / f"{algo}-{stop}.pt")
        part = ffkernels.fit(data, algo, **opts, save=ckpt, stop_after_epochs=stop)
        assert part.report["stopped"] and part.report["total_epochs"] >= stop
        assert read_checkpoint(ckpt)["position"]["total_epochs"] == part.report["total_epochs"]
        resumed = ffkernels.fit(data, algo, **opts, resume=ckpt, save=ckpt)
        for (name, want), (name2, got) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
            assert name == name2
            assert torch.equal(want, got), (algo, stop, name)
        assert resumed.metrics == full.metrics, (algo, stop)
        assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history], (algo, stop)
        assert read_checkpoint(ckpt)["position"]["done"]


@pytest.mark.parametrize("algo", sorted(load_algorithms()))
def test_fit_leaves_global_rng_alone_and_save_load_predicts_the_same(algo, tiny, tmp_path, one_thread):
    spec = load_algorithms()[algo]
    data, opts = tiny[spec.task], dict(_options(spec), epochs=2)
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    trained = ffkernels.fit(data, algo, **opts)
    assert torch.equal(torch.get_rng_state(), before)
    assert trained.evaluate(data) == trained.metrics
    path = str(tmp_path / "model.pt")
    trained.save(path)
    again = ffkernels.load_model(path)
    assert again.evaluate(data) == trained.metrics
    assert again.options == trained.options


def test_resume_refuses_another_run(tiny, tmp_path, one_thread):
    data = tiny["node"]
    opts = dict(layers=1, hidden=8, epochs=4, val_every=2, patience=2, progress=False)
    ckpt = str(tmp_path / "sf.pt")
    ffkernels.fit(data, "sf", **opts, save=ckpt, stop_after_epochs=2)
    with pytest.raises(CheckpointError, match="algo 'sf'"):
        ffkernels.fit(data, "sf-top-loss", **opts, resume=ckpt)
    with pytest.raises(CheckpointError, match="model="):
        ffkernels.fit(data, "sf", model="sage", **opts, resume=ckpt)
    with pytest.raises(CheckpointError, match="hidden="):
        ffkernels.fit(data, "sf", **dict(opts, hidden=16), resume=ckpt)
    other = synthetic(num_nodes=90, avg_degree=6, num_classes=3, num_features=12, seed=6)
    with pytest.raises(CheckpointError, match="another dataset"):
        ffkernels.fit(other, "sf", **opts, resume=ckpt)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(open(ckpt, "rb").read()[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        ffkernels.fit(data, "sf", **opts, resume=str(truncated))
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        ffkernels.fit(data, "sf", **opts, resume=str(tmp_path / "missing.pt"))


def test_checkpoint_loads_weights_only_and_is_written_atomically(tiny, tmp_path, one_thread):
    ckpt = tmp_path / "run.pt"
    ffkernels.fit(tiny["node"], "sf", layers=1, hidden=8, epochs=4, patience=2, progress=False, save=str(ckpt))
    torch.load(ckpt, weights_only=True)  # raises if anything but tensors and plain containers is stored
    assert [p for p in os.listdir(tmp_path) if p.startswith(".ckpt-")] == []


def test_save_every_and_final_checkpoint(tiny, tmp_path, one_thread):
    ckpt = tmp_path / "run.pt"
    ffkernels.fit(tiny["node"], "sf", layers=2, hidden=8, epochs=6, patience=3, progress=False, save=str(ckpt),
                  save_every=1)
    state = read_checkpoint(str(ckpt))
    assert state["position"]["done"] and len(state["stages"]) == 2


@pytest.mark.parametrize("bad,match", [
    (dict(layers=0), "layers must be >= 1"),
    (dict(val_every=0), "val_every must be >= 1"),
    (dict(lr=float("inf")), "lr must be finite"),
    (dict(lr=-1.0), "lr must be > 0"),
    (dict(patience=1.5), "patience must be an int"),
    (dict(theta=2.0), "has no option 'theta'"),
    (dict(batch_size=32), "has no option 'batch_size'"),
    (dict(model="mlp"), "model must be one of"),
    (dict(val_mode="best"), "val_mode must be one of"),
    (dict(hidden=10_000_000), "hidden must be <=|GiB"),
])
def test_bad_options_are_named_errors_before_any_work(tiny, bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ffkernels.fit(tiny["node"], "sf", progress=False, **bad)


def test_unwritable_paths_fail_before_training(tiny, tmp_path):
    with pytest.raises(ValueError, match="save: directory"):
        ffkernels.fit(tiny["node"], "sf", progress=False, save=str(tmp_path / "no" / "dir" / "x.pt"))
    with pytest.raises(ValueError, match="log: directory"):
        ffkernels.fit(tiny["node"], "sf", progress=False, log=str(tmp_path / "no" / "x.jsonl"))


def test_non_finite_loss_names_layer_and_epoch(tiny, one_thread):
    # a finite but absurd learning rate: the weights overflow and the loss becomes non-finite
    with pytest.raises(FloatingPointError, match=r"non-finite training loss .* in layer \d/2, epoch \d+"):
        ffkernels.fit(tiny["node"], "sf", layers=2, hidden=8, epochs=20, lr=1e38, progress=False)


def test_log_writes_one_json_line_per_epoch(tiny, tmp_path, one_thread):
    import json
    log = tmp_path / "log.jsonl"
    trained = ffkernels.fit(tiny["node"], "sf", layers=2, hidden=8, epochs=4, patience=5, progress=False,
                            log=str(log))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == len(trained.history) == trained.report["total_epochs"]
    assert {"stage", "epoch", "loss", "val"} <= set(lines[0])
