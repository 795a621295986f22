"""The ``ffkernels`` command line: ``train``, ``predict`` and ``bench``.

``ffkernels train --dataset cora_ml --algo sf --layers 4`` trains one algorithm of the
registry on a bundled dataset or a user's file (an ``.npz`` or an OGB directory), shows
progress, prints a summary table and optionally writes a JSON report, a checkpoint and the
trained model. The flags of an algorithm's options are generated from their declarations:
``ffkernels train --algo ff-vn --help`` lists ff-vn's own. ``ffkernels predict model.pt
--dataset ... --out predictions.csv`` applies a saved model. Bad arguments or files give a
one-line error on stderr and exit status 2 (never a traceback); a run that diverges or runs
out of memory exits with status 1; Ctrl-C saves the checkpoint (with ``--save``) and exits 130.
``FFKERNELS_DEBUG=1`` shows the traceback of an error instead of its one line.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys

BACKENDS = ("reference", "cpu", "triton", "cuda")
DEFAULT_ALGO = "sf"


class UsageError(Exception):
    """A bad argument or file: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        raise UsageError(message)


def _version() -> str:
    from . import __version__
    return __version__


# ---------------------------------------------------------------------------- parsing helpers
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


def _pre_parse_algo(argv) -> str:
    pre = _Parser(add_help=False)
    pre.add_argument("--algo", default=DEFAULT_ALGO)
    known, _ = pre.parse_known_args(argv)
    algos = _algorithms()
    if known.algo not in algos:
        raise UsageError(f"--algo must be one of {', '.join(sorted(algos))}, got {known.algo!r}")
    return known.algo


def _add_run_flags(p, for_train: bool = True) -> None:
    run = p.add_argument_group("data and device")
    run.add_argument("--dataset", default="cora_ml" if for_train else None, required=not for_train,
                     help="a bundled name (cora, citeseer, cora_ml, digits) or a path: an .npz file in the "
                          "bundled key format or an OGB node-property directory (docs/data.md)")
    run.add_argument("--split", type=int, default=0, help="split of a multi-split dataset (default 0)")
    run.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    run.add_argument("--backend", choices=BACKENDS, default=None, help="force the ops backend (FFKERNELS_BACKEND)")
    out = p.add_argument_group("output")
    out.add_argument("--json", default=None, metavar="PATH", help="write the report as JSON to PATH ('-': stdout)")
    out.add_argument("--quiet", action="store_true", help="no progress, no table")


def build_train_parser(algo: str) -> argparse.ArgumentParser:
    from .train.options import add_to_parser
    algos = _algorithms()
    spec = algos[algo]
    lines = "\n".join(f"  {name:<14} [{s.task}; {s.schedule}; models: {', '.join(s.models)}] {s.description}"
                      for name, s in sorted(algos.items()))
    p = _Parser(prog="ffkernels train", formatter_class=argparse.RawDescriptionHelpFormatter,
                description=f"Train a model with a forward-learning algorithm (or the BP baseline) and report "
                            f"accuracy, time and memory. Options below are --algo {algo}'s; "
                            f"'ffkernels train --algo NAME --help' lists another algorithm's.",
                epilog=f"algorithms:\n{lines}\n\ndocs/algorithms.md describes each algorithm, docs/api.md the options.")
    p.add_argument("--algo", default=DEFAULT_ALGO, choices=sorted(algos), metavar="ALGO",
                   help=f"training algorithm (listed below; default {DEFAULT_ALGO})")
    p.add_argument("--task", default=None, choices=("node", "link", "mlp"),
                   help=f"must match the algorithm's task ({spec.task} for {algo}); optional")
    _add_run_flags(p)
    p.add_argument("--splits", default=None, help="several splits, e.g. 0-4: mean and std in the table")
    ck = p.add_argument_group("checkpoints and the trained model")
    ck.add_argument("--save", default=None, metavar="PATH",
                    help="checkpoint file, written at every improvement (or --save-every), after every "
                         "layer and at the end; Ctrl-C saves it too")
    ck.add_argument("--save-every", type=int, default=None, metavar="N", help="checkpoint every N validations")
    ck.add_argument("--resume", default=None, metavar="PATH", help="continue a run from its checkpoint")
    ck.add_argument("--stop-after-epochs", type=int, default=None, metavar="N",
                    help="stop (and checkpoint with --save) after N epochs in total")
    ck.add_argument("--save-model", default=None, metavar="PATH", help="write the trained model (ffkernels predict)")
    ds = p.add_argument_group("distributed (docs/distributed.md)")
    ds.add_argument("--distributed", action="store_true",
                    help="run as one rank of a torch.distributed job (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR)")
    ds.add_argument("--nproc", type=int, default=None, metavar="P",
                    help="start P local ranks and run --distributed on them (partitions first unless --partitions)")
    ds.add_argument("--partitions", default=None, metavar="DIR", help="graph algorithms: the partition directory "
                    "(ffkernels partition)")
    ds.add_argument("--mode", default=None, choices=("partition", "data", "pipeline"),
                    help="partition (graph, default), data (MLP data-parallel, default for MLPs), pipeline (MLP ff: "
                         "one layer per rank)")
    ds.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                    help="a collective that takes longer fails the run, naming the rank (default 180)")
    lg = p.add_argument_group("logging")
    lg.add_argument("--log", default=None, metavar="PATH", help="append one JSON line per epoch")
    lg.add_argument("--tensorboard", default=None, metavar="DIR", help="TensorBoard scalars (needs tensorboard)")
    add_to_parser(p, spec.options)
    return p


