"""The op micro-benchmarks (``ffkernels bench --suite ops``): each op against what a user would
otherwise run and against the physical limit, all in one process and one run.

Per op, the table lists ffkernels' kernel (the default backend for the device), the baselines
and the limit:

- ``aggregate`` (sum / mean / gcn / max): ``torch.sparse.mm`` on the same CSR
  (``torch.sparse_csr_tensor``), PyG-style gather + ``index_add_`` (``index_reduce`` for max),
  torch-scatter when importable; on a uniform random graph (100k nodes, 2M edges, F = 128) and a
  skewed power-law one (1M nodes, 10M edges, F = 64; endpoints drawn with P(i) ~ (i + 1)^-0.7
  over a random relabelling); ffkernels also with ``out=`` (a reused output: no page faults);
- ``goodness_loss_grad`` (ff, symba): allocating and in place (``inplace=True``), the eager torch
  expression (the reference backend), ``dst.copy_(h)`` into a preallocated buffer (the physical
  limit of an op that reads h and writes grad_z) and ``h.clone()`` (the limit of an op that
  returns a fresh tensor: it pays the page faults too);
- ``linear_goodness_step``, ``sf_loss_grad``: ffkernels vs the eager torch reference;
- ``dropout`` (p = 0.5, on the goodness operand's shape): ffkernels' counter-based mask, allocating
  and in place, vs ``torch.nn.functional.dropout``, the ``torch.randint`` lane mask applied with
  ``masked_fill`` that the trainers used before it (``nn.functional.keep_mask``) and the copy;
- ``linear_jvp`` (group ``jvp``, the dual-number linear layer ``y = x W^T + b``,
  ``dy = x V^T + dx W^T + db``): ffkernels vs the three separate matmuls a user would write
  (``x @ W.T + b``, ``x @ V.T + dx @ W.T + db``) and ``torch.func.jvp`` of ``F.linear``.

Bytes moved: the x row of every edge + the output (aggregate; + the self rows for gcn), read h +
write grad_z (goodness), the operands and outputs (linear step, SF, linear_jvp: read x, dx and
write y, dy; the op is compute bound: three GEMMs of 2 N Din Dout flops). ``limit`` = bytes / the copy
bandwidth measured in the same run (``dst.copy_(src)``, read + write, preallocated).

Timing: ``torch.utils.benchmark.Timer.blocked_autorange`` (best block, and the median), with the
thread count fixed and reported; in-place ops are timed one call at a time with the input restored
(untimed) before each call. Small sizes (``--quick``): 1/10 of the above.
"""
from __future__ import annotations

import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

GROUPS = ("aggregate", "aggregate-skewed", "goodness", "linear", "sf", "jvp")


@dataclass
class Impl:
    name: str
    fn: Callable
    kind: str = "baseline"           # ours | baseline | limit
    restore: Callable | None = None  # in-place: restores the input before each (timed) call
    min_run_time: float | None = None


@dataclass
class OpCase:
    group: str
    op: str
    nbytes: int
    impls: list = field(default_factory=list)
    note: str = ""


def sizes(quick: bool) -> dict:
    if quick:
        return dict(N=10_000, E=200_000, F=128, SN=100_000, SE=1_000_000, SF=64, GN=100_000, GD=128,
                    LN=20_000, LIN=128, LOUT=128, SFN=20_000, SFC=8, SFD=128)
    return dict(N=100_000, E=2_000_000, F=128, SN=1_000_000, SE=10_000_000, SF=64, GN=1_000_000, GD=128,
                LN=200_000, LIN=128, LOUT=128, SFN=100_000, SFC=8, SFD=128)


