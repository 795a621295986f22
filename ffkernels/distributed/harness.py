"""A small multi-process harness: run a function on ``world_size`` ranks, each in a fresh process.

:func:`run_ranks` is what the distributed tests use (and what a user can use to try a
distributed function without ``torchrun``): every rank is a new process (``spawn``, never
``fork``: no inherited threads or CUDA state), joins a ``torch.distributed`` process group on
``127.0.0.1`` through a port picked at run time, runs ``fn(rank, world_size, *args)`` and sends
its return value back. Nothing outlives the call: at the deadline every rank still alive is
killed (after dumping its Python stack, which goes into the ``TimeoutError``), and a rank that
raises is reported with its rank number and traceback text.
"""
from __future__ import annotations

import datetime
import faulthandler
import multiprocessing as mp
import os
import pickle
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import wait

__all__ = ["run_ranks", "free_port", "RankError"]

#: After one rank has failed, how long the others get to finish or fail on their own before
#: they are killed (they are usually blocked in a collective with the failed rank).
FAILURE_GRACE_S = 3.0
#: The process group's collective timeout is the harness timeout plus this margin.
PG_TIMEOUT_MARGIN_S = 10.0
_ENV_LOCK = threading.Lock()


class RankError(RuntimeError):
    """A rank raised (or died). ``rank``: which one; ``remote_traceback``: its traceback text;
    ``exc_type``: the name of the exception it raised.

    When the rank's exception type can be combined with this class, the error raised in the
    parent is an instance of both (``pytest.raises(ValueError)`` works for a rank raising
    ``ValueError``)."""

    def __init__(self, message: str, rank: int = -1, remote_traceback: str = "", exc_type: str = ""):
        super().__init__(message)
        self.rank = rank
        self.remote_traceback = remote_traceback
        self.exc_type = exc_type

    def __str__(self) -> str:  # the message, whatever the mixed-in base class does with args
        return self.args[0] if self.args else ""

    def __reduce__(self):
        return (RankError, (str(self), self.rank, self.remote_traceback, self.exc_type))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _rank_main(fn_bytes, rank, world_size, args_bytes, backend, timeout, conn, stack_path, num_threads):
    """Entry point of one rank (module level: the spawn context imports it by name)."""
    stack_file = open(stack_path, "w")
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True)
    status, payload = "error", None
    stage = "setup"
    try:
        os.environ["RANK"] = str(rank)
        os.environ["LOCAL_RANK"] = str(rank)
        os.environ["WORLD_SIZE"] = str(world_size)
        fn = pickle.loads(fn_bytes)
        args = pickle.loads(args_bytes)
        import torch
        import torch.distributed as dist
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        if backend == "nccl":
            torch.cuda.set_device(rank % max(torch.cuda.device_count(), 1))
        stage = "init"
        # The collectives' own timeout is longer than the harness's deadline, so a hang ends
        # as the harness's TimeoutError (with every rank's stack), not as a rank's error.
        dist.init_process_group(backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=float(timeout) + PG_TIMEOUT_MARGIN_S))
        stage = "run"
        result = fn(rank, world_size, *args)
        status, payload = "ok", pickle.dumps(result)
    except BaseException as exc:  # report everything, KeyboardInterrupt and SystemExit included
        when = time.time()
        text = traceback.format_exc()
        try:
            exc_bytes = pickle.dumps(exc)
            pickle.loads(exc_bytes)
        except Exception:
            exc_bytes = None
        status = "error"
        payload = {"stage": stage, "traceback": text, "type": type(exc).__name__, "exception": exc_bytes,
                   "time": when}
    # Report before leaving the group: destroying it makes the peers' collectives fail, and
    # the parent should hear about the cause first.
    try:
        conn.send((status, payload))
    except Exception as exc:  # e.g. an unpicklable result: still say why
        conn.send(("error", {"stage": "return", "type": type(exc).__name__, "exception": None, "time": time.time(),
                             "traceback": f"rank {rank}: could not send the return value back: {exc!r}"}))
    conn.close()
    try:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:
        pass
    stack_file.close()


