"""The functional ops: one public function per op.

Each function validates its inputs (a bad input raises ``ValueError``/``TypeError`` naming
the argument), converts them to kernel-level arguments and dispatches to a backend
(``ffkernels.backends``).

Autograd: :func:`aggregate` is differentiable on every backend (with respect to ``x`` and
``edge_weight``), so it also serves backprop models. The goodness / linear-step / SF ops return
their gradient in closed form and have no autograd formula: called with grad mode on and an
input that requires grad, they raise ``RuntimeError`` (call them under ``torch.no_grad()``).
:func:`linear_jvp` is itself a forward-mode derivative and has no reverse-mode formula either.
:func:`dropout` is differentiable (its gradient is the same mask on the incoming gradient).
"""
from __future__ import annotations

import torch

from .. import backends as _backends
from .._validation import (check_choice, check_finite_number, check_float, check_positive_number,
                           check_same_device, check_tensor)
from ..graph import Graph

__all__ = ["aggregate", "dropout", "dropout_kernel", "goodness_loss_grad", "linear_goodness_step", "linear_jvp",
           "linear_jvp_kernel"]

AGGREGATE_REDUCES = ("sum", "mean", "max", "gcn")
GOODNESS_KINDS = ("sum", "mean")
LOSSES = ("ff", "symba")


def reject_autograd(op: str, **tensors) -> None:
    """Raise when ``op`` (a closed-form-gradient op) would be recorded by autograd."""
    if not torch.is_grad_enabled():
        return
    for name, value in tensors.items():
        if value is not None and value.requires_grad:
            raise RuntimeError(f"{op}: {name} requires grad, but {op} has no autograd formula (it returns its "
                               f"gradient in closed form); call it under torch.no_grad() or pass "
                               f"{name}.detach()")


def _check_graph(graph) -> Graph:
    if not isinstance(graph, Graph):
        raise TypeError(f"graph must be an ffkernels.Graph (build it once with "
                        f"Graph.from_edge_index), got {type(graph).__name__}")
    return graph


def _inv_sqrt(deg: torch.Tensor) -> torch.Tensor:
    """``deg ** -0.5`` where ``deg > 0``, else 0 (no infinite or NaN gradient either)."""
    pos = deg > 0
    return torch.where(pos, torch.where(pos, deg, torch.ones_like(deg)).rsqrt(), torch.zeros_like(deg))


def gcn_deg_inv_sqrt(graph: Graph, edge_weight_csr: torch.Tensor | None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """GCN's ``D ** -0.5`` in ``dtype`` (float32, or float64 for float64 features), with PyG's
    degree (``torch_geometric.nn.conv.gcn_norm``): the weighted in-degree of the graph whose
    self loops are replaced by one per node (weight: the node's last existing self loop's, or
    1). Without self loops that is ``(1 + weighted in-degree) ** -0.5``. A node of degree
    <= 0 (signed weights) gets 0. The unweighted factors are cached on the graph."""
    if not graph.has_self_loops:
        if edge_weight_csr is None:
            if dtype == torch.float64:
                return (graph.in_degree.to(torch.float64) + 1.0).rsqrt()
            return graph.deg_inv_sqrt
        deg = torch.ones(graph.num_nodes, dtype=dtype, device=graph.device)
        deg.index_add_(0, graph.row.to(torch.int64), edge_weight_csr.to(dtype))
        # A negative weighted degree has no real square root: keep the node unscaled-zero.
        return torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
    loops = graph.self_loop_structure()
    if edge_weight_csr is None:
        if dtype == torch.float32:
            return loops.deg_inv_sqrt
        return loops.degree(None, dtype).rsqrt()  # >= 1: every node keeps one self loop
    return _inv_sqrt(loops.degree(edge_weight_csr, dtype))


def gcn_edge_norm(graph: Graph, edge_weight_csr: torch.Tensor | None, dtype: torch.dtype = torch.float32):
    """PyG's normalised GCN operator of ``graph`` as ``(loop_graph, norm)``: ``loop_graph`` the
    :class:`~ffkernels.graph.Graph` of the non-loop edges plus one self loop per node, ``norm``
    ``[E']`` its edge values ``d_i^-1/2 w_ij d_j^-1/2`` in CSR order (``gcn_norm``'s output), so
    that ``gcn(x) = sum(loop_graph, x, norm)``. Differentiable in ``edge_weight_csr``; the
    unweighted float32 values are precomputed with the graph."""
    loops = graph.self_loop_structure()
    if edge_weight_csr is None and dtype == torch.float32:
        return loops.graph, loops.norm
    return loops.graph, loops.edge_values(gcn_deg_inv_sqrt(graph, edge_weight_csr, dtype), edge_weight_csr, dtype)


def _resolve_weight(graph: Graph, edge_weight, acc_dtype):
    """The ``[E]`` CSR-order weights of a call (explicit ones win over the graph's), or None."""
    if edge_weight is not None:
        check_float(edge_weight, "edge_weight", ndim=1)
        if edge_weight.numel() != graph.num_edges:
            raise ValueError(f"edge_weight has {edge_weight.numel()} entries but graph has "
                             f"{graph.num_edges} edges")
        check_same_device("edge_weight", edge_weight, graph.device, "graph")
        return edge_weight.index_select(0, graph.edge_perm).to(acc_dtype).contiguous()
    if graph.edge_weight is not None:
        return graph.edge_weight.to(acc_dtype).contiguous()
    return None


def _check_linear(x: torch.Tensor, weight: torch.Tensor) -> None:
    """``x`` ``[N, Din]`` and ``weight`` ``[Dout, Din]`` of one dtype and device (a linear op's input)."""
    check_float(x, "x", ndim=2)
    check_float(weight, "weight", ndim=2)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must have shape [Dout, {x.shape[1]}] to match x's {x.shape[1]} "
                         f"columns, got {tuple(weight.shape)}")
    if weight.dtype != x.dtype:
        raise TypeError(f"weight dtype {weight.dtype} does not match x dtype {x.dtype}")
    check_same_device("weight", weight, x.device, "x")