def power_law_edges(num_nodes: int, num_edges: int, exponent: float = 0.7, seed: int = 0) -> torch.Tensor:
    """``[2, E]`` endpoints drawn independently with ``P(i) ~ (i + 1)^-exponent`` over a random
    relabelling of the nodes: power-law in- and out-degrees (hub rows and hub sources)."""
    gen = torch.Generator().manual_seed(seed)
    w = (torch.arange(num_nodes, dtype=torch.float64) + 1.0) ** -exponent
    perm = torch.randperm(num_nodes, generator=gen)
    return perm[torch.multinomial(w, 2 * num_edges, replacement=True, generator=gen)].view(2, num_edges)


def _sparse_csr(graph, values=None, dtype=torch.float32):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return graph.to_torch_sparse_csr(values, dtype=dtype)


def _row_bytes(x):
    return x.shape[1] * x.element_size()


def aggregate_cases(graph, x, group: str, reduces, index_add: bool) -> list:
    from .. import ops

    n = graph.num_nodes
    src, dst = graph.col.to(torch.int64), graph.row.to(torch.int64)
    deg = graph.in_degree.clamp_min(1).to(x.dtype).unsqueeze(1)
    s = graph.deg_inv_sqrt.to(x.dtype).unsqueeze(1)
    out = []
    for reduce in reduces:
        nbytes = graph.num_edges * _row_bytes(x) + n * _row_bytes(x) * (2 if reduce == "gcn" else 1)
        case = OpCase(group, f"aggregate {reduce}", nbytes)
        case.impls.append(Impl("ffkernels", lambda r=reduce: ops.aggregate(graph, x, r), "ours"))
        buf = torch.empty_like(x)
        case.impls.append(Impl("ffkernels out= (no allocation)", lambda r=reduce, buf=buf: ops.aggregate(
            graph, x, r, out=buf)))
        if reduce in ("sum", "mean"):
            a = _sparse_csr(graph, dtype=x.dtype)
            mm = (lambda: torch.sparse.mm(a, x)) if reduce == "sum" else (lambda: torch.sparse.mm(a, x) / deg)
            case.impls.append(Impl("torch.sparse.mm (CSR)", mm))
            if index_add:
                ia = (lambda: x.new_zeros(n, x.shape[1]).index_add_(0, dst, x[src])) if reduce == "sum" else \
                    (lambda: x.new_zeros(n, x.shape[1]).index_add_(0, dst, x[src]) / deg)
                case.impls.append(Impl("gather+index_add_", ia, min_run_time=0.1))
        elif reduce == "gcn":
            w = graph.deg_inv_sqrt[src] * graph.deg_inv_sqrt[dst]
            a = _sparse_csr(graph, w.to(x.dtype), dtype=x.dtype)
            case.impls.append(Impl("torch.sparse.mm (CSR)", lambda: torch.sparse.mm(a, x) + s * s * x))
            if index_add:
                case.impls.append(Impl("gather+index_add_", lambda: x.new_zeros(n, x.shape[1]).index_add_(
                    0, dst, x[src] * w[:, None].to(x.dtype)) + s * s * x, min_run_time=0.1))
        else:  # max
            if index_add:
                def amax():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # index_reduce is "beta"
                        return x.new_zeros(n, x.shape[1]).index_reduce_(0, dst, x[src], "amax", include_self=False)
                case.impls.append(Impl("gather+index_reduce(amax)", amax, min_run_time=0.1))
        try:
            import torch_scatter

            if reduce in ("sum", "mean", "max"):
                case.impls.append(Impl("torch_scatter", lambda r=reduce: torch_scatter.scatter(
                    x[src], dst, 0, dim_size=n, reduce=r)))
        except ImportError:
            pass
        out.append(case)
    return out


