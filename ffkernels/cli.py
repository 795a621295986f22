"""The ``ffkernels`` command line: ``ffkernels train ...`` and ``ffkernels bench ...``.

``ffkernels train --dataset cora_ml --model gcn --algo sf --layers 4 --hidden 128 --split 0``
trains one algorithm of the registry (:mod:`ffkernels.train.registry`) on a bundled dataset,
shows a progress bar, prints a summary table and optionally writes a JSON report. Bad
arguments or files produce a one-line error on stderr and exit status 2 (never a traceback).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import threading
import time

MODELS = ("gcn", "sage", "gat", "mlp")
TASKS = ("node", "link", "mlp")
BACKENDS = ("reference", "cpu", "triton", "cuda")


class UsageError(Exception):
    """A bad argument or file: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


# ---------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory growth of a block of code.

    CUDA: ``torch.cuda.max_memory_allocated`` (reset at start). CPU: the process's peak resident
    set size (``VmHWM``) reset at start through ``/proc/self/clear_refs`` minus the resident size
    at start; where the reset is not permitted, a background thread samples ``VmRSS`` every 5 ms.
    """

    def __init__(self, device: str):
        self.device = device
        self.peak_bytes = 0
        self._thread = None
        self._stop = threading.Event()

    @staticmethod
    def _status_kb(field: str) -> int | None:
        try:
            with open("/proc/self/status") as fh:
                m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
            return int(m.group(1)) if m else None
        except OSError:
            return None

    def __enter__(self):
        import torch
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._status_kb("VmRSS") or 0
        self._hwm_reset = False
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self._hwm_reset = True
        except OSError:
            self._max_kb = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.005):
            rss = self._status_kb("VmRSS")
            if rss is not None:
                self._max_kb = max(self._max_kb, rss)

    def __exit__(self, *exc):
        import torch
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_bytes = max(torch.cuda.max_memory_allocated() - self._base, 0)
            return False
        if self._hwm_reset:
            peak = self._status_kb("VmHWM") or self._base
        else:
            self._stop.set()
            self._thread.join()
            peak = self._max_kb
        self.peak_bytes = max(peak - self._base, 0) * 1024
        return False


# ---------------------------------------------------------------------------- parsing
def parse_splits(text: str) -> list:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,3"`` -> [0, 2, 3]; ``"1"`` -> [1]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise UsageError(f"--splits: empty range {part!r}")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"\d+", part):
            out.append(int(part))
        else:
            raise UsageError(f"--splits: expected e.g. '0-4' or '0,2,3', got {text!r}")
    return out


def _algorithms():
    from .train.registry import load_algorithms
    return load_algorithms()


def build_parser() -> argparse.ArgumentParser:
    from .datasets import DATASETS
    algos = _algorithms()
    algo_lines = "\n".join(f"  {name:<16} [{spec.task}; models: {', '.join(spec.models)}] {spec.description}"
                           for name, spec in sorted(algos.items()))
    parser = _Parser(prog="ffkernels", description="Fused kernels and trainers for forward (backprop-free) learning.")
    sub = parser.add_subparsers(dest="command", metavar="{train,bench}", parser_class=_Parser)
    train = sub.add_parser(
        "train", help="train a model with a forward-learning algorithm (or the BP baseline)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train on a bundled dataset and report accuracy, time and memory.",
        epilog=f"algorithms:\n{algo_lines}\n\nmodels: {', '.join(MODELS)} (the MLP dataset 'digits' uses model 'mlp')\n"
               f"datasets: {', '.join(DATASETS)}")
    train.add_argument("--dataset", default="cora_ml", choices=DATASETS)
    train.add_argument("--model", default="gcn", choices=MODELS)
    train.add_argument("--algo", default="sf", choices=sorted(algos) or None,
                       help="training algorithm (listed below)")
    train.add_argument("--task", choices=TASKS, default=None, help="node | link | mlp (default: the algorithm's task)")
    train.add_argument("--layers", type=int, default=4)
    train.add_argument("--hidden", type=int, default=128)
    train.add_argument("--split", type=int, default=0)
    train.add_argument("--splits", default=None, help="several splits, e.g. 0-4 (reports mean and std)")
    train.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    train.add_argument("--backend", choices=BACKENDS, default=None, help="force the ops backend (FFKERNELS_BACKEND)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=None,
                       help="intra-op CPU threads while training (default: the algorithm's, usually 1)")
    train.add_argument("--epochs", type=int, default=1000, help="maximum epochs (per layer for greedy schedules)")
    train.add_argument("--patience", type=int, default=100, help="early-stopping patience, in validations")
    train.add_argument("--val-every", type=int, default=2)
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: the algorithm's)")
    train.add_argument("--weight-decay", type=float, default=None)
    train.add_argument("--theta", type=float, default=None)
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--save", default=None, help="checkpoint file written during training")
    train.add_argument("--resume", default=None, help="checkpoint file to resume from")
    train.add_argument("--stop-after-epochs", type=int, default=None, help=argparse.SUPPRESS)
    train.add_argument("--json", default=None, help="write the report as JSON to this file")
    train.add_argument("--quiet", action="store_true", help="no progress bar or table")
    bench = sub.add_parser("bench", help="benchmark suites (e.g. --suite e2e)", add_help=False)
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


# ---------------------------------------------------------------------------- train
def _validate(args, algos):
    from .datasets import NUM_SPLITS, MLP_DATASETS
    spec = algos[args.algo]
    if args.model not in spec.models:
        raise UsageError(f"--model {args.model} is not supported by --algo {args.algo} (models: {', '.join(spec.models)})")
    task = args.task or spec.task
    if task != spec.task:
        raise UsageError(f"--algo {args.algo} is a {spec.task} algorithm, not --task {task}")
    if (args.dataset in MLP_DATASETS) != (task == "mlp"):
        raise UsageError(f"--dataset {args.dataset} does not fit --task {task}"
                         + (" (use an MLP algorithm with --model mlp)" if args.dataset in MLP_DATASETS else ""))
    splits = parse_splits(args.splits) if args.splits is not None else [args.split]
    for s in splits:
        if not 0 <= s < NUM_SPLITS[args.dataset]:
            raise UsageError(f"split {s} out of range for {args.dataset} (0..{NUM_SPLITS[args.dataset] - 1})")
    for name in ("layers", "hidden", "epochs", "patience", "val_every"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.resume is not None and not os.path.isfile(args.resume):
        raise UsageError(f"--resume: no such file: {args.resume}")
    if args.json is not None:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent):
            raise UsageError(f"--json: directory does not exist: {parent}")
    import torch
    if args.device != "cpu":
        if not re.fullmatch(r"cuda(:\d+)?", args.device):
            raise UsageError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: CUDA is not available here")
    if args.backend is not None:
        from .backends import backends
        info = backends()[args.backend]
        if not info["available"]:
            raise UsageError(f"--backend {args.backend} is not usable here: {info['reason']}")
        os.environ["FFKERNELS_BACKEND"] = args.backend
    return task, splits


def _split_path(path, split, many):
    if path is None or not many:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.split{split}{ext}"


def _resolved_backend(device: str) -> str:
    import torch
    from .backends import resolve
    return resolve("aggregate", None, torch.device(device), torch.float32).NAME


def run_one(args, task, split, many, progress):
    """Train one split; returns the report dict of that run."""
    import torch
    from .datasets import load
    from .train.registry import TrainConfig
    algos = _algorithms()
    spec = algos[args.algo]
    config = TrainConfig(dataset=args.dataset, model=args.model, algo=args.algo, task=task, layers=args.layers,
                         hidden=args.hidden, split=split, seed=args.seed, device=args.device, epochs=args.epochs,
                         val_every=args.val_every, patience=args.patience, theta=args.theta,
                         batch_size=args.batch_size, save=_split_path(args.save, split, many),
                         resume=_split_path(args.resume, split, many), stop_after_epochs=args.stop_after_epochs,
                         progress=not args.quiet)
    if args.threads is not None:
        config.extra["threads"] = args.threads
    if args.lr is not None:
        config.lr = args.lr
    else:
        config.extra["default_lr"] = True
    if args.weight_decay is not None:
        config.weight_decay = args.weight_decay
    else:
        config.extra["default_weight_decay"] = True
    setup_start = time.perf_counter()
    data = load(args.dataset, split=split, device=args.device)
    try:  # torch.optim's first optimiser imports torch._dynamo (seconds): a process start-up cost, not training
        import torch._dynamo  # noqa: F401
    except Exception:
        pass
    setup_seconds = time.perf_counter() - setup_start
    with PeakMemory(args.device) as mem:
        start = time.perf_counter()
        result = spec.runner(config, data, progress)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    epochs = result.get("epochs_per_layer") or []
    total_epochs = result.get("total_epochs") or sum(epochs) or 0
    report = {"dataset": args.dataset, "model": args.model, "algo": args.algo, "task": task, "layers": args.layers,
              "hidden": args.hidden, "split": split, "seed": args.seed, "device": args.device,
              "backend": _resolved_backend(args.device)}
    report.update(result)
    report.update({"setup_seconds": setup_seconds, "train_seconds": seconds, "seconds_per_epoch": seconds / total_epochs if total_epochs else None,
                   "peak_memory_bytes": int(mem.peak_bytes),
                   "threads": config.extra.get("threads", 1) if args.device == "cpu" else None})
    return report


def _metric_names(task):
    return ("val_auc", "test_auc") if task == "link" else ("val_accuracy", "test_accuracy")


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def print_table(reports, summary, task, stream=None):
    stream = stream or sys.stdout
    val_key, test_key = _metric_names(task)
    header = ["split", val_key, test_key, "epochs/layer", "train s", "s/epoch", "peak MiB"]
    rows = [[str(r["split"]), _fmt(r.get(val_key)), _fmt(r.get(test_key)),
             ",".join(str(e) for e in r.get("epochs_per_layer") or []) or "-", f"{r['train_seconds']:.2f}",
             f"{r['seconds_per_epoch'] * 1e3:.2f}ms" if r.get("seconds_per_epoch") else "-",
             f"{r['peak_memory_bytes'] / 2**20:.1f}"] for r in reports]
    if len(reports) > 1:
        rows.append(["mean", _fmt(summary.get(val_key)), _fmt(summary.get(test_key)), "",
                     f"{summary['train_seconds']:.2f}", "", ""])
        rows.append(["std", _fmt(summary.get(val_key + "_std")), _fmt(summary.get(test_key + "_std")), "", "", "", ""])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    first = reports[0]
    stream.write(f"{first['algo']} | {first['dataset']} | {first['model']} x{first['layers']} (hidden {first['hidden']}) "
                 f"| device {first['device']} | backend {first['backend']}\n")
    stream.write("  ".join(h.rjust(w) for h, w in zip(header, widths)) + "\n")
    for r in rows:
        stream.write("  ".join(c.rjust(w) for c, w in zip(r, widths)) + "\n")
    stream.flush()


def cmd_train(args) -> int:
    from .train.progress import Progress
    algos = _algorithms()
    task, splits = _validate(args, algos)
    many = len(splits) > 1
    reports = []
    for split in splits:
        progress = Progress(enabled=not args.quiet)
        if many and not args.quiet:
            sys.stderr.write(f"split {split}\n")
        try:
            reports.append(run_one(args, task, split, many, progress))
        except (ValueError, TypeError, OSError) as exc:
            progress.close()
            raise UsageError(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__) from None
    val_key, test_key = _metric_names(task)
    if many:
        summary = {k: v for k, v in reports[0].items() if k in ("dataset", "model", "algo", "task", "layers", "hidden",
                                                                 "seed", "device", "backend")}
        summary["splits"] = splits
        summary["split"] = splits
        for key in (val_key, test_key, "train_seconds", "seconds_per_epoch", "peak_memory_bytes"):
            values = [r[key] for r in reports if isinstance(r.get(key), (int, float))]
            if values:
                summary[key] = statistics.fmean(values)
                summary[key + "_std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        summary["peak_memory_bytes"] = int(max(r["peak_memory_bytes"] for r in reports))
        summary["epochs_per_layer"] = [r.get("epochs_per_layer") for r in reports]
        summary["runs"] = reports
        out = summary
    else:
        out = reports[0]
        summary = out
    if not args.quiet:
        print_table(reports, summary, task)
    if args.json:
        try:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=2, default=float)
        except OSError as exc:
            raise UsageError(f"--json: cannot write {args.json}: {exc.strerror}") from None
    return 0


def cmd_bench(rest) -> int:
    import importlib
    try:
        bench_cli = importlib.import_module("ffkernels.bench_cli")
    except ModuleNotFoundError as exc:
        if exc.name != "ffkernels.bench_cli":
            raise
        raise UsageError("the bench command is not available in this build yet (ffkernels.bench_cli is missing)") from None
    return int(bench_cli.main(rest) or 0)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":
            return cmd_bench(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        if args.command == "train":
            return cmd_train(args)
        return 2
    except UsageError as exc:
        sys.stderr.write(f"ffkernels: error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("ffkernels: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
