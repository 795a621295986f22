"""PNG plots of the e2e suite's records (matplotlib, the ``bench`` extra)."""
from __future__ import annotations

from pathlib import Path

COLORS = {"fused": "tab:green", "eager": "tab:orange", "bp": "tab:blue"}
LABELS = {"fused": "ffkernels (fused)", "eager": "eager forward learning (autograd per layer)",
          "bp": "backprop"}


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError as exc:
        raise RuntimeError("plots need matplotlib: pip install 'ffkernels[bench]' (or pip install matplotlib)") from exc


def plot_time_vs_size(records: list, path: Path, title_suffix: str = "") -> Path | None:
    """Seconds per epoch against the number of nodes (log-log), one line per algorithm and variant."""
    pts = [r for r in records if r.get("group") == "scale" and r.get("seconds_per_epoch") and not r.get("error")
           and r.get("algo") in ("sf", "ff_la") and r.get("num_nodes")]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for algo, style in (("sf", "-"), ("ff_la", "--")):
        for variant in ("fused", "eager", "bp"):
            sel = sorted((r for r in pts if r["algo"] == algo and r["variant"] == variant), key=lambda r: r["num_nodes"])
            if sel:
                ax.plot([r["num_nodes"] for r in sel], [r["seconds_per_epoch"] for r in sel], marker="o",
                        color=COLORS[variant], linestyle=style,
                        label=f"{algo.upper().replace('_', '-')} {sel[0]['layers']}L: {LABELS[variant]}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("nodes (synthetic graph, avg degree 10, F = 128)")
    ax.set_ylabel("seconds per epoch")
    ax.set_title("Time per epoch vs graph size" + title_suffix)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_memory_vs_depth(records: list, path: Path, title_suffix: str = "") -> Path | None:
    """Peak training memory against depth (greedy SF vs BP)."""
    pts = [r for r in records if r.get("group") == "depth" and not r.get("error") and r.get("peak_memory_bytes")
           is not None]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant in ("fused", "eager", "bp"):
        sel = sorted((r for r in pts if r["variant"] == variant), key=lambda r: r["layers"])
        if sel:
            ax.plot([r["layers"] for r in sel], [r["peak_memory_bytes"] / 2**20 for r in sel], marker="o",
                    color=COLORS[variant], label=LABELS[variant])
    ax.set_xscale("log", base=2)
    depths = sorted({r["layers"] for r in pts})
    ax.set_xticks(depths)
    ax.set_xticklabels([str(d) for d in depths])
    ax.set_xlabel("layers (GCN, hidden 128)")
    ax.set_ylabel("peak training memory (MiB above the loaded data)")
    name = pts[0].get("dataset", "")
    ax.set_title(f"Peak memory vs depth, {name}" + title_suffix)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: dict, directory) -> list:
    """Write ``time_vs_size.png`` and ``memory_vs_depth.png`` into ``directory``; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dev = results.get("meta", {}).get("device", "cpu")
    suffix = f" ({dev})"
    out = [plot_time_vs_size(results["records"], directory / "time_vs_size.png", suffix),
           plot_memory_vs_depth(results["records"], directory / "memory_vs_depth.png", suffix)]
    return [p for p in out if p is not None]