def _goodness_cases(s, gen, dev) -> list:
    from .. import ops

    h = torch.relu(torch.randn(s["GN"], s["GD"], generator=gen)).to(dev)
    positive = (torch.rand(s["GN"], generator=gen) < 0.5).to(dev)
    half = s["GN"] // 2
    pairs = torch.stack([torch.arange(half), torch.arange(half) + half], 1).to(dev)
    buf = torch.empty_like(h)
    dst = torch.empty_like(h)
    nbytes = 2 * h.numel() * h.element_size()
    cases = []
    for loss in ("ff", "symba"):
        kw = dict(loss=loss, pairs=pairs if loss == "symba" else None)
        case = OpCase("goodness", f"goodness_loss_grad {loss}", nbytes,
                      note="symba reads h twice" if loss == "symba" else "")
        case.impls += [
            Impl("ffkernels inplace=True", lambda kw=kw: ops.goodness_loss_grad(buf, positive, inplace=True, **kw),
                 "ours", restore=lambda: buf.copy_(h)),
            Impl("ffkernels (allocating)", lambda kw=kw: ops.goodness_loss_grad(h, positive, **kw)),
            Impl("eager torch (reference)", lambda kw=kw: ops.goodness_loss_grad(h, positive, backend="reference", **kw),
                 min_run_time=0.2),
            Impl("dst.copy_(h) (limit)", lambda: dst.copy_(h), "limit"),
            Impl("h.clone() (limit, allocating)", lambda: h.clone(), "limit"),
        ]
        cases.append(case)
    return cases


def _linear_cases(s, gen, dev) -> list:
    from .. import ops

    x = torch.randn(s["LN"], s["LIN"], generator=gen).to(dev)
    w = (torch.randn(s["LOUT"], s["LIN"], generator=gen) / s["LIN"] ** 0.5).to(dev)
    b = torch.zeros(s["LOUT"]).to(dev)
    positive = (torch.rand(s["LN"], generator=gen) < 0.5).to(dev)
    hb = torch.empty(s["LN"], s["LOUT"], device=dev)
    zb = torch.empty(s["LN"], s["LOUT"], device=dev)
    nbytes = 4 * (s["LN"] * s["LIN"] + 2 * s["LN"] * s["LOUT"])  # read x, write h and grad_z
    case = OpCase("linear", "linear_goodness_step ff", nbytes, note="two GEMMs (BLAS) + the fused epilogue")
    case.impls += [
        Impl("ffkernels h_out=, grad_z_out=", lambda: ops.linear_goodness_step(x, w, b, positive, h_out=hb,
                                                                                grad_z_out=zb), "ours"),
        Impl("ffkernels (allocating)", lambda: ops.linear_goodness_step(x, w, b, positive)),
        Impl("eager torch (reference)", lambda: ops.linear_goodness_step(x, w, b, positive, backend="reference")),
    ]
    return [case]


def _sf_cases(s, gen, dev) -> list:
    from ..ops.sf import sf_loss_grad_kernel

    n, c, d = s["SFN"], s["SFC"], s["SFD"]
    h = torch.relu(torch.randn(n + c, d, generator=gen)).to(dev)
    tr = torch.arange(n, device=dev)
    virt = torch.arange(n, n + c, device=dev)
    y = torch.randint(0, c, (n,), generator=gen).to(dev)
    case = OpCase("sf", "sf_loss_grad", 2 * (n + c) * d * 4, note="read the rows, write their gradient")
    case.impls += [
        Impl("ffkernels", lambda: sf_loss_grad_kernel(h, tr, y, virt, 1.0), "ours"),
        Impl("eager torch (reference)", lambda: sf_loss_grad_kernel(h, tr, y, virt, 1.0, backend="reference")),
    ]
    return [case]


def _dropout_cases(s, gen, dev) -> list:
    from .. import ops
    from ..nn.functional import keep_mask

    x = torch.randn(s["GN"], s["GD"], generator=gen).to(dev)
    buf = torch.empty_like(x)
    dst = torch.empty_like(x)
    mask_gen = torch.Generator(device=dev).manual_seed(1)
    case = OpCase("dropout", "dropout p=0.5", 2 * x.numel() * x.element_size(), note="read x, write the result")
    case.impls += [
        Impl("ffkernels out=x (in place)", lambda: ops.dropout(buf, 0.5, 7, out=buf), "ours",
             restore=lambda: buf.copy_(x)),
        Impl("ffkernels (allocating)", lambda: ops.dropout(x, 0.5, 7)),
        Impl("torch.nn.functional.dropout", lambda: torch.nn.functional.dropout(x, 0.5)),
        Impl("randint lane mask + masked_fill", lambda: x.mul(2.0).masked_fill_(~keep_mask(x.shape, 0.5, mask_gen), 0.0)),
        Impl("dst.copy_(x) (limit)", lambda: dst.copy_(x), "limit"),
    ]
    return [case]


