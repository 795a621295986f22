"""GPU timings of the Triton and CUDA C++ kernels against the baselines a user would pick.

Run on a CUDA machine (``scripts/gpu_check.sh`` calls it)::

    python benchmarks/bench_gpu.py --out gpu_out            # full sizes (E = 1.6e7, [4M, 128])
    python benchmarks/bench_gpu.py --quick --out gpu_out    # 1/4 sizes

``--smoke`` runs tiny sizes on whatever device is there (CPU under TRITON_INTERPRET=1) to
check the script itself. Every figure is measured in this one run on this one card: ratios
against a baseline, and achieved bandwidth against a measured device-to-device copy.
Writes ``gpu_bench.md`` (markdown table) and ``gpu_bench.json`` under ``--out``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ffkernels  # noqa: E402
from ffkernels import ops  # noqa: E402
from ffkernels.graph import Graph  # noqa: E402


# ----------------------------------------------------------------------------- timing
def bench(fn, device, min_reps=5, max_reps=50, budget_s=0.5):
    """Median milliseconds of ``fn()`` (CUDA events on GPU, perf_counter on CPU)."""
    fn()  # compile / warm up
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    t_start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t_start < budget_s):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


class Table:
    def __init__(self):
        self.rows = []

    def add(self, group, name, ms, baseline_ms=None, baseline=None, gbytes=None, copy_gbs=None, note=""):
        row = {"group": group, "name": name, "ms": ms, "baseline": baseline, "baseline_ms": baseline_ms,
               "speedup": (baseline_ms / ms) if (baseline_ms and ms) else None,
               "gbs": (gbytes / (ms * 1e-3)) if (gbytes and ms) else None, "note": note}
        row["pct_copy"] = (100.0 * row["gbs"] / copy_gbs) if (row["gbs"] and copy_gbs) else None
        self.rows.append(row)
        print(f"  {group:28s} {name:34s} {ms:9.3f} ms"
              + (f"  x{row['speedup']:.2f} vs {baseline}" if row["speedup"] else "")
              + (f"  {row['gbs']:.0f} GB/s ({row['pct_copy']:.0f}% of copy)" if row["pct_copy"] else ""),
              flush=True)

    def markdown(self):
        lines = ["| group | implementation | time (ms) | speedup vs | GB/s | % of copy BW | note |",
                 "|---|---|---:|---|---:|---:|---|"]
        for r in self.rows:
            sp = f"{r['speedup']:.2f}x {r['baseline']}" if r["speedup"] else ""
            gbs = f"{r['gbs']:.0f}" if r["gbs"] else ""
            pct = f"{r['pct_copy']:.0f}%" if r["pct_copy"] else ""
            lines.append(f"| {r['group']} | {r['name']} | {r['ms']:.3f} | {sp} | {gbs} | {pct} | {r['note']} |")
        return "\n".join(lines)


def guarded(table, group, name, fn, **kw):
    """Time ``fn`` and add a row; a failure becomes a row saying so, not the end of the run."""
    try:
        ms = bench(fn, kw.pop("device"))
    except Exception as exc:  # keep timing the rest
        traceback.print_exc()
        table.rows.append({"group": group, "name": name, "ms": float("nan"), "baseline": None, "baseline_ms": None,
                           "speedup": None, "gbs": None, "pct_copy": None,
                           "note": f"FAILED: {type(exc).__name__}: {str(exc)[:80]}"})
        return None
    table.add(group, name, ms, **kw)
    return ms


# ----------------------------------------------------------------------------- checks
def correctness(device, names):
    """Small adversarial graph: every backend under test against the reference (all reduces).
    Node 0 has 5000 in-edges, more than the split chunk (1024): the long-row edge split of
    both kernels runs."""
    gen = torch.Generator().manual_seed(0)
    n = 300
    ei = torch.cat([torch.randint(0, n - 1, (2, 3000), generator=gen),
                    torch.stack([torch.randint(0, n - 1, (5000,), generator=gen), torch.zeros(5000, dtype=torch.long)])],
                   dim=1).to(device)
    g = Graph.from_edge_index(ei, n)
    w = torch.rand(ei.shape[1], generator=gen).to(device)
    results = []
    # Kept small (each Triton specialisation compiles once): the test-suite has the full matrix.
    for dtype, tol in ((torch.float32, 1e-4), (torch.bfloat16, 3e-2)):
        for feats in (3, 128):
            x = torch.randn(n, feats, generator=gen).to(dtype).to(device)
            for reduce in ("sum", "mean", "max", "gcn"):
                for ew in (None, w):
                    ref = ops.aggregate(g, x.double(), reduce, ew, backend="reference").float()
                    for name in names:
                        try:
                            out = ops.aggregate(g, x, reduce, ew, backend=name).float()
                            err = ((out - ref).abs() / (ref.abs() + 1.0)).max().item()
                            ok = err <= tol
                        except Exception as exc:
                            err, ok = str(exc)[:60], False
                        if not ok:
                            results.append(f"aggregate {name} {dtype} F={feats} {reduce} "
                                           f"weighted={ew is not None}: err={err}")
    return results


# ----------------------------------------------------------------------------- suites
CHECK_FAILURES: list = []


def random_graph(num_nodes, num_edges, device, skewed=False, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    src = torch.randint(0, num_nodes, (num_edges,), device=device, generator=gen)
    if skewed:  # power-law-ish in-degrees: a few destinations get a large share of the edges
        u = torch.rand(num_edges, device=device, generator=gen)
        dst = (num_nodes * u.pow(4)).long().clamp_max(num_nodes - 1)
    else:
        dst = torch.randint(0, num_nodes, (num_edges,), device=device, generator=gen)
    return Graph.from_edge_index(torch.stack([src, dst]), num_nodes)


def suite_copy(table, device, numel):
    a = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a), device)
    gbs = 2 * a.numel() * 4 / (ms * 1e-3) / 1e9
    table.add("memory", f"copy {numel * 4 / 2**30:.2f} GiB (read+write)", ms, gbytes=2 * numel * 4 / 1e9)
    return gbs


def suite_aggregate(table, device, num_nodes, num_edges, feats, copy_gbs, names, skewed=False):
    g = random_graph(num_nodes, num_edges, device, skewed=skewed)
    x = torch.randn(num_nodes, feats, device=device)
    label = f"aggregate {'skewed ' if skewed else ''}N={num_nodes:.0e} E={num_edges:.1e} F={feats}"
    # Bytes a row-split kernel must move at least: indices, one gathered row per edge, output.
    idx_bytes = num_edges * g.col.element_size() + (num_nodes + 1) * g.rowptr.element_size()
    gbytes = (idx_bytes + (num_edges + num_nodes) * feats * 4) / 1e9
    csr = g.to_torch_sparse_csr()
    base = guarded(table, label, "torch.sparse.mm (cuSPARSE CSR)", lambda: torch.sparse.mm(csr, x),
                   device=device, gbytes=gbytes, copy_gbs=copy_gbs)
    col64 = g.col.long()
    row64 = g.row.long()
    if not skewed:
        def gather_scatter():
            out = torch.zeros_like(x)
            out.index_add_(0, row64, x.index_select(0, col64))
            return out
        guarded(table, label, "gather + index_add_ (PyG-style)", gather_scatter, device=device,
                baseline_ms=base, baseline="cuSPARSE", gbytes=gbytes, copy_gbs=copy_gbs)
    try:  # the big graph's answer against cuSPARSE (skewed: exercises the long-row split)
        expected = torch.sparse.mm(csr, x)
        for name in names:
            got = ops.aggregate(g, x, "sum", backend=name)
            err = ((got - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()
            print(f"  {label}: {name} sum vs cuSPARSE max rel err {err:.2e}", flush=True)
            if not err < 1e-4:
                CHECK_FAILURES.append(f"{label} {name} sum vs cuSPARSE: max rel err {err:.2e}")
        del expected, got
    except Exception as exc:
        CHECK_FAILURES.append(f"{label}: check failed to run: {exc}")
    reduces = ("sum",) if skewed else ("sum", "mean", "max", "gcn")
    for name in names:
        for reduce in reduces:
            guarded(table, label, f"ffkernels {name} {reduce}",
                    lambda name=name, reduce=reduce: ops.aggregate(g, x, reduce, backend=name), device=device,
                    baseline_ms=base, baseline="cuSPARSE", gbytes=gbytes, copy_gbs=copy_gbs)
    if not skewed:
        xh = x.to(torch.bfloat16)
        gbytes_h = (idx_bytes + (num_edges + num_nodes) * feats * 2) / 1e9
        for name in names:
            guarded(table, label, f"ffkernels {name} sum bf16", lambda name=name: ops.aggregate(g, xh, "sum", backend=name),
                    device=device, baseline_ms=base, baseline="cuSPARSE fp32", gbytes=gbytes_h, copy_gbs=copy_gbs)
    del g, x, csr, col64, row64


def suite_goodness(table, device, rows, width, copy_gbs):
    h = torch.relu(torch.randn(rows, width, device=device))
    positive = torch.rand(rows, device=device) > 0.5
    label = f"goodness_loss_grad [{rows}, {width}]"
    gbytes = 2 * h.numel() * 4 / 1e9  # read h once, write grad_z once
    dst = torch.empty_like(h)
    copy_ms = guarded(table, label, "copy of h (same bytes)", lambda: dst.copy_(h), device=device,
                      gbytes=gbytes, copy_gbs=copy_gbs)
    ref = guarded(table, label, "eager torch (reference backend)",
                  lambda: ops.goodness_loss_grad(h, positive, backend="reference"), device=device,
                  gbytes=gbytes, copy_gbs=copy_gbs)
    guarded(table, label, "ffkernels triton ff", lambda: ops.goodness_loss_grad(h, positive, backend="triton"),
            device=device, baseline_ms=ref, baseline="eager", gbytes=gbytes, copy_gbs=copy_gbs,
            note=f"copy takes {copy_ms:.3f} ms" if copy_ms else "")
    # In place: grad_z overwrites the buffer (no allocation); repeated calls shrink its values,
    # which does not change the time of a memory-bound kernel on a GPU.
    buf = h.clone()
    guarded(table, label, "ffkernels triton ff inplace=True",
            lambda: ops.goodness_loss_grad(buf, positive, backend="triton", inplace=True), device=device,
            baseline_ms=copy_ms, baseline="copy", gbytes=gbytes, copy_gbs=copy_gbs,
            note="target: <= 1.3x the copy")
    half = rows // 2
    pairs = torch.stack([torch.arange(half, device=device), torch.arange(half, device=device) + half], 1)
    guarded(table, label, "ffkernels triton symba inplace=True",
            lambda: ops.goodness_loss_grad(buf, positive, loss="symba", pairs=pairs, backend="triton", inplace=True),
            device=device, baseline_ms=copy_ms, baseline="copy", gbytes=gbytes, copy_gbs=copy_gbs,
            note="reads h twice")
    hb = h.to(torch.bfloat16)
    guarded(table, label, "ffkernels triton ff bf16", lambda: ops.goodness_loss_grad(hb, positive, backend="triton"),
            device=device, baseline_ms=ref, baseline="eager fp32", gbytes=gbytes / 2, copy_gbs=copy_gbs)
    del h, hb, dst, buf


def suite_dropout(table, device, rows, width, copy_gbs):
    """ops.dropout (counter-based mask, one pass) against torch's dropout and a copy of x."""
    x = torch.randn(rows, width, device=device)
    label = f"dropout p=0.5 [{rows}, {width}]"
    gbytes = 2 * x.numel() * 4 / 1e9  # read x once, write the result once
    dst = torch.empty_like(x)
    copy_ms = guarded(table, label, "copy of x (same bytes)", lambda: dst.copy_(x), device=device,
                      gbytes=gbytes, copy_gbs=copy_gbs)
    ref = guarded(table, label, "torch.nn.functional.dropout", lambda: torch.nn.functional.dropout(x, 0.5),
                  device=device, gbytes=gbytes, copy_gbs=copy_gbs)
    got = ops.dropout(x, 0.5, 12345, backend="triton")
    want = ops.dropout(x, 0.5, 12345, backend="reference")
    if not torch.equal(got, want):
        CHECK_FAILURES.append(f"{label}: triton differs from the reference")
    guarded(table, label, "ffkernels triton dropout", lambda: ops.dropout(x, 0.5, 12345, backend="triton"),
            device=device, baseline_ms=ref, baseline="torch", gbytes=gbytes, copy_gbs=copy_gbs,
            note=f"copy takes {copy_ms:.3f} ms" if copy_ms else "")
    guarded(table, label, "ffkernels triton dropout in place",
            lambda: ops.dropout(dst, 0.5, 12345, out=dst, backend="triton"), device=device,
            baseline_ms=copy_ms, baseline="copy", gbytes=gbytes, copy_gbs=copy_gbs)
    del x, dst, got, want


