"""The end-to-end benchmark suite (``ffkernels bench --suite e2e``).

For each configuration it trains the same algorithm, architecture, data and seed three ways:

- ``fused``: ffkernels' own training (``ffkernels.fit``);
- ``eager``: :mod:`.eager_baselines`, plain torch written like the published code (autograd per
  layer; ``torch.func.jvp`` for the forward-gradient algorithms), no ffkernels op;
- ``bp``: backpropagation (PyG ``GCNConv`` when torch_geometric imports, else our own layer).

Every (configuration, variant) runs in a fresh Python process (``python -m
ffkernels.benchmarking.suite --worker SPEC``): peak memory then belongs to that training call
alone, and no variant inherits another's allocator cache or warmed-up threads. The worker loads
the data, resets the peak-memory counter, times the runner call and prints one JSON record.

Records (one per configuration and variant): ``name``, ``variant``, ``algo``, ``dataset``,
``seconds_per_epoch`` (whole training call / epochs; an epoch of a greedy schedule trains one
layer), ``train_seconds``, ``epochs``, ``peak_memory_bytes`` (growth of the peak over the memory
in use before the call: RSS on CPU, the allocator on CUDA), ``peak_total_bytes``, ``accuracy``
(test), ``val_accuracy``; fused rows add ``speedup_vs_eager``, ``speedup_vs_bp``,
``memory_ratio_vs_bp``, ``memory_ratio_vs_eager`` and ``accuracy_delta_vs_eager``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

#: suite algorithm key -> the name the fused runner is registered under
FUSED_ALGOS = {"sf": "sf", "ff_la": "ff-la", "ff_mlp": "ff", "fg": "fg", "fg_local": "fg-local",
               "fg_guess": "fg-guess", "dfa": "dfa", "dfa_graph": "dfa-graph"}
ALGO_LABELS = {"sf": "SF", "ff_la": "FF-LA", "ff_mlp": "FF (MLP)", "fg": "FG", "fg_local": "FG-local",
               "fg_guess": "FG-guess", "dfa": "DFA", "dfa_graph": "DFA (graph)"}
#: Algorithms whose ``layers`` counts the output layer (docs/algorithms.md#dfa, #fg): their BP
#: variant gets ``layers - 1`` hidden layers plus its linear classifier, the same weight layers.
OUTPUT_LAYER_COUNTED = ("fg", "fg_local", "fg_guess", "dfa", "dfa_graph")
VARIANTS = ("fused", "eager", "bp")
NO_EARLY_STOP = 10**9
RESULT_MARK = "@@FFKERNELS-BENCH@@ "


@dataclass
class Case:
    """One benchmark configuration (trained once per variant)."""
    name: str
    algo: str                      # a FUSED_ALGOS key: sf ff_la ff_mlp fg fg_local fg_guess dfa dfa_graph
    dataset: str                   # cora_ml | digits | synthetic:NUM_NODES[:AVG_DEGREE]
    layers: int
    epochs: int
    group: str = "main"            # main | scale | depth | profile
    model: str = "gcn"
    hidden: int = 128
    val_every: int = 2
    patience: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4
    batch_size: int | None = None
    seed: int = 0
    variants: tuple = VARIANTS
    fused_extra: dict = field(default_factory=dict)
    #: options of the algorithm itself that the fused and the eager variant both take (e.g.
    #: ``tangents``, ``feedback``); ``fused_extra`` is for the fused runner only
    algo_extra: dict = field(default_factory=dict)

    def bp_layers(self) -> int:
        """The BP variant's hidden layers (plus its linear classifier): ``layers``, or
        ``layers - 1`` where ``layers`` counts the output layer (:data:`OUTPUT_LAYER_COUNTED`)."""
        return max(1, self.layers - 1) if self.algo in OUTPUT_LAYER_COUNTED else self.layers

    def bp_key(self) -> str:
        """BP does not depend on the forward-learning algorithm: configurations that share this
        key share one BP run."""
        return f"{self.dataset}|{self.model}|{self.bp_layers()}|{self.hidden}|{self.epochs}|{self.patience}|" \
               f"{self.lr}|{self.weight_decay}|{self.batch_size}|{self.seed}"


def _syn(n: int, deg: int = 10) -> str:
    return f"synthetic:{n}:{deg}"


def suite_cases(quick: bool = False) -> list:
    """The configurations of the e2e suite (``quick``: the under-5-minutes subset)."""
    mlp = dict(model="mlp", lr=3e-3, weight_decay=0.0, batch_size=64, patience=25,
               fused_extra={"inference": "goodness", "head": False})
    la = dict(fused_extra={"negatives": "graph"})  # the reference's negatives, as the eager baseline
    # fg / fg-local / fg-guess / dfa / dfa-graph at their registered defaults (docs/algorithms.md#fg,
    # #dfa): ``layers`` counts the output layer; hidden 128; mini-batches of 64 for the MLPs
    fg = dict(model="mlp", hidden=128, lr=2e-3, weight_decay=0.0, batch_size=64, patience=50)
    fg_guess = dict(model="mlp", hidden=128, lr=1e-3, weight_decay=0.0, batch_size=64, patience=25)
    dfa = dict(model="mlp", hidden=128, lr=1e-3, weight_decay=0.0, batch_size=64, patience=25)
    dfa_graph = dict(model="gcn", hidden=128, lr=1e-2, weight_decay=5e-4)
    if quick:
        cases = [
            Case("sf-gcn/cora_ml/L2", "sf", "cora_ml", 2, 20),
            Case("ff_la-gcn/cora_ml/L1", "ff_la", "cora_ml", 1, 4, **la),
            Case("ff-mlp/digits/L2", "ff_mlp", "digits", 2, 4, hidden=256, **mlp),
            Case("fg-mlp/digits/L2", "fg", "digits", 2, 10, **fg),
            Case("fg-guess-mlp/digits/L4", "fg_guess", "digits", 4, 4, **fg_guess),
            Case("dfa-mlp/digits/L4", "dfa", "digits", 4, 4, **dfa),
            Case("dfa-graph-gcn/cora_ml/L4", "dfa_graph", "cora_ml", 4, 20, **dfa_graph),
            Case("sf-gcn/syn-1e4/L2", "sf", _syn(10_000), 2, 10, group="scale", patience=NO_EARLY_STOP),
            Case("sf-gcn/syn-1e5/L2", "sf", _syn(100_000), 2, 2, group="scale", patience=NO_EARLY_STOP),
        ]
        cases += [Case(f"depth/sf-gcn/syn-2e4/L{d}", "sf", _syn(20_000), d, 2, group="depth", patience=NO_EARLY_STOP,
                       variants=("fused", "bp")) for d in (1, 4, 16)]
        cases.append(Case("profile sf-gcn/syn-1e5/L2", "sf", _syn(100_000), 2, 4, group="profile",
                          patience=NO_EARLY_STOP, variants=("fused",)))
        return cases
    cases = [
        # Epochs capped (seconds per epoch is the metric); validation every 2 epochs, patience 100
        # as the reference, so fused and eager early-stop on the same rule.
        Case("sf-gcn/cora_ml/L4", "sf", "cora_ml", 4, 50),
        Case("ff_la-gcn/cora_ml/L2", "ff_la", "cora_ml", 2, 10, patience=NO_EARLY_STOP, **la),
        Case("ff-mlp/digits/L2", "ff_mlp", "digits", 2, 20, hidden=500, **mlp),
        # The new algorithms, each against its eager implementation (eager_baselines): epochs
        # capped where the fused run is well into learning (fg's single-tangent estimate needs
        # the most steps), validation every 2 epochs with the algorithm's own patience.
        Case("fg-mlp/digits/L2", "fg", "digits", 2, 100, **fg),
        Case("fg-local-mlp/digits/L2", "fg_local", "digits", 2, 100, **fg),
        Case("fg-guess-mlp/digits/L4", "fg_guess", "digits", 4, 30, **fg_guess),
        Case("dfa-mlp/digits/L4", "dfa", "digits", 4, 50, **dfa),
        Case("dfa-graph-gcn/cora_ml/L4", "dfa_graph", "cora_ml", 4, 200, **dfa_graph),
    ]
    for n, epochs in ((10_000, 20), (100_000, 6), (1_000_000, 4)):
        cases.append(Case(f"sf-gcn/syn-{_tag(n)}/L2", "sf", _syn(n), 2, epochs, group="scale",
                          patience=NO_EARLY_STOP))
    for n, epochs in ((10_000, 4), (100_000, 2)):
        cases.append(Case(f"ff_la-gcn/syn-{_tag(n)}/L1", "ff_la", _syn(n), 1, epochs, group="scale",
                          patience=NO_EARLY_STOP, **la))
    cases += [Case(f"depth/sf-gcn/syn-1e5/L{d}", "sf", _syn(100_000), d, 2, group="depth", patience=NO_EARLY_STOP,
                   variants=("fused", "bp") if d not in (1, 8) else VARIANTS) for d in (1, 2, 4, 8, 16)]
    cases.append(Case("profile sf-gcn/syn-1e6/L2", "sf", _syn(1_000_000), 2, 4, group="profile",
                      patience=NO_EARLY_STOP, variants=("fused",)))
    return cases


def _tag(n: int) -> str:
    return f"1e{len(str(n)) - 1}" if str(n).strip("0") == "1" else str(n)


# ----------------------------------------------------------------------------- data
def _cache_dir() -> Path:
    root = os.environ.get("FFKERNELS_BENCH_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ffkernels", "bench")
    return Path(root)


def load_dataset(spec: str, device: str = "cpu"):
    """``cora_ml``/``cora``/``citeseer``/``digits`` or ``synthetic:N[:DEG]`` (F = 128, 8 classes,
    seed 0; cached on disk after the first generation, since 10^6 nodes take ~30 s to draw)."""
    import torch

    from ..datasets import Dataset, load, synthetic
    from ..graph import Graph
    if not spec.startswith("synthetic:"):
        return load(spec, device=device)
    parts = spec.split(":")
    n, deg = int(parts[1]), float(parts[2]) if len(parts) > 2 else 10.0
    path = _cache_dir() / f"synthetic-n{n}-d{deg:g}-f128-c8-s0.pt"
    if path.exists():
        try:
            t = torch.load(path, weights_only=True)
            graph = Graph(t["rowptr"], t["col"], t["edge_perm"], n, t["in_degree"])
            ds = Dataset(f"synthetic-{n}", t["x"], t["y"], t["train_idx"], t["val_idx"], t["test_idx"], 8, graph,
                         t["edge_index"], 0, {"seed": 0, "avg_degree": deg})
            return ds.to(device)
        except Exception:  # a stale or partial cache file: regenerate
            pass
    ds = synthetic(n, avg_degree=deg, num_classes=8, num_features=128, seed=0)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        g = ds.graph
        torch.save({"x": ds.x, "y": ds.y, "train_idx": ds.train_idx, "val_idx": ds.val_idx, "test_idx": ds.test_idx,
                    "edge_index": ds.edge_index, "rowptr": g.rowptr, "col": g.col, "edge_perm": g.edge_perm,
                    "in_degree": g.in_degree}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation only
    return ds.to(device)


# ----------------------------------------------------------------------------- worker
def tiny_subset(data, num_nodes: int = 400):
    """The subgraph induced by the first ``num_nodes`` nodes (for a warm-up run)."""
    import torch

    from ..datasets import Dataset
    from ..graph import Graph
    n = min(num_nodes, data.num_nodes)
    keep = lambda idx: idx[idx < n]  # noqa: E731
    ei = None
    graph = None
    if data.edge_index is not None:
        ei = data.edge_index[:, (data.edge_index[0] < n) & (data.edge_index[1] < n)]
        graph = Graph.from_edge_index(ei.to(data.x.device), n)
    y = data.y[:n]
    tr, va, te = keep(data.train_idx), keep(data.val_idx), keep(data.test_idx)
    # every class needs a training node (SF's virtual nodes, FF negatives): take them from the subset
    missing = [c for c in range(data.num_classes) if not bool((y[tr] == c).any())]
    if missing:
        extra = torch.cat([torch.nonzero(y == c).view(-1)[:1] for c in missing])
        tr = torch.unique(torch.cat([tr, extra]))
        va, te = va[~torch.isin(va, tr)], te[~torch.isin(te, tr)]
    if va.numel() == 0 and data.val_idx.numel():
        va = te[:1]
    return Dataset(data.name, data.x[:n].contiguous(), y, tr, va, te, data.num_classes, graph, ei, data.split)


@dataclass
class BenchConfig:
    """What a variant's runner is configured by (the eager baselines read these fields)."""
    model: str
    layers: int
    hidden: int
    epochs: int
    val_every: int
    patience: int
    lr: float
    weight_decay: float
    seed: int
    device: str
    batch_size: int | None = None
    theta: float | None = None
    extra: dict = field(default_factory=dict)