def _unknown_flag_error(extra, algo) -> UsageError:
    algos = _algorithms()
    flag = next((e for e in extra if e.startswith("--")), extra[0])
    name = flag.split("=")[0][2:].replace("-", "_")
    owners = sorted(a for a, s in algos.items() if name in s.options.names())
    if owners:
        return UsageError(f"{flag.split('=')[0]} is not an option of --algo {algo}; algorithms that have it: "
                          f"{', '.join(owners)} (see ffkernels train --algo NAME --help)")
    return UsageError(f"unrecognized arguments: {' '.join(extra)}")


# ---------------------------------------------------------------------------- train
def _check_output_path(path, flag):
    if path is None or path == "-":
        return
    from .train.checkpoint import check_writable
    try:
        check_writable(path, flag)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_device(args):
    import torch
    if args.device != "cpu":
        if not re.fullmatch(r"cuda(:\d+)?", args.device):
            raise UsageError(f"--device must be cpu, cuda or cuda:N, got {args.device!r}")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {args.device}: CUDA is not available here")
    if args.backend is not None:
        from . import available_backends
        info = available_backends()[args.backend]
        if not info["available"]:
            raise UsageError(f"--backend {args.backend} is not usable here: {info['reason']}")
        os.environ["FFKERNELS_BACKEND"] = args.backend


def _split_path(path, split, many):
    if path is None or not many:
        return path
    root, ext = os.path.splitext(path)
    return f"{root}.split{split}{ext}"


def _option_values(args, spec) -> dict:
    return {name: getattr(args, name) for name in spec.options.names() if getattr(args, name, None) is not None}


def run_one(args, spec, options, split, many, quiet) -> dict:
    """Train one split; the report dict of that run (with peak memory)."""
    from .api import _resolve_data, fit
    from .train.metrics import PeakMemory
    import time
    start = time.perf_counter()
    distributed = None
    if args.distributed:
        from .distributed.context import DEFAULT_TIMEOUT
        distributed = {"mode": args.mode, "partitions": args.partitions,
                       "timeout": DEFAULT_TIMEOUT if args.timeout is None else args.timeout}
        data = args.dataset  # each rank loads only what it trains on
    else:
        data = _resolve_data(args.dataset, split, args.device)
    try:  # torch.optim's first optimiser imports torch._dynamo (seconds): a start-up cost, not training
        import torch._dynamo  # noqa: F401
    except Exception:
        pass
    load_seconds = time.perf_counter() - start
    with PeakMemory(args.device) as mem:
        trained = fit(data, spec.name, split=split, device=args.device, save=_split_path(args.save, split, many),
                      save_every=args.save_every, resume=_split_path(args.resume, split, many),
                      stop_after_epochs=args.stop_after_epochs, progress=not quiet, log=args.log,
                      tensorboard=args.tensorboard, distributed=distributed, **options)
    report = dict(trained.report)
    report.update(load_seconds=load_seconds, peak_memory_bytes=int(mem.peak_bytes), memory_method=mem.method,
                  threads=trained.options.get("threads"))
    if args.save_model and not trained.report["stopped"] and _is_rank0():
        trained.save(_split_path(args.save_model, split, many))
        report["model_path"] = _split_path(args.save_model, split, many)
    return report


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


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
    opts = first["options"]
    stream.write(f"{first['algo']} | {first['data_source']} | {opts['model']} x{opts['layers']} (hidden "
                 f"{opts['hidden']}) | device {first['device']} | backend {first['backend']} | threads "
                 f"{first.get('threads')}\n")
    stream.write("  ".join(h.rjust(w) for h, w in zip(header, widths)) + "\n")
    for r in rows:
        stream.write("  ".join(c.rjust(w) for c, w in zip(r, widths)) + "\n")
    if first.get("stopped"):
        stream.write(f"stopped after {first['total_epochs']} epochs (--stop-after-epochs); continue with --resume\n")
    for r in reports:
        _print_gradient_diagnostics(r, stream)
    stream.flush()