def suite_sf(table, device, rows, classes, width, copy_gbs):
    """The SF loss (logits vs C virtual rows, softmax CE, gradient rows) on n training rows."""
    from ffkernels.ops.sf import sf_loss_grad_kernel

    gen = torch.Generator(device=device).manual_seed(2)
    h = torch.relu(torch.randn(rows + classes, width, device=device, generator=gen))
    train = torch.arange(rows, device=device)
    virt = torch.arange(rows, rows + classes, device=device)
    y = torch.randint(0, classes, (rows,), device=device, generator=gen)
    label = f"sf_loss_grad n={rows} C={classes} D={width}"
    gbytes = 2 * h.numel() * 4 / 1e9  # read the rows, write their gradient
    try:
        ref_l, ref_g = sf_loss_grad_kernel(h, train, y, virt, 0.5, backend="reference")
        got_l, got_g = sf_loss_grad_kernel(h, train, y, virt, 0.5, backend="triton")
        err = ((got_g - ref_g).abs().max() / ref_g.abs().max().clamp_min(1e-30)).item()
        lerr = abs(float(got_l) - float(ref_l)) / max(abs(float(ref_l)), 1e-30)
        print(f"  {label}: triton vs reference grad rel err {err:.2e}, loss rel err {lerr:.2e}", flush=True)
        if not (err < 1e-4 and lerr < 1e-5):
            CHECK_FAILURES.append(f"{label}: triton vs reference grad {err:.2e} loss {lerr:.2e}")
        del ref_g, got_g
    except Exception as exc:
        CHECK_FAILURES.append(f"{label}: check failed to run: {exc}")
    ref = guarded(table, label, "eager torch (reference backend)",
                  lambda: sf_loss_grad_kernel(h, train, y, virt, 0.5, backend="reference"), device=device,
                  gbytes=gbytes, copy_gbs=copy_gbs)
    guarded(table, label, "ffkernels triton", lambda: sf_loss_grad_kernel(h, train, y, virt, 0.5, backend="triton"),
            device=device, baseline_ms=ref, baseline="eager", gbytes=gbytes, copy_gbs=copy_gbs)
    del h


