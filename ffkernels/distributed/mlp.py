"""MLP forward learning across ranks: data-parallel (``ff``, ``ff-hard``, ``symba``, ``cff``) and
layer-pipelined (``ff``: rank k owns layer k).

**Data-parallel.** Every rank holds the data and a replica of the network and draws the same
shuffle and negatives (the same seeded generator), so every mini-batch is the same on every
rank; rank r trains on its slice of it. A layer's local step computes its closed-form
gradient on the slice, scales it by the slice's share of the batch (the losses are means) and
all-reduces it before the optimiser step, so every replica takes the single-process step up
to the order of float sums. The softmax head does the same. Validation runs on every replica
(identical parameters, identical scores).

**Layer-pipelined** (no softmax head; goodness inference). Rank k owns layer k. For every
mini-batch rank 0 builds the labelled positive and negative rows, takes its layer's step and
streams the detached pre-update output to rank 1 (``isend``, at most ``queue`` batches in
flight), which takes its step on it and streams on, and so on: no backward messages, and
since a layer's updates depend only on the inputs it receives, in order, the result equals
the single-process simultaneous schedule. Validation streams the C label passes the same way;
each rank adds its layer's goodness and one all-reduce sums the class scores. Every rank
records a busy / idle timeline.
"""
from __future__ import annotations

import time

import torch

from ..algorithms.mlp_common import minibatches, with_label
from ..algorithms.mlp_ff import FFTrainer
from ..train.metrics import accuracy


class _Collective:
    """What the distributed MLP trainers share: Ctrl-C agreement and the rank-0 checkpoint."""

    def any_process(self, flag: bool) -> bool:
        return bool(self.ctx.all_reduce(torch.tensor([float(flag)], device=self.ctx.device))[0] > 0)


class DataParallelMLPTrainer(_Collective, FFTrainer):
    """The mini-batch split over ranks, gradients all-reduced; see the module docstring."""

    def __init__(self, spec, options, data, model, ctx):
        super().__init__(spec, options, data, model)
        self.ctx = ctx
        self.is_main_process = ctx.rank == 0
        self.share = 1.0
        for layer in list(self.net.layers) + ([self.net.head] if self.net.head is not None else []):
            layer.apply_gradients = self._all_reduced(layer.apply_gradients)

    def _all_reduced(self, apply):
        def apply_all_reduced(grads: dict):
            names = [k for k, g in grads.items() if g is not None]
            summed = self.ctx.all_reduce_many([grads[k] * self.share for k in names])
            apply(dict(zip(names, summed)))
        return apply_all_reduced

    @torch.no_grad()
    def train_epoch(self, stage, epoch):
        net, ctx = self.net, self.ctx
        x, y = self.x_fit, self.y_fit
        negatives = net.negative_labels(x, y)
        total, batches = 0.0, 0
        for idx in minibatches(x.shape[0], self.options["batch_size"], net.generator, x.device):
            mine = torch.tensor_split(idx, ctx.world_size)[ctx.rank]
            self.share = mine.numel() / idx.numel()
            if mine.numel() == 0:
                self._empty_step()
            else:
                xb, yb = x[mine], y[mine]
                total += self.share * net.train_batch(xb, yb, negatives[mine])
                if net.head is not None:
                    net.head.step(net.head_features(xb), yb)
            batches += 1
        return float(ctx.all_reduce(torch.tensor([total], dtype=torch.float64, device=ctx.device))[0]) / max(batches, 1)

    def _empty_step(self):
        """A rank with no rows in this batch still takes part in every layer's all-reduce."""
        for layer in list(self.net.layers) + ([self.net.head] if self.net.head is not None else []):
            layer.apply_gradients({name: torch.zeros_like(p) for name, p in layer.named_parameters()})