def make_config(case: Case, variant: str, device: str) -> BenchConfig:
    """The runner's configuration: the fused runner gets ``algo_extra`` and ``fused_extra``, the
    eager one ``algo_extra``, BP neither (and :meth:`Case.bp_layers` hidden layers)."""
    extra = {"fused": {**case.algo_extra, **case.fused_extra}, "eager": dict(case.algo_extra)}.get(variant, {})
    return BenchConfig(model=case.model, layers=case.bp_layers() if variant == "bp" else case.layers,
                       hidden=case.hidden, epochs=case.epochs, val_every=case.val_every, patience=case.patience,
                       lr=case.lr, weight_decay=case.weight_decay, seed=case.seed, device=device,
                       batch_size=case.batch_size, extra=extra)


def fused_runner(algo: str):
    """ffkernels' own training of ``algo`` (``ffkernels.fit``) behind the suite's runner contract."""
    def run(config: BenchConfig, data, progress=None) -> dict:
        from ..api import fit
        from ..train.registry import get_algorithm
        options = dict(model=config.model, layers=config.layers, hidden=config.hidden, epochs=config.epochs,
                       val_every=config.val_every, patience=config.patience, lr=config.lr,
                       weight_decay=config.weight_decay, seed=config.seed, threads=0)  # 0: the suite's threads
        if "batch_size" in get_algorithm(algo).options.names() and config.batch_size is not None:
            options["batch_size"] = config.batch_size
        options.update(config.extra)
        trained = fit(data, algo, device=config.device, progress=False, **options)
        out = dict(trained.metrics)
        out.update(epochs_per_layer=trained.report["epochs_per_layer"], total_epochs=trained.report["total_epochs"])
        return out
    return run


