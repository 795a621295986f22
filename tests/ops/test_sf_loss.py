"""The compiled SF loss (docs/algorithms.md#sf): every backend against the reference
(``ffkernels.backends.reference.sf_loss_grad``), the closed form against autograd in float64,
determinism, the raw ops' checks, and the public signatures trainers rely on."""
from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

import ffkernels
from ffkernels import ops
from ffkernels.backends import reference
from ffkernels.ops import sf as sf_module
from ffkernels.testing import assert_close, backend_module, interpreted, require_backend

CASES = {  # name: (num rows of h, D, n_train, C)
    "basic": (60, 16, 40, 4),
    "wide_rows": (50, 129, 30, 3),      # D not a power of two, several D tiles
    "many_classes": (120, 12, 60, 37),  # C padded to 64
    "one_class": (20, 5, 12, 1),
    "no_train_rows": (10, 7, 0, 3),
    "one_train_row": (10, 7, 1, 3),
}


def sf_case(rows, d, n_train, c, dtype=torch.float32, device="cpu", seed=0, duplicates=False):
    gen = torch.Generator().manual_seed(seed)
    h = torch.rand(rows, d, generator=gen, dtype=torch.float64).mul(2.0)
    perm = torch.randperm(rows, generator=gen)
    virtual_idx = perm[:c]
    train_idx = perm[c:c + n_train]
    if duplicates and n_train > 2:
        train_idx = torch.cat([train_idx[:-2], train_idx[:2]])  # a row counted twice
    y = torch.randint(0, c, (n_train,), generator=gen)
    return h.to(dtype).to(device), train_idx.to(device), y.to(device), virtual_idx.to(device)


@pytest.mark.parametrize("case", list(CASES))
def test_sf_loss_grad_matches_reference(backend, device, case):
    require_backend(backend, "sf_loss_grad", device, torch.float32)
    rows, d, n_train, c = CASES[case]
    for duplicates in (False, True):
        h, tr, y, v = sf_case(rows, d, n_train, c, device=device, duplicates=duplicates)
        for tau in (1.0, 0.3):
            expected = ops.sf_loss_grad(h, tr, y, v, tau, backend="reference")
            actual = ops.sf_loss_grad(h, tr, y, v, tau, backend=backend)
            for a, e in zip(actual, expected):
                assert_close(a, e, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_sf_loss_grad_dtypes(backend, device, dtype):
    require_backend(backend, "sf_loss_grad", device, dtype)
    h, tr, y, v = sf_case(80, 33, 50, 5, dtype, device)
    expected = ops.sf_loss_grad(h, tr, y, v, 0.5, backend="reference")
    actual = ops.sf_loss_grad(h, tr, y, v, 0.5, backend=backend)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    assert actual[0].dtype == acc and actual[1].dtype == dtype
    assert_close(actual[0], expected[0], acc if dtype == torch.float64 else dtype)
    assert_close(actual[1], expected[1], dtype)


def test_sf_loss_grad_non_contiguous_and_gathered_rows(backend, device):
    require_backend(backend, "sf_loss_grad", device, torch.float32)
    h, tr, y, v = sf_case(40, 9, 25, 3, device=device)
    ht = h.t().contiguous().t()
    assert not ht.is_contiguous()
    expected = ops.sf_loss_grad(h, tr, y, v, backend="reference")
    for a, e in zip(ops.sf_loss_grad(ht, tr, y, v, backend=backend), expected):
        assert_close(a, e, torch.float32)


def test_sf_triton_more_classes_than_one_tile(device):
    require_backend("triton", "sf_loss_grad", device, torch.float32)
    from ffkernels.triton import sf as tsf
    h, tr, y, v = sf_case(tsf.MAX_CLASSES + 40, 4, 20, tsf.MAX_CLASSES + 5, device=device)
    for a, e in zip(ops.sf_loss_grad(h, tr, y, v, backend="triton"), ops.sf_loss_grad(h, tr, y, v, backend="reference")):
        assert_close(a, e, torch.float32)


@pytest.mark.parametrize("name", ["reference", "cpu", "cuda"])
@pytest.mark.parametrize("tau", [1.0, 0.4])
def test_sf_closed_form_equals_autograd_float64(name, device, tau):
    if not (ffkernels.available_backends()[name]["available"]
            and backend_module(name).supports("sf_loss_grad", torch.device(device), torch.float64)):
        pytest.skip(f"{name} does not serve float64 sf_loss_grad on {device}")
    h, tr, y, v = sf_case(70, 11, 45, 6, torch.float64, device, duplicates=True)
    loss, grad_rows, rows = ops.sf_loss_grad(h, tr, y, v, tau, backend=name)
    hh = h.clone().requires_grad_(True)
    ref = F.cross_entropy(hh[tr] @ hh[v].t() / tau, y)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-12)
    dense = torch.zeros_like(h).index_add_(0, rows, grad_rows)
    torch.testing.assert_close(dense, hh.grad, rtol=1e-10, atol=1e-14)


