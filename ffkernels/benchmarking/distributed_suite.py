"""The distributed benchmark suite (``ffkernels bench --suite distributed``).

Distributed greedy SF (:mod:`ffkernels.distributed.graph_sf`: one halo exchange per layer, one
all-reduce per epoch) against the full-graph backpropagation baseline distributed the way
published systems do it (:mod:`ffkernels.distributed.bp_baseline`: every epoch, every layer, a
forward halo exchange and a backward one inside autograd, then a gradient all-reduce), on the
SAME METIS partition files, for synthetic graphs of ``--sizes`` nodes (average degree 10: about
``10 x N`` directed edges) and ``--ranks`` ranks, each rank a fresh process
(:func:`~ffkernels.distributed.run_ranks`, gloo on 127.0.0.1, one intra-op thread per process).

Two graph variants per size (``--localities``):

- ``plain`` (locality 0): ``ffkernels.datasets.synthetic`` as it is: 70% of the edges go to a
  same-class node and 30% to a uniform one, anywhere in the graph. No partition can keep a
  node's neighbours local, so every rank's halo is a large part of the graph;
- ``community`` (locality 0.95 by default): planted communities, as real graphs have them: 95%
  of the edges stay inside contiguous id blocks of ``--community-size`` nodes (still 70%
  same-class), the rest go anywhere (``synthetic(..., locality=)``).

Measured per (graph, ranks, algorithm), from the runs' own counters (payload bytes a rank hands
to a collective, as :class:`~ffkernels.distributed.context.DistContext` counts them):

- bytes communicated per epoch per rank (SF: everything but the once-per-layer halo exchanges,
  i.e. the per-epoch gradient all-reduce and the validation counts; the halo exchanges are
  reported apart, per layer, and amortised over the epochs; BP: the forward and backward halo
  exchanges and the gradient all-reduce of every epoch);
- per-rank peak memory (``peak_memory_bytes``: the growth of the resident peak over what was in
  use when training started, the part or the dataset already loaded; ``peak_total_bytes``: the
  resident peak itself) against the single-process run of the same configuration in a fresh
  process (SF: ``ffkernels.fit(data, "sf")``; BP: the same baseline on one rank, no halo);
- the communication time share (time inside collectives / training time; on one machine it
  includes waiting for the slowest rank), seconds per epoch, the partition's edge cut and halo
  sizes, and the 1-minute load average before and after every run.

``run_suite(...)`` returns ``{"meta", "records", "comparisons"}``; ``main(argv)`` is the command
line (``--quick``, ``--sizes``, ``--ranks``, ``--epochs``, ``--json PATH``, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

#: glibc: every allocation of 64 KiB or more gets its own mapping and goes back to the kernel when
#: freed, so the resident peak follows the live tensors (as in the e2e suite).
MMAP_THRESHOLD = 1 << 16
PREPARED = "prepared.json"
DEFAULT_SIZES = (100_000, 1_000_000)
DEFAULT_RANKS = (2, 4)
DEFAULT_LOCALITIES = (0.0, 0.95)
QUICK = dict(sizes=(20_000,), ranks=(2,), epochs=4)
#: the fields every run record has (the tests check them)
RUN_FIELDS = ("graph", "variant", "num_nodes", "num_edges", "algo", "world_size", "single_process", "method",
              "edge_cut", "edge_cut_fraction", "halo_rows", "owned_rows", "epochs", "bytes_per_epoch_per_rank",
              "bytes_per_epoch", "halo_bytes_per_layer", "halo_bytes_amortised_per_epoch",
              "bytes_per_epoch_incl_halo", "bytes_by_kind", "peak_memory_bytes", "peak_total_bytes",
              "runtime_bytes", "peak_data_bytes", "single_peak_memory_bytes", "single_peak_total_bytes",
              "single_peak_data_bytes", "memory_ratio", "total_memory_ratio", "data_memory_ratio",
              "comm_seconds", "comm_fraction", "train_seconds", "seconds_per_epoch", "single_seconds_per_epoch",
              "test_accuracy", "load_average")
COMPARISON_FIELDS = ("graph", "world_size", "edge_cut_fraction", "sf_bytes_per_epoch", "bp_bytes_per_epoch",
                     "bytes_ratio", "bytes_ratio_min_rank", "bytes_ratio_per_layer_round",
                     "bytes_ratio_incl_sf_halo", "bytes_ratio_lean_bp", "sf_max_memory_ratio",
                     "sf_max_total_memory_ratio", "sf_max_data_memory_ratio", "bp_max_memory_ratio",
                     "bp_max_total_memory_ratio", "bp_max_data_memory_ratio")


@dataclass
class GraphSpec:
    """One synthetic graph (``ffkernels.datasets.synthetic`` arguments)."""
    num_nodes: int
    avg_degree: float = 10.0
    locality: float = 0.0
    community_size: int = 1000
    num_features: int = 128
    num_classes: int = 8
    homophily: float = 0.7
    seed: int = 0

    @property
    def variant(self) -> str:
        return "community" if self.locality > 0 else "plain"

    @property
    def name(self) -> str:
        n = self.num_nodes
        tag = f"1e{len(str(n)) - 1}" if str(n).strip("0") == "1" else str(n)
        return f"syn-{tag}" + (f"-local{self.locality:g}" if self.locality > 0 else "")

    def generate(self):
        from ..datasets import synthetic
        return synthetic(self.num_nodes, avg_degree=self.avg_degree, num_classes=self.num_classes,
                         num_features=self.num_features, seed=self.seed, homophily=self.homophily,
                         locality=self.locality, community_size=self.community_size)


@dataclass
class TrainSpec:
    """What both algorithms train: ``layers`` GCN layers of width ``hidden``."""
    layers: int = 2
    hidden: int = 128
    epochs: int = 10          # SF: per layer (greedy); BP: epochs of the whole network
    sf_lr: float = 1e-3       # ffkernels' sf default
    bp_lr: float = 1e-2       # ffkernels' bp default
    weight_decay: float = 5e-4
    seed: int = 0

    def sf_options(self) -> dict:
        # patience beyond the epochs: every run trains all its epochs (seconds per epoch is a metric)
        return dict(model="gcn", layers=self.layers, hidden=self.hidden, epochs=self.epochs, val_every=2,
                    patience=10**9, lr=self.sf_lr, weight_decay=self.weight_decay, seed=self.seed)

    def bp_options(self) -> dict:
        return dict(hidden=self.hidden, layers=self.layers, epochs=self.epochs, lr=self.bp_lr,
                    weight_decay=self.weight_decay, seed=self.seed)


# ----------------------------------------------------------------------------- worker functions
# Module level: run_ranks pickles them by reference into fresh (spawned) processes.
def _loadavg():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def _runtime_bytes() -> int:
    """The resident memory of this process now (the interpreter, torch, ffkernels; no data yet)."""
    from ..train.metrics import status_kb
    return (status_kb("VmRSS") or 0) * 1024


def _warm_up():
    """One-time lazy costs (the first Adam step imports for seconds) out of every measurement."""
    import torch
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones_like(p)
    torch.optim.Adam([p]).step()


def _manifest_summary(m: dict) -> dict:
    return {"num_parts": m["num_parts"], "method": m["method"], "requested": m.get("requested"),
            "edge_cut": int(m["edge_cut"]), "edge_cut_fraction": float(m["edge_cut_fraction"]),
            "total_halo": int(m["total_halo"]), "halo_rows": [int(p["num_halo"]) for p in m["parts"]],
            "owned_rows": [int(p["num_owned"]) for p in m["parts"]],
            "send_rows": [int(p["num_send"]) for p in m["parts"]],
            "local_edges": [int(p["num_local_edges"]) for p in m["parts"]]}


def _save_dataset(ds, path: str) -> None:
    import torch
    g = ds.graph
    torch.save({"name": ds.name, "num_classes": int(ds.num_classes), "x": ds.x, "y": ds.y, "train_idx": ds.train_idx,
                "val_idx": ds.val_idx, "test_idx": ds.test_idx, "edge_index": ds.edge_index, "rowptr": g.rowptr,
                "col": g.col, "edge_perm": g.edge_perm, "in_degree": g.in_degree, "extra": dict(ds.extra)}, path)


def _load_dataset(path: str):
    import torch

    from ..datasets import Dataset
    from ..graph import Graph
    t = torch.load(path, weights_only=True)
    n = t["x"].shape[0]
    graph = Graph(t["rowptr"], t["col"], t["edge_perm"], n, t["in_degree"])
    return Dataset(t["name"], t["x"], t["y"], t["train_idx"], t["val_idx"], t["test_idx"], t["num_classes"], graph,
                   t["edge_index"], 0, t["extra"], source="synthetic")


def _prepare_graph(rank, world, spec: dict, graph_dir: str, parts: tuple, method: str, seed: int,
                   single: bool) -> dict:
    """Generate the graph, save it (for the single-process SF run) and partition it into every
    ``P`` of ``parts`` (plus one part for the single-process BP run)."""
    from ..distributed import partition_graph
    g = GraphSpec(**spec)
    t0 = time.perf_counter()
    ds = g.generate()
    out = {"num_nodes": int(ds.num_nodes), "num_edges": int(ds.edge_index.shape[1]),
           "generate_seconds": time.perf_counter() - t0, "partitions": {}}
    os.makedirs(graph_dir, exist_ok=True)
    if single:
        _save_dataset(ds, os.path.join(graph_dir, "data.pt"))
    for p in sorted(set(parts) | ({1} if single else set())):
        t0 = time.perf_counter()
        manifest = partition_graph(ds, int(p), method if p > 1 else "range", out_dir=os.path.join(graph_dir, f"P{p}"),
                                   seed=seed, overwrite=True)
        summary = _manifest_summary(manifest)
        summary["seconds"] = time.perf_counter() - t0
        out["partitions"][int(p)] = summary
    with open(os.path.join(graph_dir, PREPARED), "w") as fh:
        json.dump({"spec": spec, "parts": sorted(int(p) for p in out["partitions"]), "method": method, "seed": seed,
                   "single": bool(single), "prepared": out}, fh)
    return out


def _reuse_prepared(spec: dict, graph_dir: str, parts: tuple, method: str, seed: int, single: bool):
    """The summary of an earlier ``_prepare_graph`` of the same graph in ``graph_dir`` (``--keep``),
    when it holds every partition needed (and the dataset file for the single-process runs)."""
    try:
        with open(os.path.join(graph_dir, PREPARED)) as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return None
    need = set(int(p) for p in parts) | ({1} if single else set())
    if saved.get("spec") != spec or saved.get("method") != method or saved.get("seed") != seed \
            or not need <= set(saved.get("parts", [])) or (single and not saved.get("single")):
        return None
    prep = saved["prepared"]
    prep["partitions"] = {int(k): v for k, v in prep["partitions"].items()}
    prep["reused"] = True
    return prep


def _sf_single(rank, world, data_path: str, options: dict, warm: bool = True) -> dict:
    import ffkernels
    from ..train.metrics import PeakMemory
    if warm:
        _warm_up()
    runtime = _runtime_bytes()
    data = _load_dataset(data_path)
    load0 = _loadavg()
    with PeakMemory("cpu") as mem:
        trained = ffkernels.fit(data, "sf", progress=False, **options)
    rep = trained.report
    return {"peak_memory_bytes": int(mem.peak_bytes), "peak_total_bytes": int(mem.peak_total_bytes),
            "runtime_bytes": runtime, "memory_method": mem.method, "train_seconds": float(rep["train_seconds"]),
            "setup_seconds": float(rep.get("setup_seconds") or 0.0), "epochs": int(rep["total_epochs"]),
            "epochs_per_layer": list(rep["epochs_per_layer"]),
            "seconds_per_epoch": float(rep["train_seconds"]) / max(int(rep["total_epochs"]), 1),
            "test_accuracy": float(trained.metrics.get("test_accuracy", float("nan"))),
            "load_average": [load0, _loadavg()]}


def _sf_rank(rank, world, directory: str, options: dict, timeout: float, warm: bool = True) -> dict:
    import ffkernels
    from ..train.metrics import PeakMemory
    if warm:
        _warm_up()
    runtime = _runtime_bytes()
    load0 = _loadavg()
    # the resident peak of the rank while it trains (fit's own PeakMemory, inside, resets the
    # high-water mark once the part is loaded: the outer one then reads the peak from there)
    with PeakMemory("cpu") as mem:
        trained = ffkernels.fit(None, "sf", progress=False,
                                distributed={"partitions": directory, "timeout": timeout}, **options)
    rep = trained.report
    mine = {"rank": rank, "peak_total_bytes": int(mem.peak_total_bytes), "runtime_bytes": runtime,
            "load_average": [load0, _loadavg()]}
    if rank == 0:
        mine["report"] = {k: rep[k] for k in ("total_epochs", "epochs_per_layer", "train_seconds", "setup_seconds",
                                               "seconds_per_epoch", "distributed")}
        mine["report"]["test_accuracy"] = float(trained.metrics.get("test_accuracy", float("nan")))
    return mine


def _bp_rank(rank, world, directory: str, options: dict, timeout: float, capture: bool,
             warm: bool = True) -> dict:
    from ..distributed.bp_baseline import fit_bp_distributed
    if warm:
        _warm_up()
    runtime = _runtime_bytes()
    load0 = _loadavg()
    rep = fit_bp_distributed(directory, timeout=timeout, capture=capture and rank == 0, warm_up=warm, **options)
    mine = {"rank": rank, "runtime_bytes": runtime, "load_average": [load0, _loadavg()]}
    if rank == 0:
        mine["report"] = rep
    return mine


def _single_pair(rank, world, data_path, sf_options, bp_dir, bp_options, timeout, warm):
    """Both single-process runs side by side, one per process (``parallel_single``: tests)."""
    if rank == 0:
        return ("sf", _sf_single(0, 1, data_path, sf_options, warm))
    import torch.distributed as dist
    dist.destroy_process_group()  # the single BP run joins its own one-rank group
    import datetime
    from ..distributed import free_port
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo", rank=0, world_size=1, timeout=datetime.timedelta(seconds=timeout))
    return ("bp", _bp_rank(0, 1, bp_dir, bp_options, timeout, False, warm))


# ----------------------------------------------------------------------------- records
def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _sf_record(g: GraphSpec, prep: dict, world: int, results: list, single: dict | None) -> dict:
    rep = results[0]["report"]
    d = rep["distributed"]
    ranks = d["ranks"]
    epochs = max(int(rep["total_epochs"]), 1)
    per_epoch = [float(b) for b in d["bytes_per_epoch_per_rank"]]
    halo_total = [int(r["bytes_by_kind"].get("halo exchange", 0)) for r in ranks]
    amortised = [h / epochs for h in halo_total]
    peak = [int(r["peak_memory_bytes"]) for r in ranks]
    total = [int(res["peak_total_bytes"]) for res in results]
    train = [float(r["train_seconds"]) for r in ranks]
    part = prep["partitions"][world]
    rec = _base_record(g, prep, "sf", world, part)
    rec.update({
        "epochs": epochs, "epochs_per_layer": list(rep["epochs_per_layer"]),
        "bytes_per_epoch_per_rank": per_epoch, "bytes_per_epoch": _mean(per_epoch),
        "bytes_by_kind": [dict(r["bytes_by_kind"]) for r in ranks],
        "halo_bytes_per_layer": [list(r.get("halo_bytes_per_layer") or []) for r in ranks],
        "halo_bytes_total": halo_total, "halo_bytes_amortised_per_epoch": amortised,
        "bytes_per_epoch_incl_halo": [a + b for a, b in zip(per_epoch, amortised)],
        "peak_memory_bytes": peak, "peak_total_bytes": total,
        "runtime_bytes": [int(res["runtime_bytes"]) for res in results],
        "peak_data_bytes": [t - int(res["runtime_bytes"]) for t, res in zip(total, results)],
        "comm_seconds": [float(r["comm_seconds"]) for r in ranks],
        "comm_fraction": [float(f) if f is not None else None for f in d["comm_seconds_fraction"]],
        "train_seconds": train, "seconds_per_epoch": max(train) / epochs,
        "test_accuracy": float(rep["test_accuracy"]),
        "load_average": [min(r["load_average"][0] for r in results), max(r["load_average"][1] for r in results)],
    })
    _add_single(rec, single)
    return rec


def _bp_record(g: GraphSpec, prep: dict, world: int, results: list, single: dict | None) -> dict:
    rep = results[0]["report"]
    ranks = rep["ranks"]
    epochs = max(int(ranks[0]["epochs"]), 1)
    per_epoch = [float(b) for b in rep["bytes_per_epoch_per_rank"]]
    train = [float(r["train_seconds"]) for r in ranks]
    part = prep["partitions"][world]
    rec = _base_record(g, prep, "bp", world, part)
    rec.update({
        "epochs": epochs,
        "bytes_per_epoch_per_rank": per_epoch, "bytes_per_epoch": _mean(per_epoch),
        "bytes_by_kind": [dict(r["bytes_by_kind"]) for r in ranks],
        # BP exchanges every layer's halo every epoch: per layer and epoch, forward and backward
        "halo_bytes_per_layer": [r["halo_bytes_by_layer"] for r in ranks],
        "halo_bytes_amortised_per_epoch": [0.0] * len(ranks),   # nothing is exchanged only once
        "bytes_per_epoch_incl_halo": per_epoch,
        # a BP that keeps the constant features' halo rows after the first epoch
        "bytes_per_epoch_lean": [b - r["halo_bytes_by_layer"]["forward"][0] for b, r in zip(per_epoch, ranks)],
        "peak_memory_bytes": [int(r["peak_memory_bytes"]) for r in ranks],
        "peak_total_bytes": [int(r["peak_total_bytes"]) for r in ranks],
        "runtime_bytes": [int(res["runtime_bytes"]) for res in results],
        "peak_data_bytes": [int(r["peak_total_bytes"]) - int(res["runtime_bytes"]) for r, res in zip(ranks, results)],
        "comm_seconds": [float(r["comm_seconds"]) for r in ranks],
        "comm_fraction": [float(r["comm_seconds_fraction"]) if r["comm_seconds_fraction"] is not None else None
                          for r in ranks],
        "train_seconds": train, "seconds_per_epoch": max(train) / epochs,
        "test_accuracy": float(rep["test_accuracy"]), "final_loss": float(rep["losses"][-1]),
        "load_average": [min(r["load_average"][0] for r in results), max(r["load_average"][1] for r in results)],
    })
    _add_single(rec, single)
    return rec


def _base_record(g: GraphSpec, prep: dict, algo: str, world: int, part: dict | None) -> dict:
    rec = {"graph": g.name, "variant": g.variant, "locality": g.locality, "community_size": g.community_size,
           "avg_degree": g.avg_degree, "num_nodes": prep["num_nodes"], "num_edges": prep["num_edges"],
           "algo": algo, "world_size": world, "single_process": world == 1}
    if part is not None:
        rec.update(method=part["method"], edge_cut=part["edge_cut"], edge_cut_fraction=part["edge_cut_fraction"],
                   halo_rows=part["halo_rows"], owned_rows=part["owned_rows"], total_halo=part["total_halo"],
                   send_rows=part["send_rows"])
    return rec


def _add_single(rec: dict, single: dict | None) -> None:
    s = single or {}
    rec["single_peak_memory_bytes"] = s.get("peak_memory_bytes")
    rec["single_peak_total_bytes"] = s.get("peak_total_bytes")
    rec["single_peak_data_bytes"] = s.get("peak_data_bytes")
    rec["single_seconds_per_epoch"] = s.get("seconds_per_epoch")
    rec["memory_ratio"] = [_ratio(p, s.get("peak_memory_bytes")) for p in rec["peak_memory_bytes"]]
    rec["total_memory_ratio"] = [_ratio(p, s.get("peak_total_bytes")) for p in rec["peak_total_bytes"]]
    rec["data_memory_ratio"] = [_ratio(p, s.get("peak_data_bytes")) for p in rec["peak_data_bytes"]]


def _sf_single_record(g: GraphSpec, prep: dict, s: dict) -> dict:
    rec = _base_record(g, prep, "sf", 1, None)
    rec.update(method=None, edge_cut=0, edge_cut_fraction=0.0, halo_rows=[0], owned_rows=[prep["num_nodes"]],
               total_halo=0, epochs=s["epochs"], epochs_per_layer=s["epochs_per_layer"],
               bytes_per_epoch_per_rank=[0.0], bytes_per_epoch=0.0, bytes_by_kind=[{}], halo_bytes_per_layer=[[]],
               halo_bytes_amortised_per_epoch=[0.0], bytes_per_epoch_incl_halo=[0.0],
               peak_memory_bytes=[s["peak_memory_bytes"]], peak_total_bytes=[s["peak_total_bytes"]],
               runtime_bytes=[s["runtime_bytes"]], peak_data_bytes=[s["peak_total_bytes"] - s["runtime_bytes"]],
               comm_seconds=[0.0], comm_fraction=[0.0], train_seconds=[s["train_seconds"]],
               seconds_per_epoch=s["seconds_per_epoch"], test_accuracy=s["test_accuracy"],
               load_average=s["load_average"], runner="ffkernels.fit(data, 'sf')")
    _add_single(rec, _single_of(rec))
    return rec


def _single_of(rec: dict) -> dict:
    return {"peak_memory_bytes": rec["peak_memory_bytes"][0], "peak_total_bytes": rec["peak_total_bytes"][0],
            "peak_data_bytes": rec["peak_data_bytes"][0], "seconds_per_epoch": rec["seconds_per_epoch"]}


def compare(sf: dict, bp: dict, layers: int) -> dict:
    """BP / SF: bytes per epoch (mean over ranks; the smallest per-rank ratio; per round over all
    layers, i.e. SF's bytes of ``layers`` epochs; with SF's halo exchanges amortised; against a
    lean BP that keeps the features' halo), and both algorithms' worst per-rank memory ratio."""
    sf_b, bp_b = sf["bytes_per_epoch"], bp["bytes_per_epoch"]
    per_rank = [_ratio(b, s) for b, s in zip(bp["bytes_per_epoch_per_rank"], sf["bytes_per_epoch_per_rank"])]
    worst = lambda values: max(v for v in values if v is not None) if any(v is not None for v in values) else None  # noqa: E731
    return {
        "graph": sf["graph"], "variant": sf["variant"], "world_size": sf["world_size"],
        "edge_cut": sf["edge_cut"], "edge_cut_fraction": sf["edge_cut_fraction"], "halo_rows": sf["halo_rows"],
        "sf_bytes_per_epoch": sf_b, "bp_bytes_per_epoch": bp_b, "bytes_ratio": _ratio(bp_b, sf_b),
        "bytes_ratio_min_rank": min((r for r in per_rank if r is not None), default=None),
        "bytes_ratio_per_layer_round": _ratio(bp_b, sf_b * layers if sf_b else None),
        "sf_bytes_per_epoch_incl_halo": _mean(sf["bytes_per_epoch_incl_halo"]),
        "bytes_ratio_incl_sf_halo": _ratio(bp_b, _mean(sf["bytes_per_epoch_incl_halo"])),
        "bp_bytes_per_epoch_lean": _mean(bp["bytes_per_epoch_lean"]),
        "bytes_ratio_lean_bp": _ratio(_mean(bp["bytes_per_epoch_lean"]), sf_b),
        "sf_epochs": sf["epochs"], "bp_epochs": bp["epochs"],
        "sf_max_memory_ratio": worst(sf["memory_ratio"]), "sf_max_total_memory_ratio": worst(sf["total_memory_ratio"]),
        "bp_max_memory_ratio": worst(bp["memory_ratio"]), "bp_max_total_memory_ratio": worst(bp["total_memory_ratio"]),
        "sf_max_data_memory_ratio": worst(sf["data_memory_ratio"]),
        "bp_max_data_memory_ratio": worst(bp["data_memory_ratio"]),
    }


# ----------------------------------------------------------------------------- orchestration
def _top_processes(limit: int = 5) -> list:
    """The busiest processes right now (``ps``): who else was using the machine."""
    try:
        out = subprocess.run(["ps", "-eo", "pcpu,rss,args", "--sort=-pcpu"], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[1:limit + 1]
        return [" ".join(line.split())[:160] for line in out]
    except Exception:
        return []


def graph_specs(sizes, localities, community_size: int = 1000, avg_degree: float = 10.0) -> list:
    return [GraphSpec(int(n), avg_degree=avg_degree, locality=float(loc), community_size=community_size)
            for n in sizes for loc in localities]


def run_suite(sizes=DEFAULT_SIZES, ranks=DEFAULT_RANKS, epochs: int = 10, localities=DEFAULT_LOCALITIES, *,
              quick: bool = False, graphs: list | None = None, train: TrainSpec | None = None,
              community_size: int = 1000, method: str = "metis", single: bool = True,
              parallel_single: bool = False, workdir: str | None = None, keep: bool = False,
              timeout: float = 3600.0, collective_timeout: float = 600.0, capture_bp: bool = False,
              warm_up: bool = True, log=None, on_record=None) -> dict:
    """Run the suite; return ``{"meta", "records", "comparisons"}`` (see the module docstring).

    Args:
        sizes, localities: the graphs (``synthetic`` with ``avg_degree`` 10, 128 features,
            8 classes), or ``graphs``: a list of :class:`GraphSpec` (overrides both).
        ranks: the world sizes; epochs: SF epochs per layer and BP epochs.
        quick: the small subset (:data:`QUICK`: 2*10^4 nodes, 2 ranks, 4 epochs; under 3 minutes).
        train: the :class:`TrainSpec` (default: 2 GCN layers of width 128, ``epochs``).
        method: the partitioner (``metis``).
        single: also run the single-process references (for the memory ratios).
        parallel_single: run the two single-process references side by side (2 processes at
            once; for tests: their timings are then not comparable).
        workdir: where the datasets and partitions go (default: a temporary directory, removed
            at the end unless ``keep``). A graph prepared there before (with ``keep``: same
            graph, method and partitions) is reused.
        timeout: seconds per multi-process run; collective_timeout: seconds a collective may wait.
        capture_bp: keep the BP run's first-epoch gradients and final parameters (rank 0; tests)
            in ``results["bp_capture"][(graph, world_size)]`` (tensors: not in the JSON).
        warm_up: take one Adam step on a dummy parameter in every process before it is
            measured (the first step of a process pays seconds of lazy imports); False only
            for tests (the first epoch's time then includes them).
        log: ``log(message)`` progress lines (default: stderr); on_record: called with the
            results so far after every run (to save partial results).
    """
    from ..distributed import run_ranks
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if quick:
        sizes, ranks, epochs = QUICK["sizes"], QUICK["ranks"], min(int(epochs), QUICK["epochs"])
    train = train or TrainSpec(epochs=int(epochs))
    graphs = graphs if graphs is not None else graph_specs(sizes, localities, community_size)
    ranks = tuple(int(p) for p in ranks)
    import torch
    meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": quick, "torch": torch.__version__,
            "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "process_group": "gloo (127.0.0.1)", "threads_per_process": 1, "method": method,
            "train": asdict(train), "graphs": [asdict(g) for g in graphs], "ranks": list(ranks),
            "malloc_mmap_threshold": MMAP_THRESHOLD, "warm_up": warm_up, "load_average_at_start": list(os.getloadavg()),
            "top_processes_at_start": _top_processes()}
    env = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}
    results = {"meta": meta, "records": [], "comparisons": [], "bp_capture": {}}
    own_workdir = workdir is None
    root = tempfile.mkdtemp(prefix="ffk-dist-bench-") if own_workdir else str(workdir)
    start = time.perf_counter()

    def note(msg):
        log(f"[{time.perf_counter() - start:6.0f}s, load {_loadavg():.2f}] {msg}")

    def emit(rec):
        results["records"].append(rec)
        if on_record is not None:
            on_record(results)

    try:
        for g in graphs:
            gdir = os.path.join(root, g.name)
            args = (asdict(g), gdir, ranks, method, 0, single)
            t0 = time.perf_counter()
            prep = _reuse_prepared(*args) if not own_workdir else None
            if prep is None and g.num_nodes > 200_000:   # keep this process small while the ranks run
                prep = run_ranks(_prepare_graph, 1, *args, timeout=timeout, env=env)[0]
            elif prep is None:
                prep = _prepare_graph(0, 1, *args)
            cuts = ", ".join(f"P={p}: cut {s['edge_cut_fraction']:.1%}, halo {s['halo_rows']}"
                             for p, s in sorted(prep["partitions"].items()) if p > 1)
            note(f"{g.name}: {prep['num_nodes']:,} nodes, {prep['num_edges']:,} edges, "
                 + ("reused from " + gdir if prep.get("reused") else f"prepared in {time.perf_counter() - t0:.0f} s")
                 + f" ({cuts})")
            results["meta"].setdefault("prepare", {})[g.name] = {
                "generate_seconds": prep.get("generate_seconds"),
                "partition_seconds": {str(p): s.get("seconds") for p, s in prep["partitions"].items()}}
            singles = {}
            if single:
                data_path = os.path.join(gdir, "data.pt")
                bp1 = os.path.join(gdir, "P1")
                if parallel_single:
                    pair = dict(run_ranks(_single_pair, 2, data_path, train.sf_options(), bp1, train.bp_options(),
                                          collective_timeout, warm_up, timeout=timeout, env=env))
                    sf1, bp1_res = pair["sf"], [pair["bp"]]
                else:
                    sf1 = run_ranks(_sf_single, 1, data_path, train.sf_options(), warm_up, timeout=timeout,
                                    env=env)[0]
                    bp1_res = run_ranks(_bp_rank, 1, bp1, train.bp_options(), collective_timeout, False, warm_up,
                                        timeout=timeout, env=env)
                rec = _sf_single_record(g, prep, sf1)
                singles["sf"] = _single_of(rec)
                emit(rec)
                note(f"{g.name} sf, 1 process: {rec['seconds_per_epoch']:.3f} s/epoch, peak "
                     f"+{rec['peak_memory_bytes'][0] / 2**20:.0f} MiB (total {rec['peak_total_bytes'][0] / 2**20:.0f})")
                rec = _bp_record(g, prep, 1, bp1_res, None)
                rec["runner"] = "bp_baseline on 1 rank (no halo)"
                _add_single(rec, _single_of(rec))
                singles["bp"] = _single_of(rec)
                emit(rec)
                note(f"{g.name} bp, 1 process: {rec['seconds_per_epoch']:.3f} s/epoch, peak "
                     f"+{rec['peak_memory_bytes'][0] / 2**20:.0f} MiB (total {rec['peak_total_bytes'][0] / 2**20:.0f})")
            for p in ranks:
                pdir = os.path.join(gdir, f"P{p}")
                res = run_ranks(_sf_rank, p, pdir, train.sf_options(), collective_timeout, warm_up, timeout=timeout,
                                env=env)
                sf = _sf_record(g, prep, p, res, singles.get("sf"))
                emit(sf)
                note(f"{g.name} sf, {p} ranks: {sf['bytes_per_epoch']:.0f} B/epoch/rank, {sf['seconds_per_epoch']:.3f} "
                     f"s/epoch, peak +{max(sf['peak_memory_bytes']) / 2**20:.0f} MiB")
                res = run_ranks(_bp_rank, p, pdir, train.bp_options(), collective_timeout, capture_bp, warm_up,
                                timeout=timeout, env=env)
                if capture_bp:
                    rep = res[0]["report"]
                    results["bp_capture"][(g.name, p)] = {"first_grads": rep.pop("first_grads"),
                                                          "state": rep.pop("state"), "losses": rep["losses"]}
                bp = _bp_record(g, prep, p, res, singles.get("bp"))
                emit(bp)
                cmp_ = compare(sf, bp, train.layers)
                results["comparisons"].append(cmp_)
                note(f"{g.name} bp, {p} ranks: {bp['bytes_per_epoch']:.0f} B/epoch/rank, {bp['seconds_per_epoch']:.3f} "
                     f"s/epoch; BP/SF bytes per epoch {cmp_['bytes_ratio']:.1f}x")
                if on_record is not None:
                    on_record(results)
            if not keep:
                shutil.rmtree(gdir, ignore_errors=True)
    finally:
        if own_workdir and not keep:
            shutil.rmtree(root, ignore_errors=True)
    meta["suite_seconds"] = time.perf_counter() - start
    meta["load_average_at_end"] = list(os.getloadavg())
    if keep:
        meta["workdir"] = root
    return results


# ----------------------------------------------------------------------------- reporting
def _f(v, spec="{:.2f}", none="-"):
    return none if v is None else spec.format(v)


def _bytes(b) -> str:
    if b is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(b) >= size:
            return f"{b / size:.{1 if abs(b) >= 10 * size else 2}f} {unit}"
    return f"{b:.0f} B"


def _span(values, fmt) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return fmt(lo) if fmt(lo) == fmt(hi) else f"{fmt(lo)} - {fmt(hi)}"


NOTES = """Notes:
- Bytes are the payload a rank hands to the collectives (a halo exchange: the rows it sends; an
  all-reduce: the tensor; a ring all-reduce puts about 2(P-1)/P of it on each rank's link).
  SF per epoch = the coalesced gradient all-reduce (`D x F_in + D + C x D + 1` floats) plus the
  1-float stop flag and every other epoch's validation counts; SF's halo exchange happens once
  per layer (column "halo once/layer": layer 1 moves the 128 features, layer 2 the 128 hidden
  units) and is shown amortised over all epochs. BP per epoch = a forward halo exchange per layer,
  a backward one per layer whose input needs a gradient (layer 1's input, the features, does
  not) and the gradient all-reduce. An SF epoch trains one layer, a BP epoch all of them.
- Memory (resident set, VmHWM, per process): "train peak" is the growth of the peak over what
  was in use when training started (the rank's part, or the whole dataset for one process,
  already loaded); "data + train peak" is the peak minus the bare process (Python, torch and
  ffkernels imported, ~0.3-0.4 GB, measured in each process before it loads anything): the data
  and the training; "resident" (comparison table, JSON `peak_total_bytes`) is the peak itself.
  Ratios are against the single-process run of the same configuration in a fresh process (SF:
  `ffkernels.fit(data, "sf")`; BP: this baseline on one rank); "worst rank" is the largest.
- Time: all ranks run on the same 2-core machine (1 thread each), so no wall-clock speedup is
  expected or measured: P ranks share 2 cores, the communication goes through loopback, and the
  "comm share" includes the time a rank waits in a collective for a slower rank. On P machines
  each rank computes 1/P of the rows (plus its halo), and SF's per-epoch communication is the
  ~70 KB gradient all-reduce (a few hundred KB at most, any graph size), so an SF epoch should
  take about 1/P of the single-process compute plus one small all-reduce (~1 ms on a 10 Gb/s
  link); BP's per-epoch halo traffic grows with the edge cut (column "bytes/epoch/rank")."""


def markdown_table(results: dict) -> str:
    """Two markdown tables (runs; BP vs SF per configuration) and the notes."""
    rows = ["| graph | edge cut | P | algo | halo rows per rank | bytes/epoch/rank | halo once/layer (per rank) "
            "| halo amortised/epoch | train peak per rank (MiB) | x 1 process | data + train peak (MiB) "
            "| x 1 process | s/epoch | comm share | epochs | load (1 min) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    mib = lambda b: f"{b / 2**20:.0f}"  # noqa: E731
    for r in results["records"]:
        cut = "-" if r["single_process"] else f"{r['edge_cut']:,} ({r['edge_cut_fraction']:.1%})"
        if r["algo"] == "sf":
            layer = [sum(v) / len(v) for v in zip(*r["halo_bytes_per_layer"])] if any(r["halo_bytes_per_layer"]) else []
            once = " / ".join(_bytes(v) for v in layer) if layer else "-"
        else:
            once = "every epoch"
        rows.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
            r["graph"], cut, r["world_size"], r["algo"].upper(), _span(r["halo_rows"], lambda v: f"{v:,}"),
            "-" if r["single_process"] else _span(r["bytes_per_epoch_per_rank"], _bytes), once,
            _span(r["halo_bytes_amortised_per_epoch"], _bytes) if r["algo"] == "sf" and not r["single_process"] else "-",
            _span(r["peak_memory_bytes"], mib), _span(r["memory_ratio"], lambda v: f"{v:.2f}"),
            _span(r.get("peak_data_bytes", []), mib), _span(r.get("data_memory_ratio", []), lambda v: f"{v:.2f}"),
            _f(r["seconds_per_epoch"], "{:.3f}"), _span(r["comm_fraction"], lambda v: f"{v:.0%}"), r["epochs"],
            " -> ".join(_f(v) for v in r["load_average"])))
    cmp_rows = ["| graph | P | edge cut | SF bytes/epoch/rank | BP bytes/epoch/rank | **BP / SF per epoch** "
                "| worst rank | BP / SF per round of L epochs | BP / SF incl. SF halo amortised "
                "| lean BP (features' halo kept) / SF | SF worst rank mem / 1 process (train, data + train, resident) "
                "| BP worst rank mem / 1 process (train, data + train, resident) |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in results["comparisons"]:
        cmp_rows.append("| {} | {} | {:.1%} | {} | {} | **{}** | {} | {} | {} | {} | {}, {}, {} | {}, {}, {} |".format(
            c["graph"], c["world_size"], c["edge_cut_fraction"], _bytes(c["sf_bytes_per_epoch"]),
            _bytes(c["bp_bytes_per_epoch"]), _f(c["bytes_ratio"], "{:.1f}x"), _f(c["bytes_ratio_min_rank"], "{:.1f}x"),
            _f(c["bytes_ratio_per_layer_round"], "{:.1f}x"), _f(c["bytes_ratio_incl_sf_halo"], "{:.1f}x"),
            _f(c["bytes_ratio_lean_bp"], "{:.1f}x"), _f(c["sf_max_memory_ratio"]), _f(c.get("sf_max_data_memory_ratio")),
            _f(c["sf_max_total_memory_ratio"]), _f(c["bp_max_memory_ratio"]), _f(c.get("bp_max_data_memory_ratio")),
            _f(c["bp_max_total_memory_ratio"])))
    return "\n".join(rows) + "\n\n" + "\n".join(cmp_rows) + "\n\n" + NOTES


def json_records(results: dict) -> dict:
    """What ``--json`` writes: the meta, the run records and the comparisons (no tensors)."""
    return {"meta": results["meta"], "records": results["records"], "comparisons": results["comparisons"]}


def _write_json(results: dict, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(json_records(results), fh, indent=1)
    os.replace(tmp, path)


def merge_results(paths) -> dict:
    """Saved ``--json`` files merged: records by (graph, algo, world size), comparisons by
    (graph, world size); a later file wins. ``meta`` lists every file's meta."""
    records, comparisons, metas = {}, {}, []
    for path in paths:
        with open(path) as fh:
            saved = json.load(fh)
        metas.append(dict(saved.get("meta", {}), file=str(path)))
        for r in saved.get("records", []):
            records[(r["graph"], r["algo"], r["world_size"])] = r
        for c in saved.get("comparisons", []):
            comparisons[(c["graph"], c["world_size"])] = c
    return {"meta": {"merged": metas}, "records": list(records.values()), "comparisons": list(comparisons.values())}


def _numbers(text: str, kind):
    try:
        return tuple(kind(float(v)) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffkernels bench --suite distributed",
                                description="Distributed greedy SF vs distributed full-graph BP (bytes, memory, time).")
    p.add_argument("--quick", action="store_true", help="the small subset: 2*10^4 nodes, 2 ranks, 4 epochs (< 3 min)")
    p.add_argument("--sizes", type=lambda s: _numbers(s, int), default=DEFAULT_SIZES,
                   help="graph sizes in nodes, comma-separated (default 1e5,1e6)")
    p.add_argument("--ranks", type=lambda s: _numbers(s, int), default=DEFAULT_RANKS,
                   help="world sizes, comma-separated (default 2,4)")
    p.add_argument("--epochs", type=int, default=10, help="SF epochs per layer and BP epochs (default 10)")
    p.add_argument("--localities", type=lambda s: _numbers(s, float), default=DEFAULT_LOCALITIES,
                   help="graph variants: synthetic(locality=) values, comma-separated (default 0,0.95: plain and "
                        "community-structured)")
    p.add_argument("--community-size", type=int, default=1000, help="nodes per planted community (default 1000)")
    p.add_argument("--hidden", type=int, default=128, help="hidden width (default 128)")
    p.add_argument("--layers", type=int, default=2, help="GCN layers (default 2)")
    p.add_argument("--no-single", action="store_true", help="skip the single-process references (no memory ratios)")
    p.add_argument("--workdir", help="where datasets and partitions go (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the datasets and partitions")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per multi-process run (default 3600)")
    p.add_argument("--json", metavar="PATH", help="write the records (and the comparisons) as JSON")
    p.add_argument("--md", metavar="PATH", help="also write the markdown tables to PATH")
    p.add_argument("--from-json", nargs="+", metavar="PATH",
                   help="do not train: merge saved --json files (a later file wins per graph, algorithm and ranks) "
                        "and print the tables (and write --json / --md from them)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_json:
        results = merge_results(args.from_json)
        if args.json:
            _write_json(results, args.json)
    else:
        train = TrainSpec(layers=args.layers, hidden=args.hidden, epochs=args.epochs)
        if args.quick:
            train.epochs = min(train.epochs, QUICK["epochs"])
        results = run_suite(args.sizes, args.ranks, args.epochs, args.localities, quick=args.quick, train=train,
                            community_size=args.community_size, single=not args.no_single, workdir=args.workdir,
                            keep=args.keep, timeout=args.timeout,
                            on_record=(lambda res: _write_json(res, args.json)) if args.json else None)
        if args.json:
            _write_json(results, args.json)
    table = markdown_table(results)
    print(table)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
