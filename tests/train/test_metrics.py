"""The run metrics: activation sparsity and class-ensemble overlap (and that sf / ff report them)."""
import pytest
import torch

import ffkernels
from ffkernels.datasets import Dataset, synthetic
from ffkernels.train.metrics import activation_sparsity


def test_activation_sparsity_of_a_known_pattern():
    # class 0 uses units 0-1, class 1 uses units 1-2; unit 3 never fires
    h = torch.tensor([[1.0, 2.0, 0.0, 0.0], [3.0, 1.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0], [0.0, 4.0, 1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    out = activation_sparsity(h, y)
    assert out["zero_fraction"] == pytest.approx(0.5)
    assert out["active_per_row"] == pytest.approx(2.0)
    assert out["dead_units"] == pytest.approx(0.25)
    assert out["ensemble_size"] == pytest.approx(0.5)
    assert out["ensemble_overlap"] == pytest.approx(1 / 3)   # {0, 1} vs {1, 2}


@pytest.mark.parametrize("algo", ["sf", "ff"])
def test_sf_and_ff_report_per_layer_sparsity(algo, one_thread):
    data = synthetic(num_nodes=200, avg_degree=6, num_classes=3, num_features=12, seed=2)
    if algo == "ff":
        data = Dataset("features", data.x, data.y, data.train_idx, data.val_idx, data.test_idx, data.num_classes)
    trained = ffkernels.fit(data, algo, layers=2, hidden=16, epochs=4, progress=False)
    layers = trained.report["activation_sparsity"]
    assert len(layers) == 2
    for stats in layers:
        assert 0.0 <= stats["zero_fraction"] <= 1.0 and stats["ensemble_overlap"] is not None