def _make_error(rank: int, info: dict, note: str) -> RankError:
    text = info.get("traceback", "")
    etype = info.get("type", "Exception")
    message = f"rank {rank} failed with {etype}{note}:\n{text.rstrip()}"
    original = None
    if info.get("exception") is not None:
        try:
            original = pickle.loads(info["exception"])
        except Exception:
            original = None
    if isinstance(original, Exception) and not isinstance(original, RankError):
        try:
            cls = type(f"RankError[{type(original).__name__}]", (RankError, type(original)), {})
            err = cls.__new__(cls)
            RankError.__init__(err, message, rank, text, etype)
            return err
        except TypeError:  # an exception type that cannot be mixed in (layout conflict, odd __new__)
            pass
    return RankError(message, rank, text, etype)


def _stop(procs, pids_hung, stack_paths) -> dict:
    """Dump the stacks of ``pids_hung`` ranks, then end every process; returns rank -> stack text."""
    stacks = {}
    for rank in pids_hung:
        p = procs[rank]
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGUSR1)
            except OSError:
                pass
    if pids_hung:
        time.sleep(0.3)
        for rank in pids_hung:
            try:
                with open(stack_paths[rank]) as fh:
                    stacks[rank] = fh.read()
            except OSError:
                stacks[rank] = ""
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 2.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5.0)
    return stacks


def _trim(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _run_once(fn_bytes, args_bytes, world_size, timeout, backend, env, num_threads, tmpdir):
    ctx = mp.get_context("spawn")
    port = free_port()
    common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo"}
    common.update({str(k): str(v) for k, v in (env or {}).items()})
    procs, conns, stack_paths = [], [], []
    start = time.monotonic()
    deadline = start + float(timeout)
    # Spawned children inherit os.environ as it is when they start: set the common variables
    # only for the moment of starting them (so they are in place before the child imports torch).
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in common}
        os.environ.update(common)
        try:
            for rank in range(world_size):
                parent_conn, child_conn = ctx.Pipe(duplex=False)
                stack_path = os.path.join(tmpdir, f"rank{rank}.stack")
                p = ctx.Process(target=_rank_main, name=f"ffkernels-rank{rank}",
                                args=(fn_bytes, rank, world_size, args_bytes, backend, timeout, child_conn,
                                      stack_path, num_threads),
                                daemon=True)
                p.start()
                child_conn.close()
                procs.append(p)
                conns.append(parent_conn)
                stack_paths.append(stack_path)
        except BaseException:
            _stop(procs, [], stack_paths)
            raise
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    results = {}
    errors = {}  # rank -> (order of arrival, info)
    pending = set(range(world_size))
    conn_rank = {id(c): r for r, c in enumerate(conns)}
    sentinel_rank = {procs[r].sentinel: r for r in range(world_size)}
    grace_deadline = None
    try:
        while pending:
            now = time.monotonic()
            limit = deadline if grace_deadline is None else min(deadline, grace_deadline)
            if now >= limit:
                break
            waitables = [conns[r] for r in pending] + [procs[r].sentinel for r in pending]
            ready = wait(waitables, timeout=limit - now)
            for obj in ready:
                if not isinstance(obj, int):
                    continue
                rank = sentinel_rank[obj]
                if rank in pending and not conns[rank].poll():  # exited, nothing (not even EOF) to read
                    pending.discard(rank)
                    errors[rank] = (len(errors), {
                        "stage": "exit", "type": "ProcessExit", "exception": None, "time": time.time(),
                        "traceback": f"rank {rank} exited with code {procs[rank].exitcode} without reporting a result"})
            for obj in ready:
                if isinstance(obj, int):
                    continue
                rank = conn_rank[id(obj)]
                if rank not in pending:
                    continue
                try:
                    status, payload = obj.recv()
                except (EOFError, OSError):  # the rank died before reporting
                    procs[rank].join(1.0)
                    status, payload = "error", {
                        "stage": "exit", "type": "ProcessExit", "exception": None, "time": time.time(),
                        "traceback": f"rank {rank} exited with code {procs[rank].exitcode} "
                                     "without reporting a result"}
                pending.discard(rank)
                if status == "ok":
                    results[rank] = pickle.loads(payload)
                else:
                    errors[rank] = (len(errors), payload)
            if errors and grace_deadline is None:
                grace_deadline = time.monotonic() + FAILURE_GRACE_S
        hung = sorted(pending)
        stacks = _stop(procs, hung, stack_paths)
    except BaseException:
        _stop(procs, [], stack_paths)
        raise
    finally:
        for c in conns:
            c.close()
    pids = [p.pid for p in procs]
    return results, errors, hung, stacks, time.monotonic() - start, pids


