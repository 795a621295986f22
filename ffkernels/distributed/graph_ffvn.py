"""``ff-vn`` on a node-partitioned graph: one halo exchange per layer, one all-reduce per epoch.

Each rank holds one part (owned nodes, their features, labels and split rows, the local CSR
over owned + halo sources) and a replica of every layer and of the C virtual nodes' fixed
features. The model is the single-process :class:`~ffkernels.algorithms.ff_graph.FFVNModel`,
identical on every rank after every step. Two chains of frozen layer inputs run side by side
(single-process ``ff-vn`` has the same two): the *training chain* (the training nodes linked to
their class's virtual node; training and validation read it) and the *test chain* (training +
validation nodes linked; the test scores read it, single-process inference runs it at the end).
Per layer (greedy, as single-process ``ff-vn``):

1. **once**: ONE ``all_to_all_single`` brings the frozen input's halo rows (layer 1: the
   features, shared by both chains; deeper layers: both chains' rows side by side, ``2 D``
   columns). The rank builds, with the GLOBAL degrees of each linking (a node's GCN degree
   counts its virtual link when it is linked; the halo nodes' split membership came in one
   exchange at start-up), the owned rows of the prepared inputs without the virtual term
   (training chain: every owned row, whose training rows are the training streams' ``base``;
   validation rows with training + validation linked; test chain: every owned row, and the
   test rows with training + validation + test linked), and the virtual rows' prepared inputs
   (class prototypes: their members' aggregate) from ONE all-reduce of per-class partial sums
   of both chains (``2 x C x F_in`` floats). The halo rows are dropped.
2. **every epoch**: the FF loss over the owned training rows' C streams (positive + C - 1
   negatives); the means over positive and over negative rows are GLOBAL (divided by
   ``num_train`` and ``(C - 1) num_train``), so the partial ``dW = (sum_s dZ_s)^T base +
   Mv^T U_V`` (the virtual term is linear in per-row contributions too), ``db`` and the loss
   sum to the single-process ones in ONE coalesced all-reduce (``numel(W) + D + 1`` floats);
   every rank takes the same Adam step.
3. validation: the owned validation rows' correct count, one all-reduce of two numbers.
4. end of the layer: the owned rows of both chains' next inputs (the layer's output on the
   linked graph, virtual rows included, replicated) and the layer's test scores are computed
   locally; class scores accumulate per layer as single-process ``ff-vn`` does.

The result equals single-process ``ff-vn`` up to the order of float sums: the per-rank partial
gradients then the all-reduce, and the prepared inputs built aggregation-first here
(``Agg(n(H)) W^T``) where the single-process fed-forward chain and inference are
projection-first (``Agg(n(H) W^T)``). The halo rows are bitwise the owners' rows and, from the
same input, the training / validation streams' prepared rows are bitwise the single-process
ones. docs/distributed.md says what is exchanged when.
"""
from __future__ import annotations

import torch

from ..algorithms.ff_graph import _EPS, VN_DEGREES, VNStreams, _row_norms, _score
from ..nn.functional import normalize_rows
from ..train.registry import Trainer
from .halo import HaloExchange, local_aggregate

SUPPORTED_MODELS = ("gcn", "sage")
_UNIT = 0.5 ** 0.5  # (1 + 1) ** -0.5: the `unit` virtual link's factor, as single-process ff-vn writes it


def _ff_loss_grad_global(z: torch.Tensor, theta: float, goodness: str, n_pos: int, n_neg: int):
    """FF loss and ``dL/dZ`` of this rank's streams ``z`` ``[S, n, D]`` (stream 0 positive) with the
    means over the GLOBAL ``n_pos`` positive and ``n_neg`` negative rows (the reference formula of
    :func:`ffkernels.ops.goodness_loss_grad`, whose means are over the rows it is given)."""
    s, _, d = z.shape
    h = torch.relu_(z)
    k = 1.0 if goodness == "sum" else 1.0 / max(d, 1)
    g = k * (h * h).sum(dim=2)                                          # [S, n]
    sc = g - theta
    size = torch.full_like(sc, float(max(n_neg, 1)))
    size[:1] = float(max(n_pos, 1))
    target = torch.zeros_like(sc)
    target[:1] = 1.0
    per_row = torch.nn.functional.softplus(-sc)
    if s > 1:
        per_row[1:] = torch.nn.functional.softplus(sc[1:])
    loss = (per_row / size).sum()
    coef = (torch.sigmoid(sc) - target) / size
    return loss, (coef * (2.0 * k)).unsqueeze(2) * h


