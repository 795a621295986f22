"""The command line: ``train`` (JSON report, splits, checkpoints, generated option flags, one-line
errors), ``predict`` (a saved model applied to a dataset), ``--version``, ``python -m ffkernels``."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest
import torch

from ffkernels.cli import main, parse_splits

FIELDS = ("dataset", "model", "algo", "split", "backend", "device", "test_accuracy", "val_accuracy",
          "epochs_per_layer", "train_seconds", "seconds_per_epoch", "peak_memory_bytes", "options", "versions",
          "threads")
TINY = ["--layers", "1", "--hidden", "16", "--epochs", "4", "--quiet"]


def test_train_writes_json_report_with_every_resolved_option(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = main(["train", "--dataset", "cora", "--model", "gcn", "--algo", "sf", "--layers", "1", "--hidden", "32",
               "--epochs", "6", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    for key in FIELDS:
        assert key in report, key
    assert report["dataset"] == "cora" and report["algo"] == "sf" and report["options"]["layers"] == 1
    assert report["options"]["tau"] == 1.0 and report["options"]["lr"] == 1e-2  # the algorithm's defaults
    assert report["options"]["dropout"] == 0.5 and report["options"]["select_layers"] is True
    assert report["versions"]["ffkernels"] and report["versions"]["torch"]
    assert report["device"] == "cpu" and report["backend"] in ("reference", "cpu")
    assert 0.0 <= report["test_accuracy"] <= 1.0 and 0.0 <= report["val_accuracy"] <= 1.0
    assert report["epochs_per_layer"] == [6]
    assert report["train_seconds"] > 0 and report["seconds_per_epoch"] > 0
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "sf | cora" in printed  # the summary table


def test_json_dash_writes_the_report_to_stdout_and_the_table_to_stderr(capsys):
    assert main(["train", "--dataset", "cora", *TINY[:-1], "--json", "-"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["algo"] == "sf" and "test_accuracy" in captured.err


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


def test_save_stop_and_resume_from_the_command_line(tmp_path):
    ckpt, a, b = tmp_path / "c.pt", tmp_path / "a.json", tmp_path / "b.json"
    common = ["train", "--dataset", "cora", "--layers", "2", "--hidden", "16", "--epochs", "6", "--quiet"]
    assert main(common + ["--json", str(a)]) == 0
    assert main(common + ["--save", str(ckpt), "--stop-after-epochs", "4"]) == 0
    assert main(common + ["--resume", str(ckpt), "--json", str(b)]) == 0
    ra, rb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ra["test_accuracy"] == rb["test_accuracy"] and ra["epochs_per_layer"] == rb["epochs_per_layer"]


def test_save_model_then_predict_gives_the_trained_accuracy(tmp_path, capsys):
    model, report, preds = tmp_path / "m.pt", tmp_path / "r.json", tmp_path / "p.csv"
    assert main(["train", "--dataset", "cora", *TINY, "--save-model", str(model), "--json", str(report)]) == 0
    assert main(["predict", str(model), "--dataset", "cora", "--out", str(preds), "--quiet"]) == 0
    rows = list(csv.reader(preds.open()))
    assert rows[0] == ["node", "prediction"] and len(rows) == 2708 + 1
    from ffkernels.datasets import load
    data = load("cora")
    pred = torch.tensor([int(r[1]) for r in rows[1:]])
    test_acc = float((pred[data.test_idx] == data.y[data.test_idx]).double().mean())
    assert test_acc == pytest.approx(json.loads(report.read_text())["test_accuracy"])


def test_algorithm_help_lists_its_own_options_with_defaults(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--algo", "sf", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "options of --algo sf" in text and "--tau" in text and "--val-mode" in text
    assert re.search(r"\(default:\s+1\.0\)", text)
    for name in ("sf", "sf-top-input", "sf-top-loss", "bp"):  # the algorithm list
        assert name in text
    with pytest.raises(SystemExit):
        main(["train", "--algo", "bp", "--help"])
    text = capsys.readouterr().out
    assert "--dropout" in text and "--tau" not in text
    assert re.search(r"rate of every layer's optimiser\s+\(default:\s+0\.01\)", text)  # bp's own lr default


@pytest.mark.parametrize("argv,needle", [
    (["train", "--dataset", "nope"], "--dataset"),
    (["train", "--algo", "nope"], "--algo"),
    (["train", "--model", "mlp", "--algo", "sf"], "--model"),
    (["train", "--dataset", "cora_ml", "--split", "9"], "split"),
    (["train", "--splits", "a-b"], "--splits"),
    (["train", "--resume", "/nonexistent/ckpt.pt"], "resume"),
    (["train", "--json", "/nonexistent/dir/out.json"], "--json"),
    (["train", "--save", "/nonexistent/dir/c.pt"], "save"),
    (["train", "--save-model", "/nonexistent/dir/m.pt"], "--save-model"),
    (["train", "--layers", "0"], "--layers"),
    (["train", "--val-every", "0"], "--val-every"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--hidden", "10000000"], "hidden"),
    (["train", "--algo", "sf", "--theta", "0.1"], "--theta is not an option of --algo sf; algorithms that have it"),
    (["train", "--algo", "sf", "--task", "link"], "--task"),
    (["train", "--device", "tpu"], "--device"),
    (["predict", "/nonexistent/model.pt", "--dataset", "cora"], "model"),
    (["nope"], "unknown command"),
])
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ffkernels: error:") and needle in err, err


def test_corrupt_or_foreign_checkpoint_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["train", "--dataset", "cora", *TINY, "--resume", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint" in err
    ckpt = tmp_path / "bp.pt"
    assert main(["train", "--dataset", "cora", "--algo", "bp", *TINY, "--save", str(ckpt)]) == 0
    assert main(["train", "--dataset", "cora", *TINY, "--resume", str(ckpt)]) == 2
    assert "written by algo 'bp'" in capsys.readouterr().err


def test_divergence_exits_1_naming_layer_and_epoch(capsys):
    assert main(["train", "--dataset", "cora", "--layers", "2", "--hidden", "8", "--epochs", "20", "--lr", "1e38",
                 "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and "layer" in err and "epoch" in err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("ffkernels ")


def test_parse_splits():
    assert parse_splits("0-4") == [0, 1, 2, 3, 4]
    assert parse_splits("0,2,3") == [0, 2, 3]
    assert parse_splits("1") == [1]


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "ffkernels", "train", "--dataset", "nope"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_diagnostics_prints_the_cosine_study(capsys):
    """--diagnostics: the table is followed by the cosines of the estimators to the true gradient."""
    assert main(["train", "--dataset", "digits", "--algo", "fg-guess", "--epochs", "2", "--diagnostics",
                 "--diagnostics-every", "5"]) == 0
    out = capsys.readouterr().out
    assert "cosine to the true gradient" in out
    line = next(x for x in out.splitlines() if "isotropic forward gradient" in x)
    mean, last = (float(v) for v in line.split()[-3::2])
    assert -1.0 <= mean <= 1.0 and -1.0 <= last <= 1.0
    assert "per layer" in out