class PipelineFFTrainer(_Collective, FFTrainer):
    """Rank k trains layer k on the detached outputs streamed from rank k - 1; see the module docstring."""

    def __init__(self, spec, options, data, model, ctx, queue: int = 4):
        super().__init__(spec, options, data, model)
        if ctx.world_size != len(self.net.layers):
            raise ValueError(f"pipelined ff needs one rank per layer: layers={len(self.net.layers)}, "
                             f"world size {ctx.world_size}")
        if self.net.head is not None:
            raise ValueError("pipelined ff trains without the softmax head (head=False; inference='goodness')")
        if not isinstance(queue, int) or queue < 1:
            raise ValueError(f"queue must be an int >= 1, got {queue!r}")
        self.ctx, self.queue = ctx, queue
        self.is_main_process = ctx.rank == 0
        self.timeline = []   # (kind, start, end): "busy" computing, "idle" waiting for a batch
        self._t0 = time.perf_counter()

    def _mark(self, kind, start):
        self.timeline.append((kind, start - self._t0, time.perf_counter() - self._t0))

    @torch.no_grad()
    def _stream(self, batches, width_in: int, step):
        """Run ``step(k_input) -> output`` on this rank for every batch, receiving the input
        from the rank before and sending the output on (at most ``queue`` sends in flight)."""
        ctx, rank, last = self.ctx, self.ctx.rank, self.ctx.world_size - 1
        pending = []
        for first_input, rows in batches:
            if rank == 0:
                h_in = first_input
            else:
                start = time.perf_counter()
                h_in = torch.empty(rows, width_in, dtype=self.x_fit.dtype, device=self.x_fit.device)
                ctx.recv(h_in, rank - 1)
                self._mark("idle", start)
            start = time.perf_counter()
            out = step(h_in)
            self._mark("busy", start)
            if rank < last:
                if len(pending) >= self.queue:
                    ctx.wait(pending.pop(0))
                pending.append(ctx.send(out.contiguous(), rank + 1))
        for work in pending:
            ctx.wait(work)

    def _width_in(self) -> int:
        return self.net.layers[self.ctx.rank].weight.shape[1]

    @torch.no_grad()
    def train_epoch(self, stage, epoch):
        net, rank = self.net, self.ctx.rank
        x, y = self.x_fit, self.y_fit
        negatives = net.negative_labels(x, y)  # the same generator draws on every rank
        layer, theta = net.layers[rank], net.thetas[rank]
        total = []

        def batches():
            for idx in minibatches(x.shape[0], self.options["batch_size"], net.generator, x.device):
                xin = net._stacked_batch(x[idx], y[idx], negatives[idx])[0] if rank == 0 else None
                yield xin, 2 * idx.numel()

        def step(h_in):
            b = h_in.shape[0] // 2
            positive = torch.zeros(2 * b, dtype=torch.bool, device=h_in.device)
            positive[:b] = True
            pairs = None
            if net.loss == "symba":
                i = torch.arange(b, device=h_in.device)
                pairs = torch.stack([i, i + b], dim=1)
            res = layer.step_prepared(layer.prepare(h_in), positive=positive, theta=theta, goodness=net.goodness,
                                      loss=net.loss, temperature=net.temperature, pairs=pairs, alpha=net.alpha)
            total.append(res.loss)
            return res.h

        self._stream(batches(), self._width_in(), step)
        # the epoch's loss as single-process reports it: the mean over batches of the summed layer losses
        loss = torch.tensor([sum(total) / max(len(total), 1)], dtype=torch.float64, device=self.ctx.device)
        return float(self.ctx.all_reduce(loss)[0])

    @torch.no_grad()
    def _class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Goodness-mode scores ``[N, C]``, the label passes streamed through the ranks."""
        net, rank, c = self.net, self.ctx.rank, self.net.num_classes
        layer = net.layers[rank]
        n = x.shape[0]
        chunk = max(16384 // c, 1)
        scores = torch.zeros(n, c, dtype=x.dtype, device=x.device)
        starts = list(range(0, n, chunk))

        def batches():
            for start in starts:
                b = min(chunk, n - start)
                xin = None
                if rank == 0:
                    xb = x[start:start + b]
                    xin = with_label(xb.repeat(c, 1), torch.arange(c, device=x.device).repeat_interleave(b), c,
                                     net.label_scale)
                yield xin, c * b

        where = iter(starts)

        def step(h_in):
            start = next(where)
            h = layer(h_in)
            if rank in net.score_layers:
                b = h.shape[0] // c
                scores[start:start + b] += net._layer_goodness(h).view(c, b).t()
            return h

        self._stream(batches(), self._width_in(), step)
        return self.ctx.all_reduce(scores)

    def validate(self, stage):
        return accuracy(self._class_scores(self.x_val).argmax(1), self.y_val)

    def end_stage(self, stage):
        """Every rank restored its own layer's best state (the same best epoch everywhere:
        the scores are all-reduced); gather all layers so every replica holds the model."""
        self._gather_layers()

    def before_checkpoint(self):
        """Every rank writes its own checkpoint (its layer's early-stopping state is its own);
        each file holds every layer's parameters and optimiser state, gathered here."""
        self._gather_layers()
        self._gather_optimizers()

    def _gather_layers(self):
        for k, layer in enumerate(self.net.layers):
            for p in layer.parameters():
                self.ctx.broadcast(p.data, src=k)

    def _gather_optimizers(self):
        for k, layer in enumerate(self.net.layers):
            opt = layer.optimizer
            for p in layer.parameters():
                state = opt.state[p]
                if not state:  # a layer this rank never steps: room for its owner's Adam state
                    state.update(step=torch.zeros((), dtype=torch.float32, device=p.device if opt.defaults.get(
                        "fused") else "cpu"), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                for key in ("step", "exp_avg", "exp_avg_sq"):
                    value = state[key]
                    buffer = value.to(self.ctx.device)  # NCCL broadcasts device tensors (Adam's step is on the CPU)
                    self.ctx.broadcast(buffer, src=k)
                    if buffer is not value:
                        value.copy_(buffer)

    def final_metrics(self) -> dict:
        data = self.data
        out = {"val_accuracy": accuracy(self._class_scores(self.x_val).argmax(1), self.y_val),
               "test_accuracy": accuracy(self._class_scores(data.x[data.test_idx]).argmax(1), data.y[data.test_idx])}
        return out

    def finish(self) -> dict:
        busy = sum(e - s for kind, s, e in self.timeline if kind == "busy")
        idle = sum(e - s for kind, s, e in self.timeline if kind == "idle")
        return {**super().finish(), "pipeline": {"rank": self.ctx.rank, "busy_seconds": busy, "idle_seconds": idle,
                                                 "timeline": self.timeline[-2000:]}}


__all__ = ["DataParallelMLPTrainer", "PipelineFFTrainer"]
