"""The process group of a distributed run and collectives that fail loudly, naming the rank.

:class:`DistContext` joins (or reuses) the ``torch.distributed`` process group the way
``torchrun`` sets it up (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` from the
environment; gloo for CPU tensors, NCCL for CUDA), and wraps every collective the trainers
use. Each rank publishes, in the process group's key-value store, a heartbeat (a thread, every
second) and its progress (a counter bumped before every collective). When a collective fails
(a peer's connection closed) or times out (a peer is stuck), the rank reads them and raises
:class:`RankFailure` naming the rank(s) that died (stale heartbeat) or fell behind (lowest
progress), instead of gloo's "connection closed by peer" or a hang. Every collective is bounded
by the run's timeout (``timeout`` seconds, default :data:`DEFAULT_TIMEOUT`): collectives run
asynchronously and are waited for that long. Joining the group may take up to
``max(timeout, CONNECT_TIMEOUT)``; a join that fails (it happens on loaded machines) is an error
that torchrun's ``--max-restarts`` retries.
"""
from __future__ import annotations

import datetime
import os
import threading
import time

import torch
import torch.distributed as dist

DEFAULT_TIMEOUT = 180.0
#: Joining the group may take longer than a collective: every rank imports torch and loads its
#: part first, at different speeds. It gets at least this long.
CONNECT_TIMEOUT = 60.0
HEARTBEAT_SECONDS = 1.0
_PREFIX = "ffkernels/"


class RankFailure(RuntimeError):
    """Another rank of the run died or stopped responding (the message names it)."""