def get_runner(case: Case, variant: str):
    """The training function of ``variant`` for ``case``: ``runner(config, data, progress) -> dict``."""
    from . import eager_baselines as eb
    if variant == "fused":
        return fused_runner(FUSED_ALGOS[case.algo])
    if variant == "eager":
        return eb.EAGER_RUNNERS[case.algo]
    if variant == "bp":
        return eb.BP_RUNNERS["mlp" if case.model == "mlp" else "gcn"]
    raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")


def total_epochs(case: Case, variant: str, result: dict) -> int:
    """Epochs of the run: summed over layers for greedy schedules, else the shared count."""
    per_layer = [int(e) for e in (result.get("epochs_per_layer") or [])]
    if variant == "fused" and result.get("total_epochs"):
        return int(result["total_epochs"])
    greedy = variant in ("fused", "eager") and case.algo in ("sf", "ff_la")
    if not per_layer:
        return int(result.get("epochs") or 0)
    return sum(per_layer) if greedy else max(per_layer)


def _backend_name(device: str) -> str:
    try:
        import torch

        from .. import backends as registry
        names = {op: registry.resolve(op, None, torch.device(device), torch.float32).NAME
                 for op in ("aggregate", "linear_goodness_step")}
        return names["aggregate"] if len(set(names.values())) == 1 else \
            ", ".join(f"{op}={name}" for op, name in names.items())
    except Exception:
        return "unknown"