class PartitionedFFVNTrainer(Trainer):
    """Greedy FF-VN on this rank's part; see the module docstring."""

    def __init__(self, spec, options, part, model, ctx):
        super().__init__(spec, options, part, model)
        if options["model"] not in SUPPORTED_MODELS:
            raise ValueError(f"distributed ff-vn supports models {list(SUPPORTED_MODELS)}, got {options['model']!r}")
        if options["vn_degree"] not in VN_DEGREES:
            raise ValueError(f"vn_degree must be one of {list(VN_DEGREES)}, got {options['vn_degree']!r}")
        self.ctx, self.part = ctx, part
        self.is_main_process = ctx.rank == 0
        self.num_stages = len(model.layers)
        self.kind, self.theta, self.goodness = options["model"], options["theta"], options["goodness"]
        self.vn_degree = options["vn_degree"]
        self.halo = HaloExchange(part)
        dev, dt = part.x.device, part.x.dtype
        c = self.c = part.num_classes
        counts = part.global_counts
        self.n_train, self.n_val, self.n_test = (int(counts[k]) for k in ("num_train", "num_val", "num_test"))
        if self.n_train == 0:
            raise ValueError(f"dataset {part.name!r} has an empty training split")
        self.tr, self.va, self.te = part.train_idx, part.val_idx, part.test_idx
        y = part.y
        self.y_tr, self.y_va, self.y_te = y[self.tr], y[self.va], y[self.te]

        # the negatives: the single-process draw (one [N, C] uniform draw of the seeded CPU
        # generator over every node), read at this rank's training nodes' global ids
        gen = torch.Generator().manual_seed(options["seed"] + 17)
        r = torch.rand(part.num_nodes, c, generator=gen)
        r = r.index_select(0, part.owned[self.tr].cpu())
        r[torch.arange(r.shape[0]), self.y_tr.cpu().clamp_min(0)] = 2.0   # sorts last: never the true class
        neg = torch.argsort(r, dim=1)[:, : c - 1].to(dev)
        del r
        self.train_cls = torch.stack([self.y_tr] + [neg[:, k] for k in range(c - 1)])      # [C, n_tr]

        # start-up collectives: the halo nodes' split membership (one exchange) and the global
        # class counts of the negative streams and of the validation labels (one all-reduce)
        n = part.num_owned
        linked = torch.zeros(n, 3, dtype=dt, device=dev)     # linked in: train | train+val | train+val+test
        linked[self.tr, 0] = 1.0
        linked[torch.cat([self.tr, self.va]), 1] = 1.0
        linked[torch.cat([self.tr, self.va, self.te]), 2] = 1.0
        linked = torch.cat([linked, self._exchange(linked)])
        deg = part.in_degree.to(dt)
        self.deg_t, self.deg_v, self.deg_q = (deg + linked[:, j] for j in range(3))
        local_counts = torch.stack([torch.bincount(cls, minlength=c) for cls in self.train_cls[1:]] +
                                   [torch.bincount(self.y_va.clamp_min(0), minlength=c)]).to(torch.float64)
        bad = torch.tensor([float(self.y_tr.numel() and int(self.y_tr.min()) < 0)], dtype=torch.float64,
                           device=dev)
        totals = self.ctx.all_reduce(torch.cat([bad, local_counts.reshape(-1)]))
        if totals[0] > 0:
            raise ValueError(f"dataset {part.name!r}: every training node needs a label (ff-vn conditions on the "
                             f"training labels); found label -1 in train_idx")
        totals = totals[1:].reshape(c, c)
        cnt_t = torch.tensor(counts["train_class_counts"], dtype=dt, device=dev)
        cnt_neg, cnt_val = totals[:c - 1].to(dt), totals[c - 1].to(dt)
        self.cnt_t, self.cnt_tv = cnt_t, cnt_t + cnt_val

        # the virtual nodes' GCN factors (vn_virtual_dinv / vn_inference_dinv with global counts)
        if self.vn_degree == "batch":
            vdeg_train = torch.cat([cnt_t[None], cnt_neg])                   # each stream's own graph
            vdeg_val = cnt_t[None].expand(c, c) + self.n_val * torch.eye(c, dtype=dt, device=dev)
            self.vinf_test = (1.0 + self.cnt_tv + self.n_test).rsqrt()
        elif self.vn_degree == "fixed":
            vdeg_train = cnt_t[None].expand(c, c)
            vdeg_val = (cnt_t + 1.0)[None].expand(c, c)
            self.vinf_test = (1.0 + self.cnt_tv + 1.0).rsqrt()
        else:
            vdeg_train = vdeg_val = torch.ones(c, c, dtype=dt, device=dev)
            self.vinf_test = torch.full_like(cnt_t, _UNIT)
        self.vdinv_train, self.vdinv_val = (1.0 + vdeg_train).rsqrt(), (1.0 + vdeg_val).rsqrt()

        self.val_cls = torch.arange(c, device=dev)[:, None].expand(c, self.va.numel())
        self.test_cls = torch.arange(c, device=dev)[:, None].expand(c, self.te.numel())
        self.cum_val = torch.zeros(c, self.va.numel(), dtype=dt, device=dev)
        self.cum_test = torch.zeros(c, self.te.numel(), dtype=dt, device=dev)
        self.layer_counts = []     # per layer, this rank's [val correct, val rows, test correct, test rows]
        # the current stage's frozen inputs: training chain (xr, xv), test chain (xt, xtv);
        # None for the test chain while it is the training chain (layer 1)
        self.xr, self.xv = part.x, model.virtual_features.to(dt)
        self.xt = self.xtv = None
        self.train_st = self.val_st = self.test_st = None
        self.halo_bytes_per_layer = []

    # -- communication
    def _exchange(self, owned_rows: torch.Tensor) -> torch.Tensor:
        nbytes = int(self.part.send_counts.sum()) * owned_rows.shape[1] * owned_rows.element_size()
        return self.ctx.run("halo exchange", lambda: self.halo.exchange(owned_rows.contiguous()), nbytes)

    def _class_sums(self, rows: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.c, rows.shape[1], dtype=rows.dtype, device=rows.device)
        return out.index_add_(0, cls, rows)

    # -- the prepared inputs of one layer (once per layer)
    @staticmethod
    def _normalized(local: torch.Tensor) -> torch.Tensor:
        """``n(H)`` of the owned + halo rows (l2, as single-process ff-vn: ``x / (||x|| + 1e-8)``)."""
        return local.div_(_row_norms(local).add_(_EPS)[:, None])

    def _prepare_chain(self, u: torch.Tensor, deg_chain, deg_query, query, known, memo: dict):
        """One chain's prepared rows from this layer's normalised input ``u`` (owned + halo rows):
        ``(A, Q, q_coef, partial class sums)``: ``A`` every owned row with ``known`` linked (no
        virtual term), ``Q`` the ``query`` rows with ``known + query`` linked (degrees
        ``deg_query``), ``q_coef`` their virtual-link factor without the virtual node's own, and
        this rank's per-class sums of the ``known`` rows (the virtual rows' aggregate). ``memo``
        keeps what layer 1's two chains (one input) share."""
        n = self.part.num_owned
        if self.kind == "gcn":
            def prepared(d):
                key = (id(u), id(d))
                if key not in memo:
                    dinv = (1.0 + d).rsqrt()
                    agg = local_aggregate(self.part, u * dinv[:, None], "sum")
                    do = dinv[:n, None]
                    memo[key] = (do * (agg + do * u[:n]), dinv[:n])
                return memo[key]
            a, dinv_a = prepared(deg_chain)
            sums = self._class_sums(dinv_a[known, None] * u[known], self.part.y[known])
            q, dinv_q = prepared(deg_query)
            return a, q[query].contiguous(), dinv_q[query], sums
        if id(u) not in memo:
            memo[id(u)] = local_aggregate(self.part, u, "sum")
        total = memo[id(u)]
        dc = deg_chain[:n].clamp_min(1.0)
        a = torch.cat([u[:n], total / dc[:, None]], 1)
        sums = self._class_sums(u[known], self.part.y[known])
        dq = deg_query[:n].clamp_min(1.0).index_select(0, query)
        q = torch.cat([u.index_select(0, query), total.index_select(0, query) / dq[:, None]], 1)
        return a, q, 1.0 / dq, sums

    def _virtual_prepared(self, sums, uv, count):
        """The virtual rows' prepared input ``[C, F_in']`` (the class prototypes)."""
        if self.kind == "gcn":
            dv = (1.0 + count).rsqrt()[:, None]
            return dv * (sums + dv * uv)
        return torch.cat([uv, sums / count.clamp_min(1.0)[:, None]], 1)

    def _streams(self, base, coef, cls, uv):
        fin = uv.shape[1]  # the virtual term enters every column (GCN) or the neighbour block (SAGE)
        blk = torch.arange(fin, 2 * fin, device=uv.device) if self.kind == "sage" else \
            torch.arange(fin, device=uv.device)
        return VNStreams(base, coef.contiguous(), cls, uv.contiguous(), blk)

    @torch.no_grad()
    def begin_stage(self, stage):
        before = self.halo.bytes_sent
        test_chain = self.xt is not None
        if test_chain:  # both chains' rows in ONE exchange
            f = self.xr.shape[1]
            halo = self._exchange(torch.cat([self.xr, self.xt], 1))
            u_r = self._normalized(torch.cat([self.xr, halo[:, :f]]))
            u_t = self._normalized(torch.cat([self.xt, halo[:, f:]]))
            del halo
            xtv = self.xtv
        else:  # layer 1: the test chain's input is the training chain's (the features)
            u_r = u_t = self._normalized(torch.cat([self.xr, self._exchange(self.xr)]))
            xtv = self.xv
        self.halo_bytes_per_layer.append(self.halo.bytes_sent - before)
        self.xr = self.xt = None
        tr, va, te = self.tr, self.va, self.te
        tv = torch.cat([tr, va])
        # training chain: every owned row linked as in training (its training rows are the
        # training streams' base), validation rows with train + val linked
        memo = {}
        a_t, base_v, qv, sums_t = self._prepare_chain(u_r, self.deg_t, self.deg_v, va, tr, memo)
        # test chain: every owned row with train + val linked, test rows with all three linked
        a_tv, base_q, qq, sums_tv = self._prepare_chain(u_t, self.deg_v, self.deg_q, te, tv, memo)
        del u_r, u_t, memo
        uv_r, uv_t = normalize_rows(self.xv), normalize_rows(xtv)
        sums_t, sums_tv = self.ctx.all_reduce_many([sums_t, sums_tv])
        self.mv_t = self._virtual_prepared(sums_t, uv_r, self.cnt_t)
        self.mv_tv = self._virtual_prepared(sums_tv, uv_t, self.cnt_tv)
        self.a_t, self.a_tv = a_t, a_tv
        if self.kind == "gcn":
            dinv_tr = (1.0 + self.deg_t[tr]).rsqrt()
            coef_tr = dinv_tr[None] * torch.gather(self.vdinv_train, 1, self.train_cls)
            coef_va = qv[None] * torch.gather(self.vdinv_val, 1, self.val_cls)
            coef_te = qq[None] * self.vinf_test[:, None]
            # the fed-forward graphs' virtual-link factors (vn_forward): unit keeps 1/sqrt(2)
            vd = (lambda cnt: (1.0 + cnt).rsqrt()) if self.vn_degree in ("batch", "fixed") else \
                (lambda cnt: torch.full_like(cnt, _UNIT))
            self.link_t = (dinv_tr * vd(self.cnt_t)[self.y_tr])
            self.link_tv = (1.0 + self.deg_v[tv]).rsqrt() * vd(self.cnt_tv)[self.part.y[tv]]
        else:
            coef_tr = (1.0 / self.deg_t[tr].clamp_min(1.0))[None].expand(self.c, -1)
            coef_va = qv[None].expand(self.c, -1)
            coef_te = qq[None].expand(self.c, -1)
            self.link_t = 1.0 / self.deg_t[tr].clamp_min(1.0)
            self.link_tv = 1.0 / self.deg_v[tv].clamp_min(1.0)
        self.train_st = self._streams(a_t[tr].contiguous(), coef_tr, self.train_cls, uv_r)
        self.val_st = self._streams(base_v, coef_va, self.val_cls, uv_r)
        self.test_st = self._streams(base_q, coef_te, self.test_cls, uv_t)

    def stage_module(self, stage):
        return self.model.layers[stage]

    @torch.no_grad()
    def train_epoch(self, stage, epoch):
        layer, st = self.model.layers[stage], self.train_st
        loss, dz = _ff_loss_grad_global(st.z(layer), self.theta, self.goodness, self.n_train,
                                        (self.c - 1) * self.n_train)
        d = dz.shape[2]
        gw = dz.sum(0).t() @ st.base
        m = torch.zeros(self.c, d, dtype=dz.dtype, device=dz.device)
        m.index_add_(0, st.cls.reshape(-1), (st.coef.unsqueeze(2) * dz).reshape(-1, d))
        gw[:, st.blk] += m.t() @ st.uv
        parts = [gw, loss.reshape(1)] + ([dz.sum((0, 1))] if layer.bias is not None else [])
        reduced = self.ctx.all_reduce_many(parts)
        layer.apply_gradients({"weight": reduced[0], "bias": reduced[2] if layer.bias is not None else None})
        return float(reduced[1])

    @torch.no_grad()
    def _val_scores(self, stage):
        return self.cum_val + _score(torch.relu_(self.val_st.z(self.model.layers[stage])), self.theta)

    @staticmethod
    def _correct(scores, y) -> float:
        return float((scores.argmax(0) == y).sum()) if y.numel() else 0.0

    def _fractions(self, pairs: list) -> list:
        """``[(correct, count), ...]`` summed over ranks (one all-reduce) -> fractions."""
        total = torch.tensor(pairs, dtype=torch.float64, device=self.ctx.device).reshape(-1)
        total = self.ctx.all_reduce(total).reshape(-1, 2)
        return [float(k / n) if n > 0 else 0.0 for k, n in total.tolist()]

    @torch.no_grad()
    def validate(self, stage):
        return self._fractions([(self._correct(self._val_scores(stage), self.y_va), self.va.numel())])[0]

    @torch.no_grad()
    def _forward(self, layer, a, mv, uv, rows, link, cls):
        """The next input of one chain: ``(ReLU(A W^T + link * (U_V W_blk^T)[cls] on rows + b),
        ReLU(M_V W^T + b))``: the layer on the graph where ``rows`` are linked to ``cls``."""
        w, blk = layer.weight, self.train_st.blk
        z = a @ w.t()
        z.index_add_(0, rows, link[:, None] * (uv @ w[:, blk].t())[cls])
        zv = mv @ w.t()
        if layer.bias is not None:
            z += layer.bias
            zv += layer.bias
        return z.relu_(), zv.relu_()

    @torch.no_grad()
    def end_stage(self, stage):
        layer = self.model.layers[stage]
        self.cum_val = self._val_scores(stage)
        self.cum_test = self.cum_test + _score(torch.relu_(self.test_st.z(layer)), self.theta)
        self.layer_counts.append([self._correct(self.cum_val, self.y_va), self.va.numel(),
                                  self._correct(self.cum_test, self.y_te), self.te.numel()])
        if stage + 1 < self.num_stages:
            tv = torch.cat([self.tr, self.va])
            self.xr, self.xv = self._forward(layer, self.a_t, self.mv_t, self.train_st.uv, self.tr, self.link_t,
                                             self.y_tr)
            self.xt, self.xtv = self._forward(layer, self.a_tv, self.mv_tv, self.test_st.uv, tv, self.link_tv,
                                              self.part.y[tv])
        else:
            self.xv = None
        self.a_t = self.a_tv = self.mv_t = self.mv_tv = self.link_t = self.link_tv = None
        self.train_st = self.val_st = self.test_st = None
        if stage == 0:
            self.part.x = None  # the features are not needed again (a resumed run reloads its part)

    def final_metrics(self) -> dict:
        val, test = self._fractions([(self._correct(self.cum_val, self.y_va), self.va.numel()),
                                     (self._correct(self.cum_test, self.y_te), self.te.numel())])
        return {"val_accuracy": val, "test_accuracy": test}

    def any_process(self, flag: bool) -> bool:
        return bool(self.ctx.all_reduce(torch.tensor([float(flag)], device=self.ctx.device))[0] > 0)

    def finish(self) -> dict:
        per_layer = self._fractions([tuple(row[i:i + 2]) for row in self.layer_counts for i in (0, 2)])
        return {"halo_bytes_per_layer": list(self.halo_bytes_per_layer),
                "val_accuracy_per_layer": per_layer[0::2], "test_accuracy_per_layer": per_layer[1::2]}


__all__ = ["PartitionedFFVNTrainer", "SUPPORTED_MODELS"]
