"""The functional helpers of the layers: dropout masks and row normalisation."""
from __future__ import annotations

import pytest
import torch

from ffkernels.nn.functional import keep_mask, normalize_rows


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_keep_mask_rate_and_independence(p):
    gen = torch.Generator().manual_seed(1)
    m = keep_mask((500, 401), p, gen)  # an odd count: the last random word is partly used
    assert m.dtype == torch.bool and m.shape == (500, 401)
    n = m.numel()
    kept = m.float().mean().item()
    assert abs(kept - (1 - p)) < 5 * ((p * (1 - p) / n) ** 0.5) + 1e-4
    if 0 < p < 1:  # neighbouring entries (lanes of one random word) are independent
        a, b = m.view(-1)[0::2][: n // 2].float(), m.view(-1)[1::2][: n // 2].float()
        assert abs((a * b).mean().item() - (1 - p) ** 2) < 0.01


def test_keep_mask_follows_its_generator():
    a = keep_mask(1000, 0.3, torch.Generator().manual_seed(5))
    b = keep_mask(1000, 0.3, torch.Generator().manual_seed(5))
    c = keep_mask(1000, 0.3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_keep_mask_rejects_bad_rates(p):
    with pytest.raises(ValueError, match="dropout probability"):
        keep_mask(10, p)


def test_normalize_rows_l2_and_rms():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    torch.testing.assert_close(normalize_rows(x, "l2"), torch.tensor([[0.6, 0.8], [0.0, 0.0]]))
    rms = (12.5 ** 0.5)
    torch.testing.assert_close(normalize_rows(x, "rms"), torch.tensor([[3 / rms, 4 / rms], [0.0, 0.0]]))
    assert normalize_rows(x, None) is x
