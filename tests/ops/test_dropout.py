"""``ops.dropout``: the counter-based inverted dropout, bitwise the same on every backend."""
from __future__ import annotations

import math

import pytest
import torch

import ffkernels
from ffkernels import ops
from ffkernels.backends.reference import dropout_keep

_available = ffkernels.available_backends()
needs_cpu = pytest.mark.skipif(not _available["cpu"]["available"], reason=f"cpu: {_available['cpu']['reason']}")
needs_triton = pytest.mark.skipif(not _available["triton"]["available"],
                                  reason=f"triton: {_available['triton']['reason']}")
TRITON_DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SEED = 2 ** 40 + 12345  # both 32-bit halves in use


def _x(n, dtype, seed=0):
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if n > 3:
        x[1], x[2], x[3] = float("nan"), float("inf"), -0.0
    return x


def _same(a, b):
    """Bitwise equal, NaN where NaN."""
    assert a.dtype == b.dtype and a.shape == b.shape
    assert torch.equal(a.isnan(), b.isnan())
    assert torch.equal(a.nan_to_num(0.0, 7.0, -7.0), b.nan_to_num(0.0, 7.0, -7.0))


def test_reference_keep_mask_is_the_documented_hash():
    """dropout_keep = mix32(mix32(lo32(i) ^ s0) ^ (hi32(i) + s1)) >= floor(p 2^32), in plain Python."""
    def mix32(v):
        v ^= v >> 16
        v = (v * 0x7FEB352D) & 0xFFFFFFFF
        v ^= v >> 15
        v = (v * 0x846CA68B) & 0xFFFFFFFF
        return v ^ (v >> 16)
    p, seed = 0.37, SEED
    keep = dropout_keep(50, p, seed, "cpu")
    s0, s1 = seed & 0xFFFFFFFF, seed >> 32
    expected = [mix32(mix32(i ^ s0) ^ s1) >= math.floor(p * 2 ** 32) for i in range(50)]
    assert keep.tolist() == expected


def test_reference_semantics_rate_and_repeatability():
    x = torch.ones(200_000)
    y = ops.dropout(x, 0.3, 5, backend="reference")
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.7) < 0.005  # 0.7 +- 5 sd
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert torch.equal(y, ops.dropout(x, 0.3, 5, backend="reference"))            # same seed, same mask
    other = ops.dropout(x, 0.3, 6, backend="reference") != 0
    assert abs(float((kept == other).float().mean()) - (0.7 ** 2 + 0.3 ** 2)) < 0.005  # independent seeds
    assert torch.equal(ops.dropout(x, 0.0, 5, backend="reference"), x)
    z = ops.dropout(_x(64, torch.float32), 0.5, 3, backend="reference")
    assert not z[~dropout_keep(64, 0.5, 3, "cpu")].isnan().any()  # a dropped NaN is 0


@needs_cpu
@pytest.mark.parametrize("isa", ["default", "avx2", "baseline"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [0, 1, 7, 33, 70_001])
def test_cpu_matches_reference_bitwise(monkeypatch, isa, dtype, n):
    if isa != "default":
        monkeypatch.setenv("FFKERNELS_CPU_ISA", isa)
    x = _x(n, dtype)
    for p in (0.0, 0.2, 0.9):
        _same(ops.dropout(x, p, SEED, backend="cpu"), ops.dropout(x, p, SEED, backend="reference"))


@needs_cpu
def test_cpu_threads_and_shapes_do_not_change_the_mask():
    x = _x(300_000, torch.float32).view(600, 500)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.dropout(x, 0.4, 11, backend="cpu")
        torch.set_num_threads(2)
        two = ops.dropout(x, 0.4, 11, backend="cpu")
    finally:
        torch.set_num_threads(threads)
    _same(one, two)
    _same(one.view(-1), ops.dropout(x.view(-1), 0.4, 11, backend="cpu"))  # the row-major index decides
    _same(one, ops.dropout(x.t().contiguous().t(), 0.4, 11, backend="cpu"))  # a strided x reads row-major


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu)])
def test_out_and_in_place(backend):
    x = _x(1000, torch.float32).view(10, 100)
    expected = ops.dropout(x, 0.25, 9, backend=backend)
    buf = torch.empty_like(x)
    assert ops.dropout(x, 0.25, 9, out=buf, backend=backend) is buf
    _same(buf, expected)
    y = x.clone()
    assert ops.dropout(y, 0.25, 9, out=y, backend=backend) is y
    _same(y, expected)
    rows = x.clone()
    ops.dropout(rows[:4], 0.25, 9, out=rows[:4], backend=backend)  # a contiguous row block in place
    _same(rows[:4], ops.dropout(x[:4], 0.25, 9, backend=backend))
    _same(rows[4:], x[4:])


@pytest.mark.parametrize("backend", ["reference", pytest.param("cpu", marks=needs_cpu)])
def test_gradient_is_the_same_mask(backend):
    x = torch.randn(50, 8, dtype=torch.float64, requires_grad=True)
    y = ops.dropout(x, 0.3, 21, backend=backend)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    torch.testing.assert_close(x.grad, ops.dropout(g, 0.3, 21, backend="reference"), rtol=0, atol=0)


def test_validation():
    x = torch.randn(4, 4)
    with pytest.raises(TypeError, match="x"):
        ops.dropout(x.numpy(), 0.1, 1)
    with pytest.raises(TypeError, match="x"):
        ops.dropout(torch.ones(3, dtype=torch.int64), 0.1, 1)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="p"):
            ops.dropout(x, p, 1)
    with pytest.raises(ValueError, match="p"):
        ops.dropout(x, float("nan"), 1)
    with pytest.raises(TypeError, match="seed"):
        ops.dropout(x, 0.1, 1.0)
    with pytest.raises(TypeError, match="seed"):
        ops.dropout(x, 0.1, True)
    for seed in (-1, 2 ** 63):
        with pytest.raises(ValueError, match="seed"):
            ops.dropout(x, 0.1, seed)
    with pytest.raises(ValueError, match="out"):
        ops.dropout(x, 0.1, 1, out=torch.empty(3, 4))
    with pytest.raises(TypeError, match="out"):
        ops.dropout(x, 0.1, 1, out=torch.empty(4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        t = x.t()
        ops.dropout(t, 0.1, 1, out=t)
    w = torch.randn(4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="in place"):
        ops.dropout(w, 0.1, 1, out=w)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_triton_matches_reference(dtype):
    x = _x(3000, dtype).to(TRITON_DEVICE)
    got = ops.dropout(x, 0.3, SEED, backend="triton")
    ref = ops.dropout(x.cpu(), 0.3, SEED, backend="reference")
    assert torch.equal(got.cpu() == 0, ref == 0)  # the same mask
    if dtype == torch.bfloat16 and TRITON_DEVICE.type == "cpu":
        # the interpreter truncates float32 -> bfloat16 (the GPU rounds to nearest): one ulp
        torch.testing.assert_close(got.cpu().float(), ref.float(), rtol=2 ** -7, atol=0, equal_nan=True)
    else:
        _same(got.cpu(), ref)
    y = x.clone()
    ops.dropout(y, 0.3, SEED, out=y, backend="triton")
    assert torch.equal(y.nan_to_num(0.0, 7.0, -7.0), got.nan_to_num(0.0, 7.0, -7.0))