def aggregate(graph: Graph, x: torch.Tensor, reduce: str = "sum", edge_weight: torch.Tensor | None = None,
              backend: str | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """Sparse neighbourhood aggregation over the graph's incoming edges.

    Args:
        graph: the graph (CSR by destination).
        x: ``[N, F]`` node features, float32/float16/bfloat16 (float64 on reference and cpu);
            any strides.
        reduce: ``sum`` (``sum_j w_ij x_j``), ``mean`` (``sum_j w_ij x_j`` / in-degree, 0 for
            isolated nodes: the mean of the weighted messages, as PyG's ``aggr="mean"``),
            ``max`` (elementwise max of ``w_ij x_j``, 0 for isolated nodes) or ``gcn``: PyG's
            ``GCNConv`` propagation ``D^-1/2 (A' + I') D^-1/2 x`` where the graph's self loops
            are replaced by one per node (weight: the node's last existing self loop's weight, 1
            if it has none or the graph is unweighted) and ``D`` is the weighted in-degree
            including that loop. For a graph without self loops this is ``D^-1/2 (A + I)
            D^-1/2 x`` with ``D = 1 + weighted in-degree``, the self loop applied on the fly by
            the fused kernel; a graph with self loops runs the weighted ``sum`` kernel on a
            cached copy with one loop per node and precomputed edge values. Duplicate edges
            are multi-edges in every reduce.
        edge_weight: optional ``[E]`` weights in the order of the ``edge_index`` the graph was
            built from; default: the graph's own :attr:`~ffkernels.Graph.edge_weight` (None for
            an unweighted graph).
        backend: force ``reference``, ``cpu``, ``triton`` or ``cuda``; default: the fastest
            usable one for ``x``'s device.
        out: optional contiguous ``[N, F]`` buffer of ``x``'s dtype (not ``x``'s memory) that
            receives the result and is returned: a loop that aggregates every step then pays no
            fresh allocation (on the CPU a large new tensor costs its page faults). Not
            differentiable (like torch's ``out=`` arguments).

    Returns:
        ``[N, F]`` tensor of ``x``'s dtype (accumulated in float32 for half types).
        Differentiable with respect to ``x`` and ``edge_weight`` on every backend.
    """
    graph = _check_graph(graph)
    check_float(x, "x", ndim=2)
    check_choice(reduce, "reduce", AGGREGATE_REDUCES)
    if x.shape[0] != graph.num_nodes:
        raise ValueError(f"x has {x.shape[0]} rows but graph has {graph.num_nodes} nodes")
    check_same_device("x", x, graph.device, "graph")
    acc_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    weight_csr = _resolve_weight(graph, edge_weight, acc_dtype)
    impl = _backends.resolve("aggregate", backend, x.device, x.dtype)
    if out is not None:
        if torch.is_grad_enabled() and (x.requires_grad or (weight_csr is not None and weight_csr.requires_grad)):
            raise RuntimeError("aggregate(out=...) does not support autograd (like torch's out= arguments): "
                               "drop out= to differentiate, or call it under torch.no_grad()")
        out = _check_buffer(out, "out", tuple(x.shape), x.dtype, x, (x,))
    if reduce == "gcn" and graph.has_self_loops:  # PyG's normalisation: the weighted sum on the loop graph
        g2, norm = gcn_edge_norm(graph, weight_csr, acc_dtype)
        if out is not None:
            return impl.aggregate(g2.rowptr, g2.col, x.contiguous(), norm, "sum", None, out=out)
        return impl.aggregate(g2.rowptr, g2.col, x.contiguous(), norm, "sum", None)
    scale = gcn_deg_inv_sqrt(graph, weight_csr, acc_dtype) if reduce == "gcn" else None
    if out is not None:
        return impl.aggregate(graph.rowptr, graph.col, x.contiguous(), weight_csr, reduce, scale, out=out)
    return impl.aggregate(graph.rowptr, graph.col, x.contiguous(), weight_csr, reduce, scale)


def _check_goodness_args(h_name, h, positive, theta, goodness, loss, temperature, alpha, pairs):
    check_tensor(positive, "positive")
    if positive.dtype != torch.bool:
        raise TypeError(f"positive must be a bool tensor, got {positive.dtype}")
    if positive.dim() != 1 or positive.shape[0] != h.shape[0]:
        raise ValueError(f"positive must have shape [{h.shape[0]}] (one flag per row of {h_name}), "
                         f"got {tuple(positive.shape)}")
    check_same_device("positive", positive, h.device, h_name)
    theta = check_finite_number(theta, "theta")
    temperature = check_positive_number(temperature, "temperature")
    alpha = check_positive_number(alpha, "alpha")
    check_choice(goodness, "goodness", GOODNESS_KINDS)
    check_choice(loss, "loss", LOSSES)
    if loss == "symba":
        if pairs is None:
            raise ValueError("pairs ([P, 2] positive row, negative row) is required for loss='symba'")
        check_tensor(pairs, "pairs")
        if pairs.dtype in (torch.bool,) or pairs.is_floating_point() or pairs.is_complex():
            raise TypeError(f"pairs must have an integer dtype, got {pairs.dtype}")
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must have shape [P, 2], got {tuple(pairs.shape)}")
        check_same_device("pairs", pairs, h.device, h_name)
        if pairs.numel() > 0 and (int(pairs.min()) < 0 or int(pairs.max()) >= h.shape[0]):
            raise ValueError(f"pairs must index rows of {h_name} in [0, {h.shape[0]})")
        pairs = pairs.to(torch.int64).contiguous()
    elif pairs is not None:
        raise ValueError("pairs is only used with loss='symba'")
    return theta, temperature, alpha, pairs


def goodness_loss_grad(h: torch.Tensor, positive: torch.Tensor, theta: float = 2.0, goodness: str = "sum",
                       loss: str = "ff", temperature: float = 1.0, pairs: torch.Tensor | None = None,
                       alpha: float = 4.0, backend: str | None = None, inplace: bool = False):
    """Fused goodness, forward-forward loss and its gradient with respect to the pre-activation.

    ``G_i = k * sum_d h_id^2`` (k = 1 for ``goodness="sum"``, 1/D for ``"mean"``).

    - ``loss="ff"`` (docs/algorithms.md#losses): ``s_i = (G_i - theta) / temperature``,
      ``loss = mean_pos softplus(-s) + mean_neg softplus(s)`` (each mean skipped when empty).
    - ``loss="symba"`` (1.2): ``loss = mean_pairs softplus(-alpha (G_p - G_q))``; ``positive``
      is still validated but the pairing comes from ``pairs``.

    Args:
        h: ``[N, D]`` post-ReLU activations ``h = ReLU(z)``.
        positive: ``[N]`` bool, True for positive rows.
        pairs: ``[P, 2]`` integer (positive row, negative row), for ``symba`` only.
        inplace: write ``grad_z`` over ``h`` (which must be contiguous) and return ``h`` as
            ``grad_z``: no ``[N, D]`` tensor is allocated, and the kernel moves exactly the bytes
            of one copy (read ``h``, write it back). For a training step that needs ``h`` only to
            form ``grad_z``: ``loss, g, dz = goodness_loss_grad(h, positive, inplace=True)`` (``dz
            is h``). ``h`` must not be a view the caller still needs unchanged.

    Returns:
        ``(loss, goodness, grad_z)``: a 0-d float32 tensor (float64 for float64 ``h``), ``[N]``
        goodness (same accumulation dtype), and ``[N, D]`` ``dloss/dz`` in ``h``'s dtype
        (``h`` itself with ``inplace=True``). ``h`` is read once and ``grad_z`` written once
        (symba reads ``h`` twice).
    """
    check_float(h, "h", ndim=2)
    theta, temperature, alpha, pairs = _check_goodness_args("h", h, positive, theta, goodness, loss,
                                                            temperature, alpha, pairs)
    if not isinstance(inplace, bool):
        raise TypeError(f"inplace must be a bool, got {type(inplace).__name__}")
    if inplace and not h.is_contiguous():
        raise ValueError("inplace=True needs a contiguous h (its own memory is overwritten with grad_z); "
                         "pass h.contiguous() or use inplace=False")
    reject_autograd("goodness_loss_grad", h=h)
    impl = _backends.resolve("goodness_loss_grad", backend, h.device, h.dtype)
    if inplace:
        return impl.goodness_loss_grad(h, positive.contiguous(), theta, goodness, loss, temperature, alpha,
                                       pairs, inplace=True)
    return impl.goodness_loss_grad(h.contiguous(), positive.contiguous(), theta, goodness, loss,
                                   temperature, alpha, pairs)


def linear_goodness_step(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         positive: torch.Tensor, theta: float = 2.0, goodness: str = "sum", loss: str = "ff",
                         temperature: float = 1.0, pairs: torch.Tensor | None = None, alpha: float = 4.0,
                         backend: str | None = None, h_out: torch.Tensor | None = None,
                         grad_z_out: torch.Tensor | None = None):
    """One fused local step of a linear layer: ``z = x W^T + b``, ReLU, goodness, loss, gradients.

    Args:
        x: ``[N, Din]`` layer input (already normalised / aggregated; treated as a constant).
        weight: ``[Dout, Din]`` (``torch.nn.Linear`` layout).
        bias: ``[Dout]`` or None.
        positive, theta, goodness, loss, temperature, pairs, alpha: as in
            :func:`goodness_loss_grad`.
        h_out: optional contiguous ``[N, Dout]`` buffer of ``x``'s dtype that receives ``h``
            (returned as ``h``): e.g. the previous step's ``h``, so a training loop allocates
            no ``[N, Dout]`` output per step.
        grad_z_out: optional contiguous ``[N, Dout]`` buffer of the accumulation dtype (float32;
            float64 for float64 ``x``) used for ``z`` and then ``grad_z = dloss/dz`` (holds
            ``grad_z`` afterwards): the epilogue's scratch, reusable from step to step. Either
            buffer may be given alone (the other is allocated).

    Returns:
        ``(loss, goodness, grad_weight, grad_bias, h)``: ``grad_weight`` ``[Dout, Din]``,
        ``grad_bias`` ``[Dout]`` (None without bias), ``h = ReLU(z)`` ``[N, Dout]``.
    """
    _check_linear(x, weight)
    if bias is not None:
        check_float(bias, "bias", ndim=1)
        if bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must have shape [{weight.shape[0]}], got {tuple(bias.shape)}")
        if bias.dtype != x.dtype:
            raise TypeError(f"bias dtype {bias.dtype} does not match x dtype {x.dtype}")
        check_same_device("bias", bias, x.device, "x")
    theta, temperature, alpha, pairs = _check_goodness_args("x", x, positive, theta, goodness, loss,
                                                            temperature, alpha, pairs)
    reject_autograd("linear_goodness_step", x=x, weight=weight, bias=bias)
    impl = _backends.resolve("linear_goodness_step", backend, x.device, x.dtype)
    args = (x.contiguous(), weight.contiguous(), None if bias is None else bias.contiguous(),
            positive.contiguous(), theta, goodness, loss, temperature, alpha, pairs)
    if h_out is None and grad_z_out is None:
        return impl.linear_goodness_step(*args)
    shape = (x.shape[0], weight.shape[0])
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    h_out = _check_buffer(h_out, "h_out", shape, x.dtype, x, (x, weight))
    grad_z_out = _check_buffer(grad_z_out, "grad_z_out", shape, acc, x, (x, weight, h_out))
    return impl.linear_goodness_step(*args, h_out=h_out, grad_z_out=grad_z_out)


def linear_jvp_kernel(x, dx, weight, tangent_weight, bias=None, tangent_bias=None, backend: str | None = None):
    """The unchecked core of :func:`linear_jvp` (trainers validate their shapes once, not on
    every step): dispatch only; the op's own backend falls back to the reference when
    ``FFKERNELS_BACKEND`` names a backend without it."""
    impl = _backends.resolve_or_reference("linear_jvp", backend, x.device, x.dtype)
    return impl.linear_jvp(x, dx, weight, tangent_weight, bias, tangent_bias)


def _check_like(value, name, like, like_name):
    check_float(value, name, ndim=like.dim())
    if tuple(value.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have the shape of {like_name} {list(like.shape)}, got {tuple(value.shape)}")
    if value.dtype != like.dtype:
        raise TypeError(f"{name} dtype {value.dtype} does not match {like_name} dtype {like.dtype}")
    check_same_device(name, value, like.device, like_name)


def linear_jvp(x: torch.Tensor, dx: torch.Tensor | None, weight: torch.Tensor, tangent_weight: torch.Tensor | None,
               bias: torch.Tensor | None = None, tangent_bias: torch.Tensor | None = None,
               backend: str | None = None):
    """The dual-number linear layer: primal and tangent of ``x W^T + b`` in one call.

    ``y = x W^T + b`` and ``dy = x V^T + dx W^T + db``: the forward-mode derivative (JVP) of the
    layer along the tangent ``(dx, V, db)`` of its input and parameters. Chaining it through a
    network (with ReLU's tangent ``dz * 1[z > 0]`` between layers) gives the network's output
    and its directional derivative along a parameter direction in one forward pass (forward
    gradients, ``docs/algorithms.md#fg``).

    Args:
        x: ``[N, Din]`` input (float32 / float64 / float16 / bfloat16; any strides).
        dx: ``[N, Din]`` its tangent (x's dtype and device), or None for a zero tangent (a
            constant input: the first layer) -- its GEMM is skipped.
        weight: ``[Dout, Din]`` (``torch.nn.Linear`` layout), x's dtype.
        tangent_weight: ``V`` ``[Dout, Din]``, the weight's tangent, or None (zero: a layer the
            direction does not move) -- its GEMM is skipped.
        bias: ``[Dout]`` or None. tangent_bias: ``db`` ``[Dout]`` or None (zero); needs ``bias``.
        backend: ``reference``, ``cpu`` (C++: three BLAS GEMMs into the two outputs) or
            ``triton`` (one kernel for both outputs); default: the fastest usable one.

    Returns:
        ``(y, dy)``: two contiguous ``[N, Dout]`` tensors in x's dtype (accumulated in float32,
        float64 for float64 inputs).

    Raises:
        TypeError: a non-tensor or a wrongly typed argument (naming it).
        ValueError: mismatched shapes or devices (naming the argument).
        RuntimeError: grad mode on and an input requiring grad (no reverse-mode formula).
    """
    _check_linear(x, weight)
    if dx is not None:
        _check_like(dx, "dx", x, "x")
    if tangent_weight is not None:
        _check_like(tangent_weight, "tangent_weight", weight, "weight")
    dout = weight.shape[0]
    for name, value in (("bias", bias), ("tangent_bias", tangent_bias)):
        if value is None:
            continue
        check_float(value, name, ndim=1)
        if value.shape[0] != dout:
            raise ValueError(f"{name} must have shape [{dout}] (weight's Dout), got {tuple(value.shape)}")
        if value.dtype != x.dtype:
            raise TypeError(f"{name} dtype {value.dtype} does not match x dtype {x.dtype}")
        check_same_device(name, value, x.device, "x")
    if tangent_bias is not None and bias is None:
        raise ValueError("tangent_bias needs bias (a tangent of a bias the layer does not have)")
    if torch.is_grad_enabled():
        for name, value in (("x", x), ("dx", dx), ("weight", weight), ("tangent_weight", tangent_weight),
                            ("bias", bias), ("tangent_bias", tangent_bias)):
            if value is not None and value.requires_grad:
                raise RuntimeError(f"linear_jvp: {name} requires grad, but linear_jvp has no autograd formula (it "
                                   f"is itself a forward-mode derivative); call it under torch.no_grad() or pass "
                                   f"{name}.detach()")
    impl = _backends.resolve("linear_jvp", backend, x.device, x.dtype)

    def c(t):
        return None if t is None else t.contiguous()
    return impl.linear_jvp(x.contiguous(), c(dx), weight.contiguous(), c(tangent_weight), c(bias), c(tangent_bias))


def _check_buffer(buf, name, shape, dtype, like, others):
    """A caller-provided output buffer: right shape, dtype and device, contiguous, and sharing
    memory with none of ``others`` (None: allocate one)."""
    if buf is None:
        return torch.empty(shape, dtype=dtype, device=like.device)
    check_tensor(buf, name)
    if tuple(buf.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {list(shape)}, got {tuple(buf.shape)}")
    if buf.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {buf.dtype}")
    check_same_device(name, buf, like.device, "x")
    if not buf.is_contiguous():
        raise ValueError(f"{name} must be contiguous")
    if buf.requires_grad:
        raise ValueError(f"{name} must not require grad")
    for other in others:
        if other is not None and other.numel() and buf.numel() and \
                other.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr():
            raise ValueError(f"{name} must not share memory with the op's other tensors")
    return buf
def dropout_kernel(x, p: float, seed: int, out=None, backend: str | None = None):
    """The unchecked core of :func:`dropout` (trainers check ``p`` once, not on every step)."""
    impl = _backends.resolve_or_reference("dropout", backend, x.device, x.dtype)
    return impl.dropout(x.contiguous() if out is not x else x, p, seed, out)


def dropout(x: torch.Tensor, p: float, seed: int, *, out: torch.Tensor | None = None,
            backend: str | None = None) -> torch.Tensor:
    """Inverted dropout with a counter-based mask: ``x / (1 - p)`` where kept, else 0.

    Element ``i`` (row-major) is kept iff a 32-bit hash of ``(seed, i)`` is at least
    ``floor(p * 2^32)`` (``ffkernels/backends/reference.py::dropout_keep``): the same ``seed`` on
    a tensor of the same shape draws the same mask, so a step's backward reuses the forward's
    mask without storing it, and a trainer draws one ``seed`` per mask from its own generator
    (checkpointed: a resumed run draws the same masks). Bitwise the same on every backend and
    for any thread count. A dropped element is 0 even where ``x`` is NaN or Inf; a kept one
    propagates it. One pass over ``x``: on one CPU thread at ``[1e6, 128]`` float32, in place
    1.27x the time of one ``dst.copy_(x)`` and 62x faster than ``torch.nn.functional.dropout``
    (``benchmarks/results/cpu_ops.md``).

    Args:
        x: a floating tensor of any shape.
        p: drop probability in ``[0, 1)``.
        seed: an ``int`` in ``[0, 2^63)``.
        out: where to write the result (contiguous, ``x``'s shape, dtype and device, sharing no
            memory with ``x``); ``out=x`` (or a view of exactly ``x``'s memory) drops ``x`` in place.
        backend: ``reference`` or ``cpu``; default: the fastest usable one.

    Returns:
        The dropped-out tensor (``out`` when given). Differentiable (not with ``out``): the
        gradient is the same mask and scale on the incoming gradient.

    Raises:
        TypeError: non-tensor ``x`` or ``out``, non-number ``p``, non-int ``seed``.
        ValueError: ``p`` outside ``[0, 1)``, ``seed`` outside ``[0, 2^63)``, a wrong ``out``.
    """
    check_float(x, "x")
    p = check_finite_number(p, "p")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be in [0, 2^63), got {seed}")
    if out is not None:
        check_tensor(out, "out")
        if out is x or (out.data_ptr() == x.data_ptr() and out.shape == x.shape and out.stride() == x.stride()
                        and out.dtype == x.dtype):  # x itself, or another view of exactly its memory
            out = x
            if not x.is_contiguous():
                raise ValueError("out=x (in place) needs a contiguous x")
            if x.requires_grad and torch.is_grad_enabled():
                raise RuntimeError("dropout: out=x (in place) on a tensor that requires grad; call it under "
                                   "torch.no_grad() or without out")
        else:
            _check_buffer(out, "out", tuple(x.shape), x.dtype, x, (x,))
            if x.requires_grad and torch.is_grad_enabled():
                raise RuntimeError("dropout: out= is not differentiable; call it without out to get a gradient")
    return dropout_kernel(x, p, seed, out, backend)


from .sf import sf_logits, sf_loss_grad  # noqa: E402,F401  (single-forward loss, docs/algorithms.md#sf)
