"""``ffkernels bench``: the benchmark suites' command line.

    ffkernels bench --suite e2e [--quick] [--device cpu|cuda] [--json out.json] [--plot DIR]
    ffkernels bench --suite ops [--quick] [--threads N] [--only GROUPS] [--json out.json] [--out table.md]
    ffkernels bench --suite tta [--datasets cora_ml] [--threads 1] [--json out.json]
    ffkernels bench --suite distributed [--quick] [--sizes N,..] [--ranks P,..] [--json out.json] [--md out.md]

The e2e suite trains each configuration three ways (ffkernels' fused runner, an eager autograd
baseline written like the published code, backpropagation), each in a fresh process, and prints
a markdown table; ``--json`` writes one record per configuration and variant, ``--plot`` writes
``time_vs_size.png`` and ``memory_vs_depth.png`` (needs matplotlib: the ``bench`` extra).

The suite's code ships inside the package (``ffkernels.benchmarking``) so that this command
works from an installed wheel; ``benchmarks/`` in the repository holds the recorded results.
``ffkernels.bench_cli`` re-exports this module (the ``ffkernels`` command line imports it by
that name). The suites never import this module: the dependency runs one way only.
"""
from __future__ import annotations

import argparse
import json
import sys

SUITES = ("e2e", "ops", "tta", "distributed")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and a non-zero exit, no usage dump
        self.exit(2, f"ffkernels bench: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ffkernels bench", description="Benchmark suites of ffkernels.")
    p.add_argument("--suite", choices=SUITES, default="e2e",
                   help="e2e: training runs fused vs eager vs backprop; ops: each op vs its baselines and the "
                        "memory-bandwidth limit, in one process; tta: time to a test-accuracy target, fused SF "
                        "vs eager SF vs PyG GCNConv backprop; distributed: partitioned SF vs distributed "
                        "full-graph BP over several processes (tta and distributed have their own options: "
                        "ffkernels bench --suite tta --help) (default: e2e)")
    p.add_argument("--quick", action="store_true", help="the small subset (under 5 minutes on 2 CPU cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR (needs matplotlib)")
    p.add_argument("--only", metavar="SUBSTR[,SUBSTR]", help="run only configurations whose name contains one of these")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per variant run (default 3600)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OpenMP threads in each run (default: torch's default). On a loaded machine "
                        "use 1: multi-threaded parallel regions stall whenever a sibling thread is descheduled")
    p.add_argument("--max-epochs", type=int, default=None, help="cap every configuration's epochs (per layer)")
    p.add_argument("--from-json", nargs="+", metavar="PATH",
                   help="do not train: merge these saved record files (later files win per configuration "
                        "and variant), print the table and write --json/--plot from them")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    p.add_argument("--out", metavar="PATH", help="ops suite: also write the markdown table to PATH")
    p.add_argument("--min-run-time", type=float, default=0.5,
                   help="ops suite: seconds of timing per implementation (torch.utils.benchmark autorange)")
    return p


def _run_ops(args) -> int:
    from . import ops_suite

    if args.list:
        print("\n".join(ops_suite.GROUPS))
        return 0
    problem = _check_device(args.device)
    if problem:
        print(f"ffkernels bench: error: {problem}", file=sys.stderr)
        return 2
    if args.threads is not None and args.threads < 1:
        print("ffkernels bench: error: --threads must be >= 1", file=sys.stderr)
        return 2
    results = ops_suite.run(quick=args.quick, device=args.device, threads=args.threads, only=args.only,
                            min_run_time=args.min_run_time, log=lambda m: print(m, file=sys.stderr, flush=True))
    text = ops_suite.markdown(results)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


def _check_device(device: str) -> str | None:
    if device == "cpu":
        return None
    if not device.startswith("cuda"):
        return f"--device must be cpu or cuda[:N], got {device!r}"
    import torch
    if not torch.cuda.is_available():
        return "--device cuda requested but torch.cuda.is_available() is False"
    return None


def _suite_of(argv) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--suite" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--suite="):
            return arg.split("=", 1)[1]
    return None


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own = {"distributed": "distributed_suite", "tta": "time_to_accuracy"}  # suites with their own options
    if _suite_of(argv) in own:
        import importlib
        suite_module = importlib.import_module(f".{own[_suite_of(argv)]}", __package__)
        rest = [a for i, a in enumerate(argv) if a != "--suite" and not a.startswith("--suite=")
                and not (i > 0 and argv[i - 1] == "--suite")]
        return suite_module.main(rest)
    args = build_parser().parse_args(argv)
    if args.suite == "ops":
        return _run_ops(args)
    from . import plots, suite
    if args.list:
        for case in suite.suite_cases(args.quick):
            if not args.only or any(tok in case.name for tok in args.only.split(",")):
                print(f"{case.group:8s} {case.name:36s} epochs={case.epochs:<5d} variants={','.join(case.variants)}")
        return 0
    if args.from_json:
        merged = {}
        for path in args.from_json:
            try:
                with open(path) as fh:
                    records = json.load(fh)
            except (OSError, ValueError) as exc:
                print(f"ffkernels bench: error: cannot read --from-json {path}: {exc}", file=sys.stderr)
                return 2
            for rec in records:
                merged[(rec.get("name"), rec.get("variant"))] = rec
        results = {"meta": {"from_json": args.from_json, "device": args.device},
                   "records": suite.add_ratios(list(merged.values()))}
        print(suite.markdown_table(results))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(results["records"], fh, indent=1)
        if args.plot:
            for path in plots.write_plots(results, args.plot):
                print(f"plot: {path}")
        return 0
    problem = _check_device(args.device)
    if problem:
        print(f"ffkernels bench: error: {problem}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            plots._pyplot()
        except RuntimeError as exc:
            print(f"ffkernels bench: error: {exc}", file=sys.stderr)
            return 2
    import os
    if args.threads is None and hasattr(os, "getloadavg") and os.getloadavg()[0] > (os.cpu_count() or 1):
        print(f"ffkernels bench: warning: load average {os.getloadavg()[0]:.1f} exceeds the {os.cpu_count()} CPUs; "
              "timings will be noisy (consider --threads 1)", file=sys.stderr)
    if args.threads is not None and args.threads < 1:
        print("ffkernels bench: error: --threads must be >= 1", file=sys.stderr)
        return 2
    def save(records):  # after every run, so an interrupted suite keeps what it measured
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(records, fh, indent=1)

    results = suite.run_suite(quick=args.quick, device=args.device, only=args.only, timeout=args.timeout,
                              threads=args.threads, max_epochs=args.max_epochs, on_record=save)
    meta = results["meta"]
    print(f"# ffkernels e2e benchmark ({'quick' if args.quick else 'full'}), {meta['date']}\n")
    print(f"machine: {meta['machine']}, torch {meta['torch']} ({meta['threads']} threads), device {args.device}"
          + (f" ({meta['gpu']})" if meta.get("gpu") else "") + f"; code: {meta['git']}\n")
    print(suite.markdown_table(results))
    print(f"\nsuite time: {meta['suite_seconds']:.0f} s")
    if args.json:
        save(results["records"])
        with open(args.json + ".meta.json" if not args.json.endswith(".json") else
                  args.json[:-5] + ".meta.json", "w") as fh:
            json.dump(meta, fh, indent=1)
    if args.plot:
        for path in plots.write_plots(results, args.plot):
            print(f"plot: {path}")
    failed = [r for r in results["records"] if r.get("error")]
    return 1 if failed and len(failed) == len(results["records"]) else 0


if __name__ == "__main__":
    sys.exit(main())