def _jvp_cases(s, gen, dev) -> list:
    from .. import ops

    n, din, dout = s["LN"], s["LIN"], s["LOUT"]
    x = torch.randn(n, din, generator=gen).to(dev)
    dx = torch.randn(n, din, generator=gen).to(dev)
    w = (torch.randn(dout, din, generator=gen) / din ** 0.5).to(dev)
    v = torch.randn(dout, din, generator=gen).to(dev)
    b = torch.zeros(dout).to(dev)
    db = torch.randn(dout, generator=gen).to(dev)

    def separate():
        return x @ w.t() + b, x @ v.t() + dx @ w.t() + db

    def func_jvp():
        return torch.func.jvp(torch.nn.functional.linear, (x, w, b), (dx, v, db))

    nbytes = 4 * (2 * n * din + 2 * n * dout)  # read x, dx; write y, dy
    case = OpCase("jvp", "linear_jvp", nbytes, note=f"compute bound: 3 GEMMs, {3 * 2 * n * din * dout / 1e9:.2f} GFLOP")
    case.impls += [
        Impl("ffkernels", lambda: ops.linear_jvp(x, dx, w, v, b, db), "ours"),
        Impl("three separate matmuls (eager torch)", separate),
        Impl("torch.func.jvp(F.linear)", func_jvp),
    ]
    return [case]


