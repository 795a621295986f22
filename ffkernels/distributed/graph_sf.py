"""``sf`` on a node-partitioned graph: one halo exchange per layer, one all-reduce per epoch.

Each rank holds one part (its owned nodes, their features, labels and split rows, the local
CSR over owned + halo sources) and a replica of every layer and of the C virtual nodes. Per
layer (greedy, as single-process ``sf``):

1. **once**: the frozen input's halo rows arrive in one ``all_to_all_single``; the rank builds
   its owned rows of the prepared input ``M = Agg(n(H))`` with the GLOBAL degrees of the
   virtual-node graph, and the C virtual rows ``M_V`` from one all-reduce of its training
   nodes' partial sums (a virtual node's neighbours are the training nodes of its class,
   on every rank);
2. **every epoch**: the SF loss on the owned training rows against the replicated virtual rows
   ``H_V``; the closed-form gradient of the owned rows gives a partial ``dW``, ``db`` and the
   partial ``dH_V = R^T H_train``; ONE coalesced all-reduce sums them (with the loss); every
   rank adds the virtual rows' own term ``dZ_V^T M_V`` and takes the same Adam step, so the
   replicas stay identical;
3. validation: the owned validation rows' correct counts, one all-reduce; early stopping
   decides on the same number on every rank.

Edge weights (the partition's ``edge_weight``) and self loops follow single-process ``sf``:
GCN is PyG's ``GCNConv`` normalisation (weighted degrees, a node's self loops replaced by one),
SAGE the weighted mean; the virtual links weigh 1.

The result equals single-process ``sf`` up to the order of float sums (the all-reduce adds
per-rank partial sums; the aggregation adds in the single-process CSR order). docs/distributed.md
says exactly what is exchanged when.
"""
from __future__ import annotations

import torch

from ..nn import FFGCNConv, FFSAGEConv
from ..nn.functional import keep_mask, normalize_rows
from ..train.registry import Trainer
from .halo import HaloExchange, local_aggregate

SUPPORTED_MODELS = ("gcn", "sage")