def run_worker(spec: dict) -> dict:
    """Train one (case, variant) in this process and return its record."""
    import gc

    import torch

    from ..train.metrics import PeakMemory
    case = Case(**{k: v for k, v in spec["case"].items() if k in {f.name for f in dataclasses.fields(Case)}})
    case.variants = tuple(case.variants)
    variant, device = spec["variant"], spec.get("device", "cpu")
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    data = load_dataset(case.dataset, device)
    runner = get_runner(case, variant)
    config = make_config(case, variant, device)
    if spec.get("warmup", True) and not spec.get("profile"):
        # One tiny run first, so lazy one-time costs (library initialisation, first-call buffers,
        # imports inside the runner) count neither in the time nor in the memory of the real run.
        small = tiny_subset(data)
        runner(dataclasses.replace(make_config(case, variant, device), epochs=2, layers=1), small, None)
        del small
    gc.collect()
    record = {"name": case.name, "variant": variant, "algo": case.algo, "group": case.group,
              "dataset": case.dataset, "model": case.model, "layers": case.layers, "hidden": case.hidden,
              "num_nodes": int(data.num_nodes), "num_edges": int(data.graph.num_edges) if data.graph is not None else 0,
              "device": device, "backend": _backend_name(device) if variant == "fused" else "torch (autograd)",
              "threads": torch.get_num_threads()}
    if spec.get("profile"):
        record.update(profile_sf_step(case, data, device))
        return record
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    cpu0 = time.process_time()
    with PeakMemory(device) as m:
        result = runner(config, data, None)
    cpu_seconds = time.process_time() - cpu0
    epochs = total_epochs(case, variant, result)
    record.update({
        "epochs": epochs, "epochs_per_layer": list(result.get("epochs_per_layer") or []),
        "train_seconds": m.seconds, "seconds_per_epoch": m.seconds / epochs if epochs else None,
        "cpu_seconds": cpu_seconds, "cpu_seconds_per_epoch": cpu_seconds / epochs if epochs else None,
        "load_average": [load_before, os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        "peak_memory_bytes": int(m.peak_bytes), "peak_total_bytes": int(m.peak_total_bytes),
        "base_memory_bytes": int(m.base_bytes), "memory_method": m.method,
        "accuracy": float(result.get("test_accuracy", float("nan"))),
        "val_accuracy": float(result.get("val_accuracy", float("nan"))),
    })
    if "bp_layers" in result:
        record["bp_layers"] = result["bp_layers"]
    return record


# ----------------------------------------------------------------------------- profile
def profile_sf_step(case: Case, data, device: str, steps: int = 5) -> dict:
    """Where the fused greedy SF step's time goes, phase by phase, on ``data``.

    Re-composes the fused runner's layer loop from its own pieces (``ffkernels.algorithms.forwardgnn``) with
    a timer around each phase: ``prepare`` (row normalisation + GCN aggregation + gathering the
    step/validation rows; once per layer, since the input is frozen), then per step ``gemm``
    (``Z = M W^T + b``, ReLU), ``loss`` (fused SF loss + gradient), ``grad_gemm``
    (``dW = dZ^T M``) and ``update`` (Adam); ``validate`` per validation; ``output`` (the
    frozen layer's full output, once per layer). Also times one standalone aggregation of the
    whole graph so the sparse op's share is visible on its own.
    """
    import torch

    from .. import ops
    from ..algorithms import forwardgnn as sfmod
    from ..nn.functional import normalize_rows
    from ..testing import build_trainer
    sync = (lambda: torch.cuda.synchronize()) if device.startswith("cuda") else (lambda: None)
    config = make_config(case, "fused", device)
    # The first optimizer.step() of a process pays one-time lazy imports (seconds); keep them out.
    _p = torch.nn.Parameter(torch.zeros(2, device=device))
    _p.grad = torch.ones_like(_p)
    torch.optim.Adam([_p]).step()
    torch.manual_seed(config.seed)
    t = {"prepare": 0.0, "gemm": 0.0, "loss": 0.0, "grad_gemm": 0.0, "update": 0.0, "validate": 0.0, "output": 0.0}

    def timed(key, fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        t[key] += time.perf_counter() - t0
        return out

    t_problem = time.perf_counter()
    trainer = build_trainer("sf", data, model=config.model, layers=config.layers, hidden=config.hidden,
                            lr=config.lr, weight_decay=config.weight_decay, seed=config.seed)
    problem = trainer.problem
    t_problem = time.perf_counter() - t_problem
    layers = trainer.model.layers
    h = problem.vg.x
    xn = normalize_rows(h, "l2")
    t["_agg"] = 0.0
    agg_once = timed("_agg", lambda: ops.aggregate(problem.vg.graph, xn, reduce="gcn"))
    del agg_once, xn
    agg_seconds = t.pop("_agg")
    n_steps = 0
    for layer in layers:
        stepper = timed("prepare", lambda: sfmod._LinearStepper(layer, h, problem, 1.0))
        op = stepper.step_input
        for _ in range(steps):
            z = timed("gemm", lambda: op.matmul_wt(layer.weight, layer.bias).relu_())
            loss, grad_rows, _ = timed("loss", lambda: ops.sf_loss_grad(z, problem.local_train, problem.y_train,
                                                                        problem.local_virtual, 1.0))
            grads = timed("grad_gemm", lambda: (lambda gz: {"weight": op.grad_weight(gz), "bias": gz.sum(0)})(
                grad_rows.mul_(z > 0)))
            timed("update", lambda: layer.apply_gradients(grads))
            n_steps += 1
        timed("validate", lambda: stepper.val_probs())
        h = timed("output", lambda: stepper.output())
        del stepper
    # What `prepare` would cost as one normalise + aggregate + two row gathers (the dense path
    # without the density probe's extra aggregation), on the last layer's input.
    def single_pass():
        full = layer.prepare(h, problem.vg.graph)
        return full.index_select(0, problem.step_rows), full.index_select(0, problem.val_rows)
    t["_single"] = 0.0
    timed("_single", single_pass)
    single_seconds = t.pop("_single")
    per_step = {k: t[k] / n_steps for k in ("gemm", "loss", "grad_gemm", "update")}
    return {"profile": {
        "steps": n_steps, "layers": len(layers), "seconds": t, "per_step_seconds": per_step,
        "step_seconds": sum(per_step.values()), "one_full_aggregate_seconds": agg_seconds,
        "single_pass_prepare_seconds": single_seconds,
        "build_virtual_graph_seconds": t_problem,
        "step_rows": int(problem.step_rows.numel()), "num_nodes_augmented": int(problem.vg.num_nodes),
        "num_edges_augmented": int(problem.vg.graph.num_edges)}}


# ----------------------------------------------------------------------------- orchestration
def _git_rev() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "log", "-1", "--oneline"], capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def run_case_variant(case: Case, variant: str, device: str, timeout: float, profile: bool = False,
                     threads: int | None = None, mmap_threshold: int | None = None) -> dict:
    spec = {"case": dataclasses.asdict(case), "variant": variant, "device": device, "profile": profile,
            "threads": threads}
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    if mmap_threshold:
        # A fixed glibc mmap threshold: every large tensor gets its own mapping and is returned to
        # the kernel when freed, so peak RSS follows live tensors instead of heap fragmentation.
        env["MALLOC_MMAP_THRESHOLD_"] = str(int(mmap_threshold))
    pkg_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    base = {"name": case.name, "variant": variant, "algo": case.algo, "group": case.group, "dataset": case.dataset,
            "layers": case.layers, "device": device}
    try:
        proc = subprocess.run([sys.executable, "-m", "ffkernels.benchmarking.suite", "--worker", json.dumps(spec)],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**base, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {**base, "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def add_ratios(records: list) -> list:
    """Add the fused/eager and fused/BP ratios to each fused record (same configuration name)."""
    by = {(r["name"], r["variant"]): r for r in records}
    for r in records:
        if r["variant"] != "fused" or r.get("error") or r.get("seconds_per_epoch") is None:
            continue
        eager, bp = by.get((r["name"], "eager")), by.get((r["name"], "bp"))
        for other, tag in ((eager, "eager"), (bp, "bp")):
            if other is None or other.get("error") or not other.get("seconds_per_epoch"):
                continue
            r[f"speedup_vs_{tag}"] = other["seconds_per_epoch"] / r["seconds_per_epoch"]
            r[f"run_speedup_vs_{tag}"] = other["train_seconds"] / r["train_seconds"]
            if other.get("peak_memory_bytes"):
                r[f"memory_ratio_vs_{tag}"] = r["peak_memory_bytes"] / other["peak_memory_bytes"]
            if other.get("peak_total_bytes"):
                r[f"total_memory_ratio_vs_{tag}"] = r["peak_total_bytes"] / other["peak_total_bytes"]
            r[f"accuracy_delta_vs_{tag}"] = r["accuracy"] - other["accuracy"]
    return records


def run_suite(quick: bool = False, device: str = "cpu", only: str | None = None, timeout: float = 3600.0,
              log=None, cases: list | None = None, threads: int | None = None,
              mmap_threshold: int | None = 1 << 16, max_epochs: int | None = None, on_record=None) -> dict:
    """Run every (case, variant) in its own process; return ``{"meta": ..., "records": [...]}``."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cases = cases if cases is not None else suite_cases(quick)
    if only:
        cases = [c for c in cases if any(tok in c.name for tok in only.split(","))]
    if max_epochs:
        cases = [dataclasses.replace(c, epochs=min(c.epochs, int(max_epochs))) for c in cases]
    import platform

    import torch
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": quick, "device": device,
            "git": _git_rev(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "threads": threads or torch.get_num_threads(),
            "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "malloc_mmap_threshold": mmap_threshold}
    if device.startswith("cuda") and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(0)
    records, bp_done = [], {}
    start = time.perf_counter()
    for case in cases:
        for variant in case.variants:
            if variant == "bp" and case.bp_key() in bp_done:
                shared = dict(bp_done[case.bp_key()])
                shared.update(name=case.name, algo=case.algo, group=case.group, shared_with=shared["name"])
                records.append(shared)
                continue
            t0 = time.perf_counter()
            rec = run_case_variant(case, variant, device, timeout, profile=case.group == "profile", threads=threads,
                                   mmap_threshold=mmap_threshold)
            records.append(rec)
            if on_record is not None:
                on_record(add_ratios([dict(r) for r in records]))
            if variant == "bp" and not rec.get("error"):
                bp_done[case.bp_key()] = rec
            msg = rec.get("error") or (f"{rec['seconds_per_epoch'] * 1e3:.1f} ms/epoch, "
                                       f"peak +{rec['peak_memory_bytes'] / 2**20:.0f} MiB, acc {rec['accuracy']:.3f}"
                                       if "seconds_per_epoch" in rec else "profiled")
            log(f"[{time.perf_counter() - start:6.0f}s] {case.name} {variant}: {msg} "
                f"({time.perf_counter() - t0:.0f} s)")
    meta["suite_seconds"] = time.perf_counter() - start
    return {"meta": meta, "records": add_ratios(records)}


# ----------------------------------------------------------------------------- reporting
def _fmt(v, spec="{:.2f}", none="-"):
    return none if v is None else spec.format(v)


def markdown_table(results: dict) -> str:
    """The results as markdown: one row per (configuration, variant), then the profile."""
    rows = ["| configuration | variant | s/epoch | whole run (s) | epochs | peak mem (MiB) | test acc | "
            "fused vs eager (x faster/epoch) | fused vs BP (x faster/epoch) | mem fused/BP |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    profiles = []
    for r in results["records"]:
        if "profile" in r:
            profiles.append(r)
            continue
        if r.get("error"):
            rows.append(f"| {r['name']} | {r['variant']} | error: {r['error'][:80]} | | | | | | | |")
            continue
        fused = r["variant"] == "fused"
        rows.append("| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["name"], r["variant"], " (shared)" if r.get("shared_with") else "",
            _fmt(r["seconds_per_epoch"], "{:.4f}"), _fmt(r["train_seconds"], "{:.1f}"), r["epochs"],
            _fmt(r["peak_memory_bytes"] / 2**20, "{:.0f}"), _fmt(r["accuracy"], "{:.3f}"),
            _fmt(r.get("speedup_vs_eager") if fused else None, "{:.1f}"),
            _fmt(r.get("speedup_vs_bp") if fused else None, "{:.1f}"),
            _fmt(r.get("memory_ratio_vs_bp") if fused else None, "{:.2f}")))
    out = "\n".join(rows)
    for r in profiles:
        if r.get("error"):
            out += f"\n\n{r['name']}: error: {r['error']}"
            continue
        p = r["profile"]
        ps = p["per_step_seconds"]
        total = p["step_seconds"]
        out += (f"\n\n**{r['name']}** ({r['num_nodes']:,} nodes, {r['num_edges']:,} edges; augmented "
                f"{p['num_edges_augmented']:,} edges; step rows {p['step_rows']:,}; {p['steps']} steps)\n\n"
                "| phase | seconds | share |\n|---|---|---|\n")
        once = {k: p["seconds"][k] for k in ("prepare", "output", "validate")}
        for k in ("gemm", "loss", "grad_gemm", "update"):
            out += f"| step: {k} (per step) | {ps[k]:.5f} | {ps[k] / total:.0%} of step |\n"
        out += f"| step total (per step) | {total:.5f} | |\n"
        for k, v in once.items():
            out += f"| {k} (all layers, once per layer / per validation) | {v:.3f} | |\n"
        out += f"| one full GCN aggregation of the input | {p['one_full_aggregate_seconds']:.3f} | |\n"
        if "single_pass_prepare_seconds" in p:
            out += (f"| prepare as one normalise + aggregate + gathers (one layer) | "
                    f"{p['single_pass_prepare_seconds']:.3f} | vs {p['seconds']['prepare'] / p['layers']:.3f} now |\n")
        out += f"| building the virtual-node graph (once per run) | {p['build_virtual_graph_seconds']:.3f} | |\n"
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ffkernels.benchmarking.suite")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.worker:
        rec = run_worker(json.loads(args.worker))
        print(RESULT_MARK + json.dumps(rec), flush=True)
        return 0
    # Only the worker entry point lives here; the suite's command line is ffkernels.benchmarking.cli
    # (imported by the CLI, never by the suite: no import cycle).
    print("run the suite with `ffkernels bench --suite e2e` (python -m ffkernels.benchmarking.cli); "
          "this module's entry point only serves --worker", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