def build_cases(quick: bool, device: str, only: str | None = None) -> tuple:
    """``(cases, copy_case, info)``: the op cases, the copy-bandwidth case, size notes."""
    from .. import Graph

    s = sizes(quick)
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)

    def want(group):
        return not only or any(tok in group for tok in only.split(","))

    cases, info = [], {}
    if want("aggregate"):
        ei = torch.randint(0, s["N"], (2, s["E"]), generator=gen)
        g = Graph.from_edge_index(ei, s["N"]).to(dev)
        x = torch.randn(s["N"], s["F"], generator=gen).to(dev)
        cases += aggregate_cases(g, x, "aggregate", ("sum", "mean", "gcn", "max"), index_add=True)
        info["aggregate"] = f"uniform random graph N={s['N']:,} E={s['E']:,} F={s['F']} float32"
    if want("aggregate-skewed"):
        g = Graph.from_edge_index(power_law_edges(s["SN"], s["SE"]), s["SN"]).to(dev)
        x = torch.randn(s["SN"], s["SF"], generator=gen).to(dev)
        cases += aggregate_cases(g, x, "aggregate-skewed", ("sum", "gcn"), index_add=False)
        info["aggregate-skewed"] = (f"power-law graph N={s['SN']:,} E={s['SE']:,} F={s['SF']} float32, max in-degree "
                                    f"{int(g.in_degree.max()):,}")
    if want("goodness"):
        cases += _goodness_cases(s, gen, dev)
        info["goodness"] = f"h [{s['GN']:,}, {s['GD']}] float32"
    if want("linear"):
        cases += _linear_cases(s, gen, dev)
        info["linear"] = f"x [{s['LN']:,}, {s['LIN']}], weight [{s['LOUT']}, {s['LIN']}] float32"
    if want("sf"):
        cases += _sf_cases(s, gen, dev)
        info["sf"] = (f"h [{s['SFN'] + s['SFC']:,}, {s['SFD']}] float32, {s['SFN']:,} training rows, "
                      f"C = {s['SFC']} virtual nodes")
    if want("dropout"):
        cases += _dropout_cases(s, gen, dev)
        info["dropout"] = f"x [{s['GN']:,}, {s['GD']}] float32"
    if want("jvp"):
        cases += _jvp_cases(s, gen, dev)
        info["jvp"] = (f"x, dx [{s['LN']:,}, {s['LIN']}], weight and tangent [{s['LOUT']}, {s['LIN']}] float32, "
                       f"bias and tangent bias")
    # Copy bandwidth on the goodness operand's size (512 MB at full size: beyond any cache).
    src = torch.randn(s["GN"], s["GD"], generator=gen).to(dev)
    out = torch.empty_like(src)
    copy_case = OpCase("copy", "copy", 2 * src.numel() * src.element_size(),
                       [Impl("dst.copy_(src)", lambda: out.copy_(src), "limit")])
    return cases, copy_case, info


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def measure(impl: Impl, threads: int, device: str, min_run_time: float) -> dict:
    """``{"best_s", "median_s", "runs"}`` for one implementation."""
    from torch.utils import benchmark

    if impl.restore is not None:  # in place: time each call alone, input restored before it
        times = []
        impl.restore()
        impl.fn()
        deadline = time.perf_counter() + max(min_run_time, 0.2)
        while len(times) < 5 or (time.perf_counter() < deadline and len(times) < 50):
            impl.restore()
            _sync(device)
            t0 = time.perf_counter()
            impl.fn()
            _sync(device)
            times.append(time.perf_counter() - t0)
        times.sort()
        return {"best_s": times[0], "median_s": times[len(times) // 2], "runs": len(times)}
    impl.fn()  # warm-up (lazy initialisation, first-touch of caches)
    timer = benchmark.Timer(stmt="fn()", globals={"fn": impl.fn}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=impl.min_run_time if impl.min_run_time is not None else min_run_time)
    return {"best_s": min(m.times), "median_s": m.median, "runs": m.number_per_run * len(m.times)}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f", {int(fh.readline().split()[1]) / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"{cpu}, {platform.machine()}, {os.cpu_count()} CPUs{mem}"


def run(quick: bool = False, device: str = "cpu", threads: int | None = None, only: str | None = None,
        min_run_time: float = 0.5, log=None) -> dict:
    """Run the suite in this process: ``{"meta": ..., "records": [...]}`` (one record per op and
    implementation, with ``ratio_vs_ours`` = its time / ffkernels' time and ``limit_ms``)."""
    from .. import available_backends
    from ..backends import resolve
    from .suite import _git_rev

    log = log or (lambda msg: None)
    old_threads = torch.get_num_threads()
    threads = threads or old_threads
    torch.set_num_threads(threads)
    try:
        cases, copy_case, info = build_cases(quick, device, only)
        load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": quick, "device": device,
                "threads": threads, "machine": _machine(), "torch": torch.__version__, "git": _git_rev(),
                "load_average_at_start": load0, "sizes": info}
        try:
            from .. import _C
            meta["cpu_isa"] = _C.cpu_isa()
            meta["llc"] = _C.cache_info()
        except ImportError:
            pass
        meta["backends"] = {op: resolve(op, None, torch.device(device), torch.float32).NAME
                            for op in ("aggregate", "goodness_loss_grad", "linear_goodness_step", "sf_loss_grad",
                                       "linear_jvp", "dropout")}
        meta["available_backends"] = {k: v["available"] for k, v in available_backends().items()}
        copy = measure(copy_case.impls[0], threads, device, min_run_time)
        bw = copy_case.nbytes / copy["best_s"]
        log(f"copy bandwidth {bw / 1e9:.1f} GB/s")
        rows_by_case = []
        for case in cases:
            rows = []
            for impl in case.impls:
                m = measure(impl, threads, device, min_run_time)
                rows.append((impl, m))
                log(f"{case.op:28s} {impl.name:32s} {m['best_s'] * 1e3:9.2f} ms")
            rows_by_case.append((case, rows))
        # The limit uses the best copy bandwidth of the run (measured first and again last).
        copy_end = measure(copy_case.impls[0], threads, device, min_run_time)
        bw = max(bw, copy_case.nbytes / copy_end["best_s"])
        meta["copy_bandwidth_gbps"] = bw / 1e9
        records = []
        for case, rows in rows_by_case:
            ours = next((m for impl, m in rows if impl.kind == "ours"), None)
            for impl, m in rows:
                records.append({
                    "group": case.group, "op": case.op, "impl": impl.name, "kind": impl.kind, "threads": threads,
                    "best_ms": m["best_s"] * 1e3, "median_ms": m["median_s"] * 1e3, "runs": m["runs"],
                    "bytes": case.nbytes, "gbps": case.nbytes / m["best_s"] / 1e9,
                    "pct_of_copy_bw": 100.0 * case.nbytes / m["best_s"] / bw,
                    "limit_ms": case.nbytes / bw * 1e3,
                    "ratio_vs_ours": m["best_s"] / ours["best_s"] if ours else None, "note": case.note})
        meta["load_average_at_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {"meta": meta, "records": records}
    finally:
        torch.set_num_threads(old_threads)


def markdown(results: dict) -> str:
    meta, records = results["meta"], results["records"]
    lines = [f"ffkernels op benchmarks ({meta['machine']}; torch {meta['torch']}, {meta['threads']} threads, "
             f"device {meta['device']}, cpu_isa {meta.get('cpu_isa', 'n/a')}, LLC "
             f"{meta.get('llc', {}).get('llc_bytes', 0) / 2**20:.0f} MiB ({meta.get('llc', {}).get('source', '?')}))",
             f"date {meta['date']}; code {meta['git']}; load average {meta['load_average_at_start']} at start, "
             f"{meta['load_average_at_end']} at end; backends {meta['backends']}",
             f"copy bandwidth (dst.copy_(src), read + write, preallocated; best of the run's first and last "
             f"measurement): {meta['copy_bandwidth_gbps']:.1f} GB/s; "
             f"limit = bytes moved / that bandwidth; time = best block of torch.utils.benchmark.blocked_autorange "
             f"(in place: best single call, input restored before each)"]
    for group, text in meta["sizes"].items():
        lines.append(f"- {group}: {text}")
    lines += ["", "| op | implementation | time (ms) | median (ms) | GB/s | % of copy bw | limit (ms) | "
                  "x of limit | time / ffkernels |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        ratio = "-" if r["ratio_vs_ours"] is None else f"{r['ratio_vs_ours']:.2f}x"
        op = r["op"] + (" (skewed)" if r["group"] == "aggregate-skewed" else "")
        lines.append(f"| {op} | {r['impl']} | {r['best_ms']:.2f} | {r['median_ms']:.2f} | {r['gbps']:.2f} | "
                     f"{r['pct_of_copy_bw']:.0f}% | {r['limit_ms']:.2f} | {r['best_ms'] / r['limit_ms']:.2f} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    """``python -m ffkernels.benchmarking.ops_suite`` (and ``benchmarks/bench_ops.py``)."""
    import argparse
    import json

    p = argparse.ArgumentParser(description="ffkernels op micro-benchmarks (ffkernels bench --suite ops)")
    p.add_argument("--quick", "--small", action="store_true", help="1/10 sizes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--only", default=None, help=f"comma-separated groups: {', '.join(GROUPS)}")
    p.add_argument("--min-run-time", type=float, default=0.5, help="seconds per implementation (autorange)")
    p.add_argument("--json", metavar="PATH")
    p.add_argument("--out", metavar="PATH", help="also write the markdown table here")
    args = p.parse_args(argv)
    results = run(args.quick, args.device, args.threads, args.only, args.min_run_time,
                  log=lambda m: print(m, flush=True))
    text = markdown(results)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