def test_sf_cpu_bitwise_repeatable_across_threads():
    require_backend("cpu", "sf_loss_grad", "cpu", torch.float32)
    h, tr, y, v = sf_case(3000, 40, 2500, 7)  # 10 row blocks
    first = ops.sf_loss_grad(h, tr, y, v, backend="cpu")
    old = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            again = ops.sf_loss_grad(h, tr, y, v, backend="cpu")
            assert all(torch.equal(a, b) for a, b in zip(first, again)), n
    finally:
        torch.set_num_threads(old)


def test_sf_default_backend_for_cpu_tensors_is_compiled():
    require_backend("cpu", "sf_loss_grad", "cpu", torch.float32)
    from ffkernels.backends import resolve
    assert resolve("sf_loss_grad", None, torch.device("cpu"), torch.float32).NAME == "cpu"


def test_sf_raw_op_checks():
    require_backend("cpu", "sf_loss_grad", "cpu", torch.float32)
    h, tr, y, v = sf_case(20, 4, 10, 3)
    op = torch.ops.ffkernels.sf_loss_grad
    with pytest.raises(RuntimeError, match="train_idx"):
        op(h, tr + 100, y, v, 1.0)
    with pytest.raises(RuntimeError, match="virtual_idx"):
        op(h, tr, y, v - 100, 1.0)
    with pytest.raises(RuntimeError, match="y_train"):
        op(h, tr, y + 3, v, 1.0)
    with pytest.raises(RuntimeError, match="tau"):
        op(h, tr, y, v, 0.0)
    torch.library.opcheck(op.default, (h, tr, y, v, 0.7))


def test_sf_refuses_autograd():
    h, tr, y, v = sf_case(20, 4, 10, 3)
    with pytest.raises(RuntimeError, match="no autograd"):
        ops.sf_loss_grad(h.requires_grad_(True), tr, y, v)


def test_sf_reference_lives_with_the_other_references_and_signatures_are_kept():
    assert not hasattr(sf_module, "_reference")
    h, tr, y, v = sf_case(30, 5, 20, 3)
    loss, grad = reference.sf_loss_grad(h, tr, y, v, 1.0)
    assert grad.shape == (23, 5)
    assert list(inspect.signature(ops.sf_loss_grad).parameters) == ["h", "train_idx", "y_train", "virtual_idx",
                                                                     "tau", "dense", "backend"]
    assert list(inspect.signature(ops.sf_logits).parameters) == ["h", "virtual_idx", "tau", "idx"]
    assert list(inspect.signature(sf_module.sf_loss_grad_kernel).parameters) == ["h", "train_idx", "y_train",
                                                                                  "virtual_idx", "tau", "backend"]
    out = sf_module.sf_loss_grad_kernel(h, tr, y, v, 1.0)
    assert isinstance(out, tuple) and len(out) == 2
