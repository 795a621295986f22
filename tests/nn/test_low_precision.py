"""16-bit layers train and stay finite (float32 master copies in the optimiser): one Adam step
of a .half() FFGCNConv used to turn most weights into NaN (eps = 1e-8 is 0 in float16)."""
from __future__ import annotations

import copy

import pytest
import torch

from ffkernels.nn import FFGCNConv, FFLinear
from ffkernels.nn.optim import Float32Master

DTYPES = (torch.float16, torch.bfloat16)


def _problem():
    gen = torch.Generator().manual_seed(0)
    n = 60
    return torch.randint(0, n, (2, 240), generator=gen), torch.rand(n, 16, generator=gen), torch.arange(n) < 30


def _train(layer_cls, dtype, steps=150):
    edge_index, x, positive = _problem()
    torch.manual_seed(0)
    layer = layer_cls(16, 8).to(dtype)
    graph = edge_index if layer_cls is FFGCNConv else None
    losses = [layer.local_step(x.to(dtype), graph, positive=positive).loss for _ in range(steps)]
    return layer, losses


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layer_cls", [FFGCNConv, FFLinear])
def test_16_bit_layers_stay_finite_and_learn_like_float32(layer_cls, dtype):
    layer, losses = _train(layer_cls, dtype)
    _, reference = _train(layer_cls, torch.float32)
    assert isinstance(layer.optimizer, Float32Master)
    assert all(torch.isfinite(p).all() for p in layer.parameters())
    assert layer.weight.dtype == dtype
    assert losses[-1] < 0.8 * losses[0]                       # it learned
    assert abs(losses[-1] - reference[-1]) < 0.05 * reference[-1]  # as float32 does, up to rounding


@pytest.mark.parametrize("dtype", DTYPES)
def test_16_bit_optimizer_state_round_trips(dtype):
    edge_index, x, positive = _problem()
    torch.manual_seed(0)
    a = FFGCNConv(16, 8).to(dtype)
    for _ in range(5):
        a.local_step(x.to(dtype), edge_index, positive=positive)
    b = FFGCNConv(16, 8).to(dtype)
    b.load_state_dict(a.state_dict())
    b.optimizer.load_state_dict(copy.deepcopy(a.optimizer.state_dict()))  # as a checkpoint would
    for _ in range(5):
        a.local_step(x.to(dtype), edge_index, positive=positive)
        b.local_step(x.to(dtype), edge_index, positive=positive)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