def _autograd_step(x, weight, bias, positive, theta=2.0):
    """What published forward-learning code does: autograd on the local loss."""
    w = weight.detach().requires_grad_(True)
    b = bias.detach().requires_grad_(True)
    h = torch.relu(x @ w.t() + b)
    g = (h * h).sum(1)
    s = g - theta
    pos = positive
    loss = torch.nn.functional.softplus(-s[pos]).mean() + torch.nn.functional.softplus(s[~pos]).mean()
    loss.backward()
    return loss.detach(), w.grad, b.grad, h.detach()


def suite_linear(table, device, rows, din, dout, dtype):
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(rows, din, device=device, generator=gen).to(dtype)
    weight = (torch.randn(dout, din, device=device, generator=gen) / din ** 0.5).to(dtype)
    bias = torch.zeros(dout, device=device, dtype=dtype)
    positive = torch.rand(rows, device=device, generator=gen) > 0.5
    label = f"linear_goodness_step [{rows}x{din}]->{dout} {str(dtype).replace('torch.', '')}"
    flops = 2 * 2 * rows * din * dout  # forward GEMM + grad_weight GEMM
    eager = guarded(table, label, "autograd eager (published code)",
                    lambda: _autograd_step(x, weight, bias, positive), device=device)
    ref = guarded(table, label, "closed-form eager (reference backend)",
                  lambda: ops.linear_goodness_step(x, weight, bias, positive, backend="reference"), device=device,
                  baseline_ms=eager, baseline="autograd")
    ms = guarded(table, label, "ffkernels triton fused",
                 lambda: ops.linear_goodness_step(x, weight, bias, positive, backend="triton"), device=device,
                 baseline_ms=eager, baseline="autograd")
    if ms:
        table.rows[-1]["note"] = f"{flops / (ms * 1e-3) / 1e12:.1f} TFLOP/s (2 GEMMs)"
    del x, weight, bias


