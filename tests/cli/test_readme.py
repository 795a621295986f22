"""The README's Python examples run as written (with fewer epochs) and learn."""
from __future__ import annotations

from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text()
    assert heading in text, f"README lost its section {heading!r}"
    return text.split(heading, 1)[1].split("```python", 1)[1].split("```", 1)[0]


def test_custom_training_loop_example_learns(one_thread):
    code = _python_block_after("### A custom training loop")
    assert "range(100)" in code
    namespace: dict = {}
    exec(code.replace("range(100)", "range(20)"), namespace)
    data, x, centroids = namespace["data"], namespace["x"], namespace["centroids"]
    predicted = (x @ centroids.T).argmax(1)
    test_accuracy = (predicted[data.test_idx] == data.y[data.test_idx]).float().mean().item()
    assert test_accuracy > 0.4, test_accuracy  # chance is 1/7


def test_layer_examples_run(one_thread):
    code = _python_block_after("### Layers")
    torch.manual_seed(0)
    n = 30
    edge_index = torch.randint(0, n, (2, 120))
    namespace = {"x": None}
    # The snippet uses two input widths (784 for the MLP, 1433 for the graph layers).
    mlp_x, x = torch.rand(n, 784), torch.rand(n, 1433)
    is_positive = torch.arange(n) < n // 2

    def my_objective(h):
        return (h ** 2).sum() / 2, h

    namespace.update(graph=edge_index, is_positive=is_positive, my_objective=my_objective)
    code = code.replace("mlp.local_step(x,", "mlp.local_step(mlp_x,")
    namespace.update(x=x, mlp_x=mlp_x)
    exec(code, namespace)
    assert namespace["h"].shape == (n, 128)


def test_training_example_runs(one_thread, tmp_path, monkeypatch):
    code = _python_block_after("### Training")
    assert "ffkernels.fit(" in code
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(code.replace("hidden=128)", "hidden=128, epochs=6, progress=False)"), namespace)
    assert namespace["labels"].shape == (2995,) and len(namespace["layers_h"]) == 4
    assert namespace["again"].metrics == namespace["trained"].metrics


def test_own_graph_example_trains_and_predicts(tmp_path, monkeypatch):
    from ffkernels.cli import main
    monkeypatch.chdir(tmp_path)
    exec(_python_block_after("### Your own graph"), {})
    text = README.read_text().split("### Your own graph", 1)[1]
    commands = text.split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].split() for line in commands.strip().splitlines()]
    assert [words[:2] for words in lines] == [["ffkernels", "train"], ["ffkernels", "predict"]]
    for words in lines:
        assert main(words[1:] + ["--quiet"]) == 0
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0] == "node,prediction" and len(rows) == 601