#: report keys of the forward-gradient diagnostics (``--diagnostics``) and how the study names them
_COSINES = (("grad_cosine", "the run's estimate"), ("grad_cosine_isotropic", "isotropic forward gradient"),
            ("grad_cosine_local", "local-loss gradient"))


def _print_gradient_diagnostics(report, stream) -> None:
    """The small study of ``--diagnostics``: cosines of the estimators to the true gradient."""
    if not report.get("diagnostics_samples"):
        return
    stream.write(f"split {report['split']}: cosine to the true gradient (autograd), "
                 f"{report['diagnostics_samples']} samples every {report['diagnostics_every']} steps "
                 f"(mean over the run / over its last tenth):\n")
    for key, label in _COSINES:
        if report.get(key) is not None:
            stream.write(f"  {label:28s} {report[key]:+.4f} / {report[key + '_last']:+.4f}\n")
    per_layer = report.get("grad_cosine_per_layer")
    if per_layer:
        stream.write("  per layer (the run's estimate)  " + "  ".join(f"{c:+.3f}" for c in per_layer) + "\n")


def _write_json(payload, path):
    text = json.dumps(payload, indent=2, default=float)
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
        return
    try:
        with open(path, "w") as fh:
            fh.write(text + "\n")
    except OSError as exc:
        raise UsageError(f"--json: cannot write {path}: {exc.strerror}") from None


def cmd_train(argv) -> int:
    algo = _pre_parse_algo(argv)
    parser = build_train_parser(algo)
    args, extra = parser.parse_known_args(argv)
    if extra:
        raise _unknown_flag_error(extra, algo)
    spec = _algorithms()[algo]
    if args.task is not None and args.task != spec.task:
        raise UsageError(f"--algo {algo} is a {spec.task} algorithm, not --task {args.task}")
    _check_device(args)
    splits = parse_splits(args.splits) if args.splits is not None else [args.split]
    try:
        from .datasets import num_splits
        available = num_splits(args.dataset)
    except ValueError as exc:
        raise UsageError(f"--dataset: {exc}") from None
    for s in splits:
        if not 0 <= s < available:
            raise UsageError(f"split {s} out of range for {args.dataset} (0..{available - 1})")
    for path, flag in ((args.json, "--json"), (args.save_model, "--save-model")):
        _check_output_path(path, flag)
    from .api import resolve_run_options
    options = _option_values(args, spec)
    try:
        resolve_run_options(algo, options)  # every option checked before any data is loaded
    except (ValueError, TypeError) as exc:
        name, _, rest = str(exc).partition(" ")  # "val_every must be ..." -> "--val-every must be ..."
        raise UsageError(f"--{name.replace('_', '-')} {rest}") from None
    many = len(splits) > 1
    if args.nproc is not None:
        if args.distributed:
            raise UsageError("--nproc starts the ranks itself: drop --distributed (or use torchrun without --nproc)")
        from .distributed.launch import launch_local
        return launch_local(argv, args, spec, splits)
    if args.distributed and many:
        raise UsageError("--distributed trains one split per run: use --split K")
    if not args.distributed and (args.partitions or args.mode or args.timeout is not None):
        raise UsageError("--partitions, --mode and --timeout apply to --distributed (or --nproc) runs")
    quiet = args.quiet or args.json == "-"
    reports = []
    for split in splits:
        if many and not quiet:
            sys.stderr.write(f"split {split}\n")
        reports.append(run_one(args, spec, options, split, many, args.quiet))
    val_key, test_key = _metric_names(spec.task)
    if many:
        summary = {k: v for k, v in reports[0].items()
                   if k in ("algo", "task", "model", "dataset", "data_source", "device", "backend", "options",
                            "versions", "threads")}
        summary["splits"] = summary["split"] = splits
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
        out = summary = reports[0]
    if not _is_rank0():  # the other ranks of a distributed run report through rank 0
        return 0
    if not args.quiet:
        print_table(reports, summary, spec.task, stream=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        _write_json(out, args.json)
    return 0


# ---------------------------------------------------------------------------- predict
def build_predict_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ffkernels predict", description="Apply a model saved with 'ffkernels train --save-model' "
                                                       "(or Trained.save) to a dataset and write its predictions.")
    p.add_argument("model", help="the saved model file")
    _add_run_flags(p, for_train=False)
    p.add_argument("--out", default="-", metavar="PATH",
                   help="CSV of predictions: node,prediction (link models: source,target,score); '-': stdout")
    p.add_argument("--pairs", default=None, metavar="PATH",
                   help="link models: CSV of node pairs to score (two integer columns, optional header)")
    return p