def run_ranks(fn, world_size: int, *args, timeout: float = 60.0, backend: str = "gloo", env: dict | None = None,
              num_threads: int | None = 1, port_retries: int = 2) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` fresh processes; return the results.

    Each rank is a ``spawn``-ed process that sets ``MASTER_ADDR=127.0.0.1``, ``MASTER_PORT``
    (a free port picked now), ``GLOO_SOCKET_IFNAME=lo``, ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``
    and ``env``, calls ``torch.distributed.init_process_group(backend, rank=, world_size=,
    timeout=timeout)``, runs ``fn`` and destroys the group.

    Args:
        fn: a module-level (importable, picklable) function; ``args`` must be picklable.
        world_size: number of ranks (>= 1).
        timeout: seconds for the whole run, process start-up included (the process group's
            collective timeout is ``timeout + PG_TIMEOUT_MARGIN_S``, so the harness ends a hang).
        backend: ``gloo`` (CPU tensors) or ``nccl`` (each rank uses GPU ``rank % count``).
        env: extra environment variables for every rank (set before the rank imports torch).
        num_threads: ``torch.set_num_threads`` in every rank (default 1: ranks share the
            machine's cores); None leaves torch's default.
        port_retries: how many times to retry with a new port when the one picked was taken
            in the meantime.

    Returns:
        ``[result of rank 0, result of rank 1, ...]``.

    Raises:
        TimeoutError: some ranks did not finish by the deadline (they were killed); the
            message names them and holds their Python stacks at the deadline.
        RankError: a rank raised (also an instance of the rank's exception type when the two
            can be combined) or died; the message names the rank and holds its traceback.
            With several failures, the one that raised first is raised and the others are listed.
        TypeError / ValueError: ``fn`` cannot be pickled by reference, or bad arguments.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1, got {world_size!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if backend not in ("gloo", "nccl", "mpi"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")
    try:
        fn_bytes = pickle.dumps(fn)
    except Exception as exc:
        raise TypeError(f"fn must be a module-level function (picklable by reference for the spawn context), "
                        f"got {fn!r}: {exc}") from None
    try:
        args_bytes = pickle.dumps(args)
    except Exception as exc:
        raise TypeError(f"the arguments for fn must be picklable: {exc}") from None

    for attempt in range(port_retries + 1):
        with tempfile.TemporaryDirectory(prefix="ffk-ranks-") as tmpdir:
            results, errors, hung, stacks, elapsed, pids = _run_once(
                fn_bytes, args_bytes, world_size, timeout, backend, env, num_threads, tmpdir)
        port_taken = any(info.get("stage") == "init" and "address already in use" in info.get("traceback", "").lower()
                         for _, info in errors.values())
        if port_taken and attempt < port_retries:
            continue
        break

    if errors:
        # The root cause is the rank that raised first (its peers then fail in collectives):
        # order by the time the exception was caught in the rank, then by arrival.
        first_rank = min(errors, key=lambda r: (errors[r][1].get("time", float("inf")), errors[r][0]))
        others = []
        for rank in sorted(errors):
            if rank != first_rank:
                others.append(f"rank {rank} also failed ({errors[rank][1].get('type')})")
        if hung:
            others.append(f"rank(s) {hung} were still running and were killed")
        note = f" (first failure of {world_size} ranks; " + "; ".join(others) + ")" if others else ""
        raise _make_error(first_rank, errors[first_rank][1], note)
    if hung:
        parts = [f"ranks {hung} of {world_size} did not finish within the timeout of {timeout:g} s "
                 f"(ran {elapsed:.1f} s; killed)"]
        for rank in hung:
            text = stacks.get(rank, "").strip()
            if text:
                parts.append(f"--- Python stack of rank {rank} at the deadline ---\n{_trim(text)}")
        err = TimeoutError("\n".join(parts))
        err.ranks = hung
        err.pids = pids
        raise err
    return [results[r] for r in range(world_size)]


if __name__ == "__main__":  # pragma: no cover - nothing to run
    sys.exit("ffkernels.distributed.harness is a library module")
