"""Command-line entry points of the distributed tools: ``ffkernels partition``.

``ffkernels partition --dataset cora_ml --parts 4 --method metis --out parts/cora_ml-4`` writes
the partition files (``docs/distributed.md``) and prints one line per part and the edge cut.
Bad arguments raise ``ValueError`` naming the flag (the ``ffkernels`` command turns them into
one-line errors).
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["cmd_partition", "partition_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # a ValueError naming the flag, no usage dump, no exit
        raise ValueError(message)


def partition_parser() -> argparse.ArgumentParser:
    from .partition import METHODS
    p = _Parser(prog="ffkernels partition",
                description="Partition a graph dataset into one part per rank for distributed training.")
    p.add_argument("--dataset", required=True,
                   help="a bundled name (cora, citeseer, cora_ml) or a path: an .npz file or an OGB directory")
    p.add_argument("--parts", required=True, type=int, help="number of parts (= number of ranks)")
    p.add_argument("--method", default="metis", choices=METHODS,
                   help="metis (needs pymetis; falls back to bfs), bfs, random or range (default: metis)")
    p.add_argument("--out", required=True, help="output directory (created; must be empty or hold this partitioning)")
    p.add_argument("--split", default="0", help="which split of the dataset (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of metis and random (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace another partitioning in --out")
    return p


def _split_value(text: str):
    return int(text) if text.strip().lstrip("-").isdigit() else text  # OGB split directories have names


def cmd_partition(argv=None, out=None) -> int:
    """``ffkernels partition ...``: write the partition files, print a summary; returns 0."""
    from ..datasets import resolve
    from .partition import partition_graph

    out = sys.stdout if out is None else out
    args = partition_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.parts < 1:
        raise ValueError(f"--parts must be >= 1, got {args.parts}")
    if not args.out:
        raise ValueError("--out must name a directory")
    split = _split_value(args.split)
    try:
        data = resolve(args.dataset, split=split, device="cpu")
    except (ValueError, TypeError) as exc:
        raise ValueError(f"--dataset {args.dataset!r} (split {args.split}): {exc}") from None
    if data.edge_index is None:
        raise ValueError(f"--dataset: {args.dataset!r} is not a graph dataset (no edges to partition)")
    try:
        manifest = partition_graph(data, args.parts, args.method, out_dir=args.out, seed=args.seed,
                                   overwrite=args.overwrite)
    except ValueError as exc:
        text = str(exc)
        raise ValueError(f"--out: {text}" if text.startswith("out_dir") else text) from None
    ds = manifest["dataset"]
    method = manifest["method"]
    if manifest["requested"] != method:
        method = f"{method} (requested {manifest['requested']}; pymetis is not installed)"
    print(f"{ds['name']} (split {ds['split']}): {ds['num_nodes']} nodes, {ds['num_edges']} edges -> "
          f"{manifest['num_parts']} parts, method {method}, in {args.out}", file=out)
    for k, part in enumerate(manifest["parts"]):
        print(f"  part {k}: owned {part['num_owned']}, halo {part['num_halo']}, local edges "
              f"{part['num_local_edges']}, train {part['num_train']}", file=out)
    print(f"edge cut: {manifest['edge_cut']} of {ds['num_edges']} edges ({100 * manifest['edge_cut_fraction']:.1f}%), "
          f"halo total {manifest['total_halo']} rows", file=out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    try:
        sys.exit(cmd_partition())
    except ValueError as exc:
        print(f"ffkernels partition: error: {exc}", file=sys.stderr)
        sys.exit(2)