class DistContext:
    """A rank's view of the run: ``rank``, ``world_size``, ``device``, ``backend``, ``timeout``.

    Args:
        timeout: seconds any collective may take before the run is declared failed.
        device: the tensors' device (``cuda`` selects NCCL and ``cuda:LOCAL_RANK``).
        backend: force ``gloo`` or ``nccl`` (default: by device).
    """

    def __init__(self, timeout: float = DEFAULT_TIMEOUT, device="cpu", backend: str | None = None):
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = float(timeout)
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.device = device
        self.backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        self.owns_group = False
        self.failed = False
        if not dist.is_initialized():
            missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
            if missing:
                raise ValueError(f"distributed training needs a process group: launch with torchrun (or "
                                 f"ffkernels train --nproc P); missing environment: {', '.join(missing)}")
            if device.type == "cuda":
                torch.cuda.set_device(device)
            # the group's own timeout bounds joining; each collective waits the run's timeout
            dist.init_process_group(self.backend, timeout=datetime.timedelta(seconds=max(self.timeout,
                                                                                           CONNECT_TIMEOUT)))
            self.owns_group = True
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self._store = _default_store()
        self._progress = 0
        self._stop = threading.Event()
        self._thread = None
        self.comm_seconds = 0.0
        self.comm_bytes = 0          # payload bytes this rank handed to collectives
        self.bytes_by_kind = {}
        if self._store is not None:
            self._beat()
            self._thread = threading.Thread(target=self._heartbeat, daemon=True, name="ffkernels-heartbeat")
            self._thread.start()

    # -- liveness
    def _beat(self):
        try:
            self._store.set(f"{_PREFIX}hb/{self.rank}", repr(time.time()))
        except Exception:  # the store host (rank 0) is gone: the next collective reports it
            pass

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self._beat()

    def _mark_progress(self):
        self._progress += 1
        if self._store is not None:
            try:
                self._store.set(f"{_PREFIX}progress/{self.rank}", str(self._progress))
            except Exception:
                pass

    def diagnose(self, exc: BaseException) -> RankFailure:
        """Which rank(s) failed: stale heartbeats (dead) or the lowest progress (stuck)."""
        self.failed = True
        reason = str(exc).splitlines()[0][:200] if str(exc) else exc.__class__.__name__
        others = [r for r in range(self.world_size) if r != self.rank]
        if self._store is None:
            return RankFailure(f"rank {self.rank}: a collective failed and the failing rank is unknown ({reason})")
        try:
            self._store.set_timeout(datetime.timedelta(seconds=5))
            time.sleep(3 * HEARTBEAT_SECONDS)  # let a dead rank's heartbeat go stale
            now = time.time()
            beats = {r: float(self._store.get(f"{_PREFIX}hb/{r}")) for r in others}
            progress = {}
            for r in others:
                try:
                    progress[r] = int(self._store.get(f"{_PREFIX}progress/{r}"))
                except Exception:
                    progress[r] = 0
        except Exception:
            host = "rank 0 (it hosts the run's store)" if self.rank != 0 else "the run's store"
            return RankFailure(f"rank {self.rank}: {host} is unreachable: it died or stopped ({reason})")
        dead = sorted(r for r, t in beats.items() if now - t > 2.5 * HEARTBEAT_SECONDS)
        if dead:
            ago = ", ".join(f"rank {r} {now - beats[r]:.0f} s ago" for r in dead)
            return RankFailure(f"rank {self.rank}: rank(s) {', '.join(map(str, dead))} died or hung (last heartbeat: "
                               f"{ago}); collective failed: {reason}")
        low = min(progress.values(), default=self._progress)
        stuck = sorted(r for r, p in progress.items() if p == low and p < self._progress)
        if stuck:
            return RankFailure(f"rank {self.rank}: rank(s) {', '.join(map(str, stuck))} stopped responding "
                               f"(stuck at step {low}, this rank at {self._progress}; timeout {self.timeout:.0f} s)")
        return RankFailure(f"rank {self.rank}: a collective failed ({reason})")

    # -- collectives
    def run(self, what: str, fn, nbytes: int = 0):
        """Call ``fn()`` (a collective) with progress, timing, byte counting and failure diagnosis."""
        return self._run(what, fn, nbytes)

    def _run(self, what, fn, nbytes: int = 0):
        """``fn()`` returns the op's ``Work`` (async) or its result; a Work is waited for at most
        the run's timeout."""
        self._mark_progress()
        start = time.perf_counter()
        try:
            out = fn()
            if isinstance(out, dist.Work):
                out.wait(datetime.timedelta(seconds=self.timeout))
        except RankFailure:
            raise
        except Exception as exc:  # gloo: connection closed / timed out; NCCL: watchdog errors
            raise self.diagnose(exc) from None
        self.comm_seconds += time.perf_counter() - start
        self.comm_bytes += nbytes
        self.bytes_by_kind[what] = self.bytes_by_kind.get(what, 0) + nbytes
        return out

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (identical result on every rank)."""
        self._run("all_reduce", lambda: dist.all_reduce(tensor, async_op=True), tensor.numel() * tensor.element_size())
        return tensor

    def all_reduce_many(self, tensors: list) -> list:
        """Sum several tensors in ONE all-reduce (coalesced through a flat buffer)."""
        flat = torch.cat([t.reshape(-1).to(torch.float64 if t.dtype == torch.float64 else torch.float32)
                          for t in tensors])
        self.all_reduce(flat)
        out, offset = [], 0
        for t in tensors:
            out.append(flat[offset:offset + t.numel()].view(t.shape).to(t.dtype))
            offset += t.numel()
        return out

    def all_to_all_single(self, output, input, output_split_sizes, input_split_sizes):
        self._run("all_to_all", lambda: dist.all_to_all_single(output, input, output_split_sizes, input_split_sizes,
                                                               async_op=True), input.numel() * input.element_size())
        return output

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        self._run("broadcast", lambda: dist.broadcast(tensor, src, async_op=True), tensor.numel() * tensor.element_size())
        return tensor

    def all_gather_object(self, obj) -> list:
        out = [None] * self.world_size
        self._run("all_gather_object", lambda: dist.all_gather_object(out, obj))
        return out

    def barrier(self):
        self._run("barrier", lambda: dist.barrier(async_op=True))

    def send(self, tensor, dst):
        out = []
        self._run("isend", lambda: out.append(dist.isend(tensor, dst)), tensor.numel() * tensor.element_size())
        return out[0]

    def recv(self, tensor, src):
        """Blocking receive, bounded by the run's timeout (a dead sender is reported, not waited for)."""
        self._run("irecv", lambda: dist.irecv(tensor, src))
        return tensor

    def wait(self, work):
        start = time.perf_counter()
        try:
            work.wait(datetime.timedelta(seconds=self.timeout))
        except Exception as exc:
            raise self.diagnose(exc) from None
        self.comm_seconds += time.perf_counter() - start

    def close(self):
        self._stop.set()
        # After a failure the group is left alone: destroying (or aborting) it waits for the
        # dead or stuck peer. The command line exits the process right after (os._exit).
        if self.owns_group and dist.is_initialized() and not self.failed:
            try:
                dist.destroy_process_group()
            except Exception:
                pass


def _default_store():
    try:
        return dist.distributed_c10d._get_default_store()
    except Exception:  # a private API: without it failures are still reported, without the rank
        return None


__all__ = ["DistContext", "RankFailure", "DEFAULT_TIMEOUT"]
