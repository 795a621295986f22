"""``ops.linear_jvp``, the dual-number linear layer: every usable backend against the reference
(random shapes, non-powers of two, every optional argument absent or present, float32 /
float64 / half types where supported), the reference against ``torch.func.jvp`` in float64,
the Triton kernel's tile edges, the raw compiled op's checks and schema, and bad inputs named.
Shapes are small: the Triton backend runs under its interpreter on CPU-only machines.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import ffkernels
from ffkernels import ops
from ffkernels.backends import reference
from ffkernels.testing import HALF_TOL, assert_close, backend_module, interpreted, require_backend

SHAPES = [(0, 4, 3), (1, 1, 1), (50, 17, 129), (64, 129, 33), (7, 200, 5)]
SMALL_SHAPES = [(0, 4, 3), (1, 1, 1), (19, 17, 20), (5, 33, 3)]  # the Triton interpreter
# Which optional inputs are given: (dx, tangent_weight, bias, tangent_bias).
PRESENCE = [p for p in itertools.product([True, False], repeat=4) if p[2] or not p[3]]


def jvp_inputs(n, din, dout, dtype=torch.float32, device="cpu", seed=0, presence=(True, True, True, True)):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).to(dtype).to(device)

    x, dx = r(n, din), r(n, din)
    w, v = r(dout, din, scale=din ** -0.5), r(dout, din)
    b, db = r(dout, scale=0.1), r(dout)
    has_dx, has_v, has_b, has_db = presence
    return (x, dx if has_dx else None, w, v if has_v else None, b if has_b else None, db if has_db else None)


def _presence_id(p):
    return "".join(name if given else "-" for name, given in zip(("dx", "V", "b", "db"), p))


# ----------------------------------------------------------------------------- the reference
@pytest.mark.parametrize("presence", PRESENCE, ids=_presence_id)
def test_reference_equals_torch_func_jvp_float64(presence):
    x, dx, w, v, b, db = jvp_inputs(23, 11, 9, torch.float64, presence=presence, seed=3)

    def layer(x_, w_, b_):
        return torch.nn.functional.linear(x_, w_, b_)

    zero_b = torch.zeros(9, dtype=torch.float64)
    primals = (x, w, b if b is not None else zero_b)
    tangents = (torch.zeros_like(x) if dx is None else dx, torch.zeros_like(w) if v is None else v,
                torch.zeros_like(zero_b) if db is None else db)
    y_ref, dy_ref = torch.func.jvp(layer, primals, tangents)
    y, dy = ops.linear_jvp(x, dx, w, v, b, db, backend="reference")
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dy, dy_ref, rtol=1e-12, atol=1e-12)


def test_reference_by_hand():
    x = torch.tensor([[1.0, 2.0]])
    dx = torch.tensor([[0.5, -1.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    v = torch.tensor([[2.0, 1.0], [0.0, 0.0]])
    b, db = torch.tensor([10.0, 20.0]), torch.tensor([1.0, -1.0])
    for name in ["reference", "cpu"]:
        if not ffkernels.available_backends()[name]["available"]:
            continue
        y, dy = ops.linear_jvp(x, dx, w, v, b, db, backend=name)
        assert y.tolist() == [[11.0, 26.0]]
        # x V^T = [4, 0]; dx W^T = [0.5, -3]; db = [1, -1]
        assert dy.tolist() == [[5.5, -4.0]]


# ----------------------------------------------------------------------------- backends vs reference
@pytest.mark.parametrize("presence", PRESENCE, ids=_presence_id)
def test_linear_jvp_matches_reference(backend, device, presence):
    require_backend(backend, "linear_jvp", device, torch.float32)
    shapes = SMALL_SHAPES if interpreted(backend, device) else SHAPES
    for seed, shape in enumerate(shapes):
        args = jvp_inputs(*shape, device=device, presence=presence, seed=seed)
        expected = ops.linear_jvp(*args, backend="reference")
        actual = ops.linear_jvp(*args, backend=backend)
        for a, e in zip(actual, expected):
            assert a.is_contiguous()
            assert_close(a, e, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_linear_jvp_dtypes(backend, device, dtype):
    require_backend(backend, "linear_jvp", device, dtype)
    shape = (19, 24, 16) if interpreted(backend, device) else (45, 70, 37)
    for presence in [(True, True, True, True), (False, True, True, False)]:
        args = jvp_inputs(*shape, dtype, device, presence=presence)
        expected = ops.linear_jvp(*args, backend="reference")
        actual = ops.linear_jvp(*args, backend=backend)
        for a, e in zip(actual, expected):
            assert a.dtype == dtype
            if dtype in HALF_TOL:  # half GEMM inputs: a relative tolerance of the scale
                torch.testing.assert_close(a.double(), e.double(), rtol=3e-2, atol=3e-2 * float(e.abs().max()) + 1e-3)
            else:
                assert_close(a, e, dtype)


def test_linear_jvp_float64_backends_equal_torch_func_jvp(device):
    """float64 backends against forward-mode autodiff directly, not only against the reference."""
    x, dx, w, v, b, db = jvp_inputs(31, 29, 13, torch.float64, device, seed=5)
    y_ref, dy_ref = torch.func.jvp(lambda x_, w_, b_: x_ @ w_.t() + b_, (x, w, b), (dx, v, db))
    for name, info in ffkernels.available_backends().items():
        if not info["available"] or not backend_module(name).supports(
                "linear_jvp", torch.device(device), torch.float64):
            continue
        y, dy = ops.linear_jvp(x, dx, w, v, b, db, backend=name)
        torch.testing.assert_close(y, y_ref, rtol=1e-11, atol=1e-11)
        torch.testing.assert_close(dy, dy_ref, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("layout", ["transposed", "sliced"])
def test_linear_jvp_non_contiguous(backend, device, layout):
    require_backend(backend, "linear_jvp", device, torch.float32)
    x, dx, w, v, b, db = jvp_inputs(12, 9, 10, device=device)

    def strided(t):
        if layout == "transposed":
            return t.t().contiguous().t()
        return torch.stack([t, t], dim=-1)[..., 0]

    args = [strided(t) for t in (x, dx, w, v)]
    assert not any(t.is_contiguous() for t in args)
    expected = ops.linear_jvp(x, dx, w, v, b, db, backend="reference")
    for a, e in zip(ops.linear_jvp(args[0], args[1], args[2], args[3], b, db, backend=backend), expected):
        assert_close(a, e, torch.float32)


def test_triton_linear_jvp_several_tiles():
    """More than one N-tile and more than one K-step of the Triton kernel (the launcher's
    block_n override; Din over the K-tile)."""
    info = ffkernels.available_backends()["triton"]
    if not info["available"]:
        pytest.skip(f"triton backend: {info['reason']}")
    from ffkernels.triton import linear_jvp as tjvp
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, dx, w, v, b, db = jvp_inputs(21, 40, 37, device=dev, seed=9)
    for args in [(x, dx, w, v, b, db), (x, None, w, v, None, None), (x, dx, w, None, b, None)]:
        expected = reference.linear_jvp(*args)
        for a, e in zip(tjvp.linear_jvp(*args, block_n=16), expected):
            assert_close(a, e, torch.float32)


# ----------------------------------------------------------------------------- compiled op
needs_cpu = pytest.mark.skipif(not ffkernels.available_backends()["cpu"]["available"],
                               reason=f"cpu backend: {ffkernels.available_backends()['cpu']['reason']}")


@needs_cpu
def test_default_backend_for_cpu_tensors_is_cpu():
    from ffkernels.backends import resolve
    assert resolve("linear_jvp", None, torch.device("cpu"), torch.float32).NAME == "cpu"


@needs_cpu
def test_cpu_linear_jvp_is_repeatable():
    args = jvp_inputs(70, 33, 17, seed=2)
    first = ops.linear_jvp(*args, backend="cpu")
    again = ops.linear_jvp(*args, backend="cpu")
    assert all(torch.equal(a, b) for a, b in zip(first, again))


@needs_cpu
def test_raw_op_checks_and_schema():
    op = torch.ops.ffkernels.linear_jvp
    x, dx, w, v, b, db = jvp_inputs(10, 5, 4)
    with pytest.raises(RuntimeError, match="weight"):
        op(x, dx, w[:, :-1], v, b, db)
    with pytest.raises(RuntimeError, match="dx"):
        op(x, dx[:-1], w, v, b, db)
    with pytest.raises(RuntimeError, match="tangent_weight"):
        op(x, dx, w, v[:-1], b, db)
    with pytest.raises(RuntimeError, match="tangent_bias"):
        op(x, dx, w, v, b, db[:-1])
    with pytest.raises(RuntimeError, match="bias"):
        op(x, dx, w, v, b.double(), db)
    for args in [(x, dx, w, v, b, db), (x, None, w, v, None, None), (x, dx, w, None, b, None)]:
        torch.library.opcheck(op.default, args)


@needs_cpu
def test_raw_op_has_no_backward():
    x, dx, w, v, b, db = jvp_inputs(6, 3, 2)
    y, dy = torch.ops.ffkernels.linear_jvp(x.requires_grad_(True), dx, w, v, b, db)
    with pytest.raises(RuntimeError, match="no autograd formula"):
        dy.sum().backward()


def test_triton_custom_op_opcheck():
    info = ffkernels.available_backends()["triton"]
    if not info["available"]:
        pytest.skip(f"triton backend: {info['reason']}")
    from ffkernels.triton import ops as _triton_ops  # noqa: F401  (registers torch.ops.ffkernels_triton.*)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, dx, w, v, b, db = jvp_inputs(6, 5, 3, device=dev)
    torch.library.opcheck(torch.ops.ffkernels_triton.linear_jvp, (x, dx, w, v, b, db),
                          test_utils=("test_schema", "test_faketensor"))


def test_kernel_core_dispatches_like_the_op():
    args = jvp_inputs(9, 4, 6)
    for a, e in zip(ops.linear_jvp_kernel(*args), ops.linear_jvp(*args)):
        assert torch.equal(a, e)
    for a, e in zip(ops.linear_jvp_kernel(*args, backend="reference"), reference.linear_jvp(*args)):
        assert torch.equal(a, e)


# ----------------------------------------------------------------------------- bad inputs
def test_linear_jvp_bad_inputs():
    x, dx, w, v, b, db = jvp_inputs(10, 5, 4)
    with pytest.raises(TypeError, match="x"):
        ops.linear_jvp(x.numpy(), dx, w, v, b, db)
    with pytest.raises(TypeError, match="x"):
        ops.linear_jvp(x.long(), dx, w, v, b, db)
    with pytest.raises(ValueError, match="x"):
        ops.linear_jvp(x[0], dx, w, v, b, db)
    with pytest.raises(ValueError, match="weight"):
        ops.linear_jvp(x, dx, w[:, :-1], v, b, db)
    with pytest.raises(TypeError, match="weight"):
        ops.linear_jvp(x, dx, w.double(), v, b, db)
    with pytest.raises(ValueError, match="dx"):
        ops.linear_jvp(x, dx[:-1], w, v, b, db)
    with pytest.raises(TypeError, match="dx"):
        ops.linear_jvp(x, dx.double(), w, v, b, db)
    with pytest.raises(ValueError, match="tangent_weight"):
        ops.linear_jvp(x, dx, w, v.t(), b, db)
    with pytest.raises(TypeError, match="tangent_weight"):
        ops.linear_jvp(x, dx, w, v.half(), b, db)
    with pytest.raises(ValueError, match="bias"):
        ops.linear_jvp(x, dx, w, v, b[:-1], db)
    with pytest.raises(TypeError, match="bias"):
        ops.linear_jvp(x, dx, w, v, b.double(), db)
    with pytest.raises(ValueError, match="tangent_bias"):
        ops.linear_jvp(x, dx, w, v, b, db[:-1])
    with pytest.raises(TypeError, match="tangent_bias"):
        ops.linear_jvp(x, dx, w, v, b, db.to(torch.int32))
    with pytest.raises(ValueError, match="tangent_bias needs bias"):
        ops.linear_jvp(x, dx, w, v, None, db)
    with pytest.raises(ValueError, match="dx is on meta"):
        ops.linear_jvp(x, dx.to("meta"), w, v, b, db)
    with pytest.raises(ValueError, match="weight is on meta"):
        ops.linear_jvp(x, dx, w.to("meta"), v, b, db)
    with pytest.raises(ValueError, match="backend"):
        ops.linear_jvp(x, dx, w, v, b, db, backend="fast")
    with pytest.raises(RuntimeError, match="weight requires grad"):
        ops.linear_jvp(x, dx, w.clone().requires_grad_(True), v, b, db)
    with torch.no_grad():
        ops.linear_jvp(x, dx, w.clone().requires_grad_(True), v, b, db)  # fine without grad mode


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_forcing_cuda_backend_on_cpu_tensors_raises():
    with pytest.raises(ValueError, match="cuda"):
        ops.linear_jvp(*jvp_inputs(4, 3, 2), backend="cuda")