class PartitionedSFTrainer(Trainer):
    """Greedy SF on this rank's part; see the module docstring."""

    def __init__(self, spec, options, part, model, ctx):
        super().__init__(spec, options, part, model)
        if options["model"] not in SUPPORTED_MODELS:
            raise ValueError(f"distributed sf supports models {list(SUPPORTED_MODELS)}, got {options['model']!r} "
                             f"(GAT's attention couples every row of the graph)")
        self.ctx, self.part = ctx, part
        self.is_main_process = ctx.rank == 0
        self.num_stages = len(model.layers)
        self.tau = options["tau"]
        self.halo = HaloExchange(part)
        dev = part.x.device
        self.c = part.num_classes
        counts = part.global_counts
        self.n_train = int(counts["num_train"])
        self.class_count = torch.tensor(counts["train_class_counts"], dtype=torch.float32, device=dev)
        self.train, self.val, self.test = part.train_idx, part.val_idx, part.test_idx
        self.y_train = part.y[self.train]
        self.y_val = part.y[self.val]
        n = part.num_owned
        is_train = torch.zeros(n, 1, device=dev)
        is_train[self.train] = 1.0
        halo_train = self._exchange(is_train)
        virtual = torch.cat([is_train, halo_train]).view(-1)
        # in-degrees in the virtual-node graph: a training node has its class's virtual node too
        self.degree = part.in_degree.to(torch.float32) + virtual
        self.weight = None if part.edge_weight is None else part.edge_weight.to(dev, torch.float32)
        self.gcn_dinv, self.loop_term, self.sage_total = self._degrees(virtual[:n])
        self.h = part.x
        self.h_virtual = model.virtual_features.to(part.x.dtype)
        self.val_sum = torch.zeros(self.val.numel(), self.c, device=dev)
        self.probs = {k: torch.zeros(idx.numel(), self.c, device=dev)
                      for k, idx in (("train", self.train), ("val", self.val), ("test", self.test))}
        self.best_prefix = None  # select_layers: (validation accuracy, layers, summed predictions)
        self.halo_bytes_per_layer = []
        # dropout masks of this rank's own training rows: the same distribution as single-process
        # sf, another random stream (equal to it bitwise only with dropout = input_dropout = 0),
        # reseeded from (seed, rank, layer, epoch) every epoch: a resumed run draws the same
        # masks without any generator state in rank 0's checkpoint
        self.generator = torch.Generator(device=dev)

    def _degrees(self, is_train: torch.Tensor):
        """The virtual-node graph's GCN factors ``[n_k + h_k]`` (PyG's normalisation, as single
        process: weighted in-degree, a node's self loops replaced by one of its last loop's
        weight or 1, the virtual link weighing 1), the owned rows' self-loop term (PyG's loop
        weight minus the existing loops' summed weight; None: 1, no self loops) and, with
        weights, SAGE's weighted-mean denominators of the owned rows (else None)."""
        part, n = self.part, self.part.num_owned
        if self.weight is None and not part.gcn_uses_loop_graph:
            return (self.degree + 1.0).rsqrt(), None, None
        graph = part.local_graph(is_train.device)
        w = torch.ones(graph.num_edges, device=is_train.device) if self.weight is None else self.weight
        row, col = graph.row.to(torch.int64), graph.col.to(torch.int64)
        loop_term = None
        if part.gcn_uses_loop_graph:
            loops = graph.self_loop_structure()
            owned = loops.degree(w, torch.float32)[:n]
            is_loop = row == col
            existing = torch.zeros(graph.num_nodes, device=w.device).index_add_(0, row[is_loop], w[is_loop])
            loop_term = (loops.loop_weight(w) - existing)[:n]
        else:
            owned = torch.ones(graph.num_nodes, device=w.device).index_add_(0, row, w)[:n]
        owned = owned + is_train
        deg = torch.cat([owned, self._exchange(owned[:, None]).view(-1)])
        dinv = torch.where(deg > 0, deg.clamp_min(1e-30).rsqrt(), torch.zeros_like(deg))
        sage_total = None
        if self.weight is not None:
            sage_total = torch.zeros(graph.num_nodes, device=w.device).index_add_(0, row, w)[:n] + is_train
        return dinv, loop_term, sage_total

    # -- communication
    def _exchange(self, owned_rows: torch.Tensor) -> torch.Tensor:
        nbytes = int(self.part.send_counts.sum()) * owned_rows.shape[1] * owned_rows.element_size()
        return self.ctx.run("halo exchange", lambda: self.halo.exchange(owned_rows.contiguous()), nbytes)

    def _class_sums(self, rows: torch.Tensor) -> torch.Tensor:
        """``[C, D]``: the sum of ``rows`` (one per owned training node) per class, over all ranks."""
        out = torch.zeros(self.c, rows.shape[1], dtype=rows.dtype, device=rows.device)
        out.index_add_(0, self.y_train, rows)
        return self.ctx.all_reduce(out)

    # -- the prepared input of one layer (once per layer)
    @torch.no_grad()
    def _prepare(self, layer, h_owned: torch.Tensor, h_virtual: torch.Tensor):
        before = self.halo.bytes_sent
        local = torch.cat([h_owned, self._exchange(h_owned)])
        self.halo_bytes_per_layer.append(self.halo.bytes_sent - before)
        local = normalize_rows(local, layer.normalize, inplace=True)
        uv = normalize_rows(h_virtual, layer.normalize)
        n = self.part.num_owned
        u_train = local[self.train]
        if isinstance(layer, FFGCNConv):
            dinv = self.gcn_dinv
            dv = (self.class_count + 1.0).rsqrt()
            agg = local_aggregate(self.part, local * dinv[:, None], "sum", self.weight)
            if self.loop_term is None:
                agg += dinv[:n, None] * local[:n]                                 # self loop
            else:  # PyG: the existing self loops (summed above) replaced by one
                agg += (self.loop_term * dinv[:n])[:, None] * local[:n]
            agg[self.train] += dv[self.y_train, None] * uv[self.y_train]          # the virtual neighbour
            agg *= dinv[:n, None]
            mv = dv[:, None] * (self._class_sums(dinv[self.train, None] * u_train) + dv[:, None] * uv)
            return agg, mv
        if isinstance(layer, FFSAGEConv):
            total = local_aggregate(self.part, local, "sum", self.weight)
            total[self.train] += uv[self.y_train]
            if self.sage_total is None:
                mean = total / self.degree[:n, None].clamp_min(1.0)
            else:  # the weighted mean (nn.linear.sage_mean), 0 where the weights sum to 0
                den = self.sage_total[:, None]
                mean = torch.where(den != 0, total / torch.where(den != 0, den, torch.ones_like(den)),
                                   torch.zeros_like(total))
            mv = self._class_sums(u_train) / self.class_count[:, None].clamp_min(1.0)
            return torch.cat([local[:n], mean], dim=1), torch.cat([uv, mv], dim=1)
        raise ValueError(f"distributed sf supports {list(SUPPORTED_MODELS)} layers, got {type(layer).__name__}")

    # -- the engine's stages
    def begin_stage(self, stage):
        layer = self.model.layers[stage]
        self.m, self.mv = self._prepare(layer, self.h, self.h_virtual)
        self.h = None
        self.m_train = self.m[self.train].contiguous()
        self.m_val = self.m[self.val].contiguous()

    def stage_module(self, stage):
        return self.model.layers[stage]

    def _virtual(self, layer):
        return torch.relu_(torch.addmm(layer.bias, self.mv, layer.weight.t()))

    def _keep(self, rows: int, width: int, p: float, like: torch.Tensor) -> torch.Tensor:
        keep = keep_mask((rows, width), p, self.generator, like.device)
        return keep.to(like.dtype).mul_(1.0 / (1.0 - p))

    @torch.no_grad()
    def train_epoch(self, stage, epoch):
        layer = self.model.layers[stage]
        self.generator.manual_seed(((self.options["seed"] * 1_000_003 + self.ctx.rank) * 1_009 + stage) * 1_000_033
                                   + epoch)
        m_train = self.m_train
        if self.options["input_dropout"] > 0:
            m_train = m_train * self._keep(*m_train.shape, self.options["input_dropout"], m_train)
        h = torch.relu_(torch.addmm(layer.bias, m_train, layer.weight.t()))
        keep = None
        if self.options["dropout"] > 0:
            keep = self._keep(*h.shape, self.options["dropout"], h)
            h *= keep
        hv = self._virtual(layer)
        logp = torch.log_softmax(h @ hv.t() / self.tau, dim=1)
        loss = -logp.gather(1, self.y_train[:, None]).sum().reshape(1) / self.n_train
        r = logp.exp_()
        r[torch.arange(r.shape[0], device=r.device), self.y_train] -= 1.0
        r /= self.tau * self.n_train
        dz = (r @ hv).mul_(h > 0)
        if keep is not None:
            dz *= keep
        grad_w, grad_b, grad_hv, loss = self.ctx.all_reduce_many(
            [dz.t() @ m_train, dz.sum(0), r.t() @ h, loss])
        dzv = grad_hv.mul_(hv > 0)
        grad_w += dzv.t() @ self.mv
        grad_b += dzv.sum(0)
        layer.apply_gradients({"weight": grad_w, "bias": grad_b})
        return float(loss)

    def _correct(self, probs, y) -> torch.Tensor:
        return torch.tensor([float((probs.argmax(1) == y).sum()) if y.numel() else 0.0, float(y.numel())],
                            dtype=torch.float64, device=self.ctx.device)

    def _fraction(self, counts: torch.Tensor) -> float:
        total = self.ctx.all_reduce(counts)
        return float(total[0] / total[1]) if total[1] > 0 else 0.0

    @torch.no_grad()
    def validate(self, stage):
        layer = self.model.layers[stage]
        h = torch.relu_(torch.addmm(layer.bias, self.m_val, layer.weight.t()))
        probs = torch.softmax(h @ self._virtual(layer).t() / self.tau, dim=1)
        if self.options["val_mode"] == "cumulative":
            probs += self.val_sum
        return self._fraction(self._correct(probs, self.y_val))

    @torch.no_grad()
    def end_stage(self, stage):
        layer = self.model.layers[stage]
        h = torch.relu_(torch.addmm(layer.bias, self.m, layer.weight.t()))
        hv = self._virtual(layer)
        self.m = self.m_train = self.m_val = self.mv = None
        for key, idx in (("train", self.train), ("val", self.val), ("test", self.test)):
            self.probs[key] += torch.softmax(h[idx] @ hv.t() / self.tau, dim=1)
        self.val_sum.copy_(self.probs["val"])
        last = stage + 1 == self.num_stages
        if self.options["select_layers"]:  # the best-validating prefix of layers, as single-process sf
            val = self._fraction(self._correct(self.probs["val"], self.y_val))
            if self.best_prefix is None or val > self.best_prefix[0]:
                self.best_prefix = (val, stage + 1, {k: v.clone() for k, v in self.probs.items()})
            if last:
                self.model.inference_layers.fill_(self.best_prefix[1])
                self.probs = self.best_prefix[2]
        self.h, self.h_virtual = (None, None) if last else (h, hv)
        if stage == 0:
            self.part.x = None  # the features are not needed again (a resumed run reloads its part)

    def final_metrics(self) -> dict:
        out = {}
        for key, idx in (("val", self.val), ("test", self.test), ("train", self.train)):
            out[f"{key}_accuracy"] = self._fraction(self._correct(self.probs[key], self.part.y[idx]))
        return out

    def any_process(self, flag: bool) -> bool:
        return bool(self.ctx.all_reduce(torch.tensor([float(flag)], device=self.ctx.device))[0] > 0)

    def finish(self) -> dict:
        return {"halo_bytes_per_layer": list(self.halo_bytes_per_layer),
                "inference_layers": int(self.model.inference_layers)}




__all__ = ["PartitionedSFTrainer", "SUPPORTED_MODELS"]
