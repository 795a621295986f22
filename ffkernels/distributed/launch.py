"""``ffkernels train --nproc P``: start P local ranks for users without torchrun habits.

The launcher partitions the graph first when the run needs partitions and none were given
(METIS when ``pymetis`` is installed, else the locality-preserving BFS fallback), then starts
``python -m ffkernels train ... --distributed`` P times with the environment ``torchrun
--standalone`` would set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR=127.0.0.1``,
a free ``MASTER_PORT``), and waits. Rank 0 prints the table and writes the outputs. When a
rank fails, the others are given :data:`FAILURE_GRACE_SECONDS` to report it themselves (each
names the failed rank), then whatever still runs is ended; the launcher exits with the first
failure's status.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

#: After a rank failed, the others get this long to notice (their collectives fail at once when
#: the peer's connection closes, or after the run's timeout when it is stuck) and report it.
FAILURE_GRACE_SECONDS = 15.0


def _strip(argv: list, flag: str, takes_value: bool) -> list:
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        if a == flag:
            skip = takes_value
            continue
        if takes_value and a.startswith(flag + "="):
            continue
        out.append(a)
    return out


def launch_local(argv: list, args, spec, splits) -> int:
    from .harness import free_port
    nproc = args.nproc
    if not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc!r}")
    if len(splits) > 1:
        raise ValueError("--nproc trains one split per run: use --split K")
    mode = args.mode or ("partition" if spec.task in ("node", "link") else "data")
    child_argv = _strip(argv, "--nproc", True)
    workdir = None
    if mode == "partition" and args.partitions is None:
        from ..datasets import resolve
        from .partition import partition_graph
        workdir = tempfile.mkdtemp(prefix="ffkernels-partitions-")
        manifest = partition_graph(resolve(args.dataset, split=splits[0]), nproc, "metis", workdir)
        if not args.quiet:
            sys.stderr.write(f"partitioned {args.dataset} into {nproc} parts ({manifest['method']}, edge cut "
                             f"{manifest['edge_cut_fraction']:.1%}) in {workdir}\n")
        child_argv += ["--partitions", workdir]
    port = free_port()
    procs = []
    for rank in range(nproc):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(nproc), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
        procs.append(subprocess.Popen([sys.executable, "-m", "ffkernels", "train", *child_argv, "--distributed"],
                                      env=env))
    first_failure, deadline = None, None
    try:
        while True:
            codes = [p.poll() for p in procs]  # every rank polled: the first failure is the earliest
            for rank, code in enumerate(codes):
                if code not in (None, 0) and first_failure is None:
                    first_failure = (rank, code)
                    deadline = time.monotonic() + FAILURE_GRACE_SECONDS
            if all(code is not None for code in codes):
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:  # the ranks got the Ctrl-C too: let them save and stop
        deadline = time.monotonic() + 30.0
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    if first_failure is None:
        first_failure = next(((r, c) for r, c in enumerate(codes) if c != 0), None)
    if first_failure is not None:
        rank, code = first_failure
        sys.stderr.write(f"ffkernels: rank {rank} of {nproc} failed (exit status {code}); exit statuses: {codes}\n")
        return code if code > 0 else 1
    return 0


__all__ = ["launch_local"]
