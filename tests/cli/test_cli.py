"""The ``ffkernels train`` command line: JSON report fields, several splits, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ffkernels.cli import main, parse_splits

FIELDS = ("dataset", "model", "algo", "layers", "split", "backend", "device", "test_accuracy", "val_accuracy",
          "epochs_per_layer", "train_seconds", "seconds_per_epoch", "peak_memory_bytes")


def test_train_writes_json_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["train", "--dataset", "cora", "--model", "gcn", "--algo", "sf", "--layers", "1", "--hidden", "32",
               "--epochs", "6", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    for key in FIELDS:
        assert key in report, key
    assert report["dataset"] == "cora" and report["algo"] == "sf" and report["layers"] == 1
    assert report["device"] == "cpu" and report["backend"] in ("reference", "cpu")
    assert 0.0 <= report["test_accuracy"] <= 1.0 and 0.0 <= report["val_accuracy"] <= 1.0
    assert report["epochs_per_layer"] == [6]
    assert report["train_seconds"] > 0 and report["seconds_per_epoch"] > 0
    assert report["peak_memory_bytes"] >= 0
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "sf | cora" in printed  # the summary table


def test_several_splits_report_mean_and_std(tmp_path):
    out = tmp_path / "s.json"
    rc = main(["train", "--dataset", "cora_ml", "--algo", "sf", "--layers", "1", "--hidden", "16", "--epochs", "2",
               "--splits", "0-1", "--quiet", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["splits"] == [0, 1] and len(report["runs"]) == 2
    assert "test_accuracy_std" in report
    mean = sum(r["test_accuracy"] for r in report["runs"]) / 2
    assert report["test_accuracy"] == pytest.approx(mean)


def test_save_and_resume_from_the_command_line(tmp_path):
    ckpt, a, b = tmp_path / "c.pt", tmp_path / "a.json", tmp_path / "b.json"
    common = ["train", "--dataset", "cora", "--layers", "2", "--hidden", "16", "--epochs", "6", "--quiet"]
    assert main(common + ["--json", str(a)]) == 0
    assert main(common + ["--save", str(ckpt), "--stop-after-epochs", "4"]) == 0
    assert main(common + ["--resume", str(ckpt), "--json", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["test_accuracy"] == rb["test_accuracy"] and ra["epochs_per_layer"] == rb["epochs_per_layer"]


@pytest.mark.parametrize("argv,needle", [
    (["train", "--dataset", "nope"], "--dataset"),
    (["train", "--algo", "nope"], "--algo"),
    (["train", "--model", "mlp", "--algo", "sf"], "--model"),
    (["train", "--dataset", "cora_ml", "--split", "9"], "split"),
    (["train", "--splits", "a-b"], "--splits"),
    (["train", "--resume", "/nonexistent/ckpt.pt"], "--resume"),
    (["train", "--json", "/nonexistent/dir/out.json"], "--json"),
    (["train", "--layers", "0"], "--layers"),
    (["train", "--dataset", "digits", "--algo", "sf"], "digits"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ffkernels: error:") and needle in err, err


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train", "--dataset", "cora", "--layers", "1", "--epochs", "2", "--quiet", "--resume", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint" in err


def test_help_lists_algorithms_and_models(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("sf", "sf-top-input", "sf-top-loss", "bp", "gcn", "sage", "gat", "mlp"):
        assert name in text


def test_parse_splits():
    assert parse_splits("0-4") == [0, 1, 2, 3, 4]
    assert parse_splits("0,2,3") == [0, 2, 3]
    assert parse_splits("1") == [1]


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "ffkernels", "train", "--dataset", "nope"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