def _read_pairs(path):
    import torch
    if not os.path.isfile(path):
        raise UsageError(f"--pairs: no such file: {path}")
    rows = []
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or (i == 0 and not row[0].strip().lstrip("-").isdigit()):
                continue  # empty line or a header
            if len(row) < 2:
                raise UsageError(f"--pairs: {path} line {i + 1}: expected two node ids, got {row!r}")
            try:
                rows.append((int(row[0]), int(row[1])))
            except ValueError:
                raise UsageError(f"--pairs: {path} line {i + 1}: node ids must be integers, got {row!r}") from None
    if not rows:
        raise UsageError(f"--pairs: {path} holds no pairs")
    return torch.tensor(rows, dtype=torch.int64).t().contiguous()


def cmd_predict(argv) -> int:
    args = build_predict_parser().parse_args(argv)
    _check_device(args)
    _check_output_path(None if args.out == "-" else args.out, "--out")
    _check_output_path(args.json, "--json")
    from .api import load_model
    trained = load_model(args.model, device=args.device)
    task = trained.task
    if task == "link":
        if args.pairs is None:
            raise UsageError(f"{args.model} is a link-prediction model ({trained.algo}): give the node pairs to "
                             f"score with --pairs FILE.csv")
        pairs = _read_pairs(args.pairs)
        scores = trained.predict(args.dataset, split=args.split, pairs=pairs)
        header, rows = ("source", "target", "score"), zip(pairs[0].tolist(), pairs[1].tolist(), scores.tolist())
        summary = {"pairs": int(pairs.shape[1])}
    else:
        if args.pairs is not None:
            raise UsageError(f"--pairs is for link-prediction models; {args.model} is a {task} model")
        pred = trained.predict(args.dataset, split=args.split)
        header, rows = ("node", "prediction"), enumerate(pred.tolist())
        summary = {"nodes": int(pred.numel())}
    stream = sys.stdout if args.out == "-" else open(args.out, "w", newline="")
    try:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    finally:
        if stream is not sys.stdout:
            stream.close()
    metrics = {}
    try:
        metrics = trained.evaluate(args.dataset, split=args.split)
    except ValueError:
        pass  # data without labels or splits: predictions only
    summary.update(model=args.model, algo=trained.algo, dataset=str(args.dataset), out=args.out, **metrics)
    if args.json:
        _write_json(summary, args.json)
    if not args.quiet and args.out != "-":
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        sys.stderr.write(f"wrote {summary.get('nodes', summary.get('pairs'))} predictions to {args.out}"
                         + (f" ({shown} on this data's split)" if shown else "") + "\n")
    return 0


# ---------------------------------------------------------------------------- bench / main
def cmd_bench(rest) -> int:
    from . import bench_cli
    return int(bench_cli.main(rest) or 0)


COMMANDS = {"train": "train a model (ffkernels train --help)",
            "predict": "apply a saved model to a dataset (ffkernels predict --help)",
            "partition": "partition a graph for distributed training (ffkernels partition --help)",
            "bench": "benchmark suites (ffkernels bench --help)"}


def _usage() -> str:
    lines = "\n".join(f"  {name:<9} {text}" for name, text in COMMANDS.items())
    return (f"usage: ffkernels [--version] {{{','.join(COMMANDS)}}} ...\n\nFused kernels and trainers for forward "
            f"(backprop-free) learning.\n\ncommands:\n{lines}\n")


def main(argv=None) -> int:
    from .distributed.context import RankFailure
    from .train.loop import NonFiniteLossError, TrainingInterrupted
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            sys.stdout.write(_usage())
            return 0 if argv else 2
        if argv[0] == "--version":
            import torch
            sys.stdout.write(f"ffkernels {_version()} (torch {torch.__version__})\n")
            return 0
        command, rest = argv[0], argv[1:]
        if command == "bench":
            return cmd_bench(rest)
        if command == "train":
            return cmd_train(rest)
        if command == "predict":
            return cmd_predict(rest)
        if command == "partition":
            from .distributed.launch_cli import cmd_partition
            return cmd_partition(rest)
        raise UsageError(f"unknown command {command!r} (choose from {', '.join(COMMANDS)})")
    except UsageError as exc:
        sys.stderr.write(f"ffkernels: error: {exc}\n")
        return 2
    except TrainingInterrupted as exc:
        sys.stderr.write(f"\nffkernels: {exc.message}\n")
        return 130
    except RankFailure as exc:
        sys.stderr.write(f"\nffkernels: training failed: {exc}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)  # a process group with a dead or stuck peer can hang the interpreter's exit
    except (NonFiniteLossError, MemoryError) as exc:
        sys.stderr.write(f"\nffkernels: training failed: {exc}\n")
        return 1
    except (ValueError, TypeError, OSError) as exc:  # bad data, options or files found while loading
        if os.environ.get("FFKERNELS_DEBUG") == "1":
            raise
        text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        sys.stderr.write(f"ffkernels: error: {text}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("\nffkernels: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