def suite_linear_jvp(table, device, rows, din, dout, dtype):
    """The dual-number linear layer: the Triton kernel (both outputs from one GEMM kernel)
    against the three separate cuBLAS matmuls and torch.func.jvp, checked against float64."""
    gen = torch.Generator(device=device).manual_seed(3)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, device=device, generator=gen) * scale).to(dtype)

    x, dx = r(rows, din), r(rows, din)
    w, v = r(dout, din, scale=din ** -0.5), r(dout, din, scale=din ** -0.5)
    b, db = r(dout, scale=0.1), r(dout, scale=0.1)
    label = f"linear_jvp [{rows}x{din}]->{dout} {str(dtype).replace('torch.', '')}"
    flops = 3 * 2 * rows * din * dout
    try:  # the big case's answer against float64
        ref = ops.linear_jvp(*(t.double() for t in (x, dx, w, v, b, db)), backend="reference")
        got = ops.linear_jvp(x, dx, w, v, b, db, backend="triton")
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        for name, g, e in zip(("y", "dy"), got, ref):
            err = ((g.double() - e).abs().max() / e.abs().max().clamp_min(1e-30)).item()
            print(f"  {label}: triton {name} vs float64 max rel err {err:.2e}", flush=True)
            if not err < tol:
                CHECK_FAILURES.append(f"{label}: triton {name} vs float64 max rel err {err:.2e}")
        del ref, got
    except Exception as exc:
        CHECK_FAILURES.append(f"{label}: check failed to run: {exc}")
    base = guarded(table, label, "three separate matmuls (cuBLAS)",
                   lambda: (x @ w.t() + b, x @ v.t() + dx @ w.t() + db), device=device)
    guarded(table, label, "torch.func.jvp(F.linear)",
            lambda: torch.func.jvp(torch.nn.functional.linear, (x, w, b), (dx, v, db)), device=device,
            baseline_ms=base, baseline="3 matmuls")
    ms = guarded(table, label, "ffkernels triton linear_jvp",
                 lambda: ops.linear_jvp(x, dx, w, v, b, db, backend="triton"), device=device,
                 baseline_ms=base, baseline="3 matmuls")
    if ms:
        table.rows[-1]["note"] = f"{flops / (ms * 1e-3) / 1e12:.1f} TFLOP/s (3 GEMMs)"
    del x, dx, w, v


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu_out")
    parser.add_argument("--quick", action="store_true", help="1/4 sizes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device (checks the script)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    avail = ffkernels.available_backends()
    names = [n for n in ("triton", "cuda") if avail[n]["available"]]
    print("backends:", json.dumps(avail), flush=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
            "python": platform.python_version(), "device": str(device),
            "card": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
            "backends": avail}
    try:
        import triton
        meta["triton"] = triton.__version__
    except Exception:
        pass

    if args.smoke:
        sizes = dict(copy=1 << 16, nodes=200, edges=2000, feats=16, good_rows=256, good_width=32,
                     lin_rows=64, lin=((16, 32),), sf=((64, 4, 16),))
    elif args.quick:
        sizes = dict(copy=1 << 27, nodes=250_000, edges=4_000_000, feats=128, good_rows=1 << 20, good_width=128,
                     lin_rows=1 << 18, lin=((128, 128), (512, 256)), sf=((1 << 18, 8, 128), (1 << 18, 40, 128)))
    else:
        sizes = dict(copy=1 << 28, nodes=1_000_000, edges=16_000_000, feats=128, good_rows=1 << 22,
                     good_width=128, lin_rows=1 << 20, lin=((128, 128), (512, 256)),
                     sf=((1 << 20, 8, 128), (1 << 20, 40, 128)))
    meta["sizes"] = {k: v for k, v in sizes.items()}

    print("correctness (small adversarial graph vs reference)...", flush=True)
    failures = correctness(device, names) if not args.smoke or device.type == "cuda" else []
    meta["correctness_failures"] = failures
    print(f"  {len(failures)} failures", *failures[:20], sep="\n  ", flush=True)

    table = Table()

    def write(final=False):
        """(Re)write the table after every suite: a run cut short still leaves its rows."""
        all_failures = failures + CHECK_FAILURES
        meta["correctness_failures"] = all_failures
        header = (f"# ffkernels GPU benchmark{'' if final else ' (partial: run still going or cut short)'}\n\n"
                  f"{meta['date']} | {meta['card']} | torch {meta['torch']} | triton {meta.get('triton')} | "
                  f"copy bandwidth {meta.get('copy_gbs', 0):.0f} GB/s (read+write)\n\n"
                  f"Correctness check failures: {len(all_failures)}\n"
                  + "".join(f"- {f}\n" for f in all_failures[:20]) + "\n")
        md = header + table.markdown() + "\n"
        with open(os.path.join(args.out, "gpu_bench.md"), "w") as f:
            f.write(md)
        with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
            json.dump({"meta": meta, "rows": table.rows}, f, indent=1, default=str)
        return md, all_failures

    copy_gbs = suite_copy(table, device, sizes["copy"])
    meta["copy_gbs"] = copy_gbs
    suites = [lambda: suite_aggregate(table, device, sizes["nodes"], sizes["edges"], sizes["feats"], copy_gbs, names),
              lambda: suite_goodness(table, device, sizes["good_rows"], sizes["good_width"], copy_gbs),
              lambda: suite_dropout(table, device, sizes["good_rows"], sizes["good_width"], copy_gbs)]
    for din, dout in sizes["lin"]:
        for dtype in (torch.float32, torch.bfloat16):
            suites.append(lambda din=din, dout=dout, dtype=dtype: suite_linear(table, device, sizes["lin_rows"], din,
                                                                               dout, dtype))
    for n, c, d in sizes["sf"]:
        suites.append(lambda n=n, c=c, d=d: suite_sf(table, device, n, c, d, copy_gbs))
    for din, dout in sizes["lin"]:
        for dtype in (torch.float32, torch.bfloat16):
            suites.append(lambda din=din, dout=dout, dtype=dtype: suite_linear_jvp(table, device, sizes["lin_rows"],
                                                                                   din, dout, dtype))
    if not args.smoke:  # last: the slowest to set up
        suites.append(lambda: suite_aggregate(table, device, sizes["nodes"], sizes["edges"], sizes["feats"],
                                              copy_gbs, names, skewed=True))
    for suite in suites:
        write()
        try:
            suite()
        except Exception as exc:  # one suite's crash (e.g. out of memory) does not lose the others
            traceback.print_exc()
            CHECK_FAILURES.append(f"suite crashed: {type(exc).__name__}: {str(exc)[:100]}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
    md, failures = write(final=True)
    print("\n" + md)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
