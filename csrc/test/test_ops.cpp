// C++ smoke test of the ops through the dispatcher (no Python): each op on a small random
// graph against a naive loop. Built by CMakeLists.txt and run by ctest.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
    ++failures;
  } else {
    std::printf("ok: %s\n", what.c_str());
  }
}

at::Tensor call_aggregate(const at::Tensor& rowptr, const at::Tensor& col, const at::Tensor& x,
                          const std::optional<at::Tensor>& w, const std::string& reduce,
                          const std::optional<at::Tensor>& scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ffkernels::aggregate", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const std::optional<at::Tensor>&, c10::string_view,
                                         const std::optional<at::Tensor>&)>();
  return op.call(rowptr, col, x, w, reduce, scale);
}

// Naive aggregation: the specification of reference.py::aggregate, one edge at a time.
at::Tensor naive_aggregate(const std::vector<int64_t>& rowptr, const std::vector<int64_t>& col, const at::Tensor& x,
                           const std::vector<double>& w, const std::string& reduce) {
  const int64_t n = x.size(0), f = x.size(1);
  auto xa = x.accessor<double, 2>();
  std::vector<double> deg(n, 1.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t e = rowptr[i]; e < rowptr[i + 1]; ++e) deg[i] += w.empty() ? 1.0 : w[e];
  at::Tensor out = at::zeros({n, f}, x.options());
  auto oa = out.accessor<double, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t e0 = rowptr[i], e1 = rowptr[i + 1];
    for (int64_t d = 0; d < f; ++d) {
      double acc = reduce == "max" ? -INFINITY : 0.0;
      for (int64_t e = e0; e < e1; ++e) {
        double v = xa[col[e]][d] * (w.empty() ? 1.0 : w[e]);
        if (reduce == "gcn") v /= std::sqrt(deg[col[e]]);
        acc = reduce == "max" ? std::max(acc, v) : acc + v;
      }
      if (e0 == e1 && reduce == "max") acc = 0.0;
      if (reduce == "mean" && e1 > e0) acc /= static_cast<double>(e1 - e0);
      if (reduce == "gcn") acc = (acc + xa[i][d] / std::sqrt(deg[i])) / std::sqrt(deg[i]);
      oa[i][d] = acc;
    }
  }
  return out;
}

void test_aggregate() {
  at::manual_seed(0);
  const int64_t n = 57, f = 19;
  // Random in-degrees (some zero), one hub row, duplicates allowed.
  std::vector<int64_t> rowptr{0}, col;
  at::Tensor degrees = at::randint(0, 6, {n}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t d = i == 7 ? 200 : degrees[i].item<int64_t>();
    at::Tensor src = std::get<0>(at::randint(0, n, {d}, at::kLong).sort());
    for (int64_t k = 0; k < d; ++k) col.push_back(src[k].item<int64_t>());
    rowptr.push_back(static_cast<int64_t>(col.size()));
  }
  const int64_t e = static_cast<int64_t>(col.size());
  at::Tensor x = at::randn({n, f}, at::kDouble);
  std::vector<double> w(e);
  for (int64_t k = 0; k < e; ++k) w[k] = 0.5 + static_cast<double>(k % 7) / 7.0;
  at::Tensor weight = at::tensor(w, at::kDouble);
  for (auto index_type : {at::kInt, at::kLong}) {
    at::Tensor rp = at::tensor(rowptr, at::kLong).to(index_type), cl = at::tensor(col, at::kLong).to(index_type);
    for (const std::string reduce : {"sum", "mean", "max", "gcn"}) {
      for (bool weighted : {false, true}) {
        std::optional<at::Tensor> scale;
        if (reduce == "gcn") {
          at::Tensor deg = at::ones({n}, at::kDouble);
          for (int64_t i = 0; i < n; ++i)
            for (int64_t k = rowptr[i]; k < rowptr[i + 1]; ++k) deg[i] += weighted ? w[k] : 1.0;
          scale = deg.rsqrt();
        }
        const std::vector<double> ws = weighted ? w : std::vector<double>{};
        at::Tensor expected = naive_aggregate(rowptr, col, x, ws, reduce);
        for (auto dtype : {at::kDouble, at::kFloat}) {
          at::Tensor got = call_aggregate(rp, cl, x.to(dtype), weighted ? std::optional<at::Tensor>(weight) : std::nullopt,
                                          reduce, scale);
          const double tol = dtype == at::kDouble ? 1e-10 : 1e-4;
          expect(at::allclose(got.to(at::kDouble), expected, tol, tol),
                 "aggregate " + reduce + (weighted ? " weighted " : " ") + std::string(c10::toString(dtype)) +
                     (index_type == at::kInt ? " int32" : " int64"));
        }
      }
    }
  }
}

void test_goodness() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ffkernels::goodness_loss_grad", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, double, c10::string_view, c10::string_view, double,
                           double, const std::optional<at::Tensor>&)>();
  at::manual_seed(1);
  at::Tensor h = at::relu(at::randn({33, 10}, at::kDouble));
  at::Tensor positive = at::rand({33}) < 0.5;
  const double theta = 1.5;
  auto [loss, g, grad] = op.call(h, positive, theta, "sum", "ff", 1.0, 4.0, std::nullopt);
  // Naive: loss = mean_pos softplus(-(G - theta)) + mean_neg softplus(G - theta).
  double pos_sum = 0, neg_sum = 0;
  int64_t n_pos = 0, n_neg = 0;
  bool rows_ok = true;
  for (int64_t i = 0; i < 33; ++i) {
    const double gi = (h[i] * h[i]).sum().item<double>();
    rows_ok = rows_ok && std::abs(gi - g[i].item<double>()) < 1e-10;
    const double s = gi - theta;
    if (positive[i].item<bool>()) {
      pos_sum += std::log1p(std::exp(-s));
      ++n_pos;
    } else {
      neg_sum += std::log1p(std::exp(s));
      ++n_neg;
    }
  }
  int64_t k = 0;
  bool grad_ok = true;
  for (int64_t i = 0; i < 33; ++i, ++k) {
    const double s = g[i].item<double>() - theta;
    const bool pos = positive[i].item<bool>();
    const double coef = (1.0 / (1.0 + std::exp(-s)) - (pos ? 1.0 : 0.0)) / (pos ? n_pos : n_neg);
    grad_ok = grad_ok && at::allclose(grad[i], h[i] * (2.0 * coef), 1e-10, 1e-12);
  }
  const double expected = (n_pos ? pos_sum / n_pos : 0.0) + (n_neg ? neg_sum / n_neg : 0.0);
  expect(rows_ok, "goodness_loss_grad goodness");
  expect(std::abs(loss.item<double>() - expected) < 1e-10, "goodness_loss_grad ff loss");
  expect(grad_ok, "goodness_loss_grad ff grad_z");
}

void test_linear_step() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ffkernels::linear_goodness_step", "")
                       .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>, at::Tensor>(
                           const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                           double, c10::string_view, c10::string_view, double, double,
                           const std::optional<at::Tensor>&)>();
  at::manual_seed(2);
  at::Tensor x = at::randn({20, 6}, at::kDouble), w = at::randn({5, 6}, at::kDouble), b = at::randn({5}, at::kDouble);
  at::Tensor positive = at::rand({20}) < 0.5;
  auto [loss, g, gw, gb, h] = op.call(x, w, b, positive, 1.0, "mean", "ff", 1.0, 4.0, std::nullopt);
  static auto good = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ffkernels::goodness_loss_grad", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, double, c10::string_view, c10::string_view, double,
                             double, const std::optional<at::Tensor>&)>();
  at::Tensor h_expected = at::relu(at::addmm(b, x, w.t()));
  auto [loss2, g2, grad_z] = good.call(h_expected, positive, 1.0, "mean", "ff", 1.0, 4.0, std::nullopt);
  expect(at::allclose(h, h_expected), "linear_goodness_step h");
  expect(std::abs(loss.item<double>() - loss2.item<double>()) < 1e-12, "linear_goodness_step loss");
  expect(at::allclose(gw, at::mm(grad_z.t(), x)), "linear_goodness_step grad_weight");
  expect(gb.has_value() && at::allclose(*gb, grad_z.sum(0)), "linear_goodness_step grad_bias");
}

void test_inplace_and_out_variants() {
  static auto good = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("ffkernels::goodness_loss_grad", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, double, c10::string_view, c10::string_view, double,
                             double, const std::optional<at::Tensor>&)>();
  static auto good_ = c10::Dispatcher::singleton()
                          .findSchemaOrThrow("ffkernels::goodness_loss_grad_", "")
                          .typed<std::tuple<at::Tensor, at::Tensor>(
                              at::Tensor&, const at::Tensor&, double, c10::string_view, c10::string_view, double,
                              double, const std::optional<at::Tensor>&)>();
  at::manual_seed(3);
  at::Tensor h = at::relu(at::randn({2500, 33}));
  at::Tensor positive = at::rand({2500}) < 0.5;
  auto [loss, g, grad] = good.call(h, positive, 1.0, "sum", "ff", 1.0, 4.0, std::nullopt);
  at::Tensor buf = h.clone();
  const void* ptr = buf.data_ptr();
  auto [loss_i, g_i] = good_.call(buf, positive, 1.0, "sum", "ff", 1.0, 4.0, std::nullopt);
  expect(buf.data_ptr() == ptr && at::equal(buf, grad) && at::equal(loss_i, loss) && at::equal(g_i, g),
         "goodness_loss_grad_ (in place) == goodness_loss_grad, bitwise");

  static auto lin = c10::Dispatcher::singleton()
                        .findSchemaOrThrow("ffkernels::linear_goodness_step", "")
                        .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>, at::Tensor>(
                            const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, const at::Tensor&,
                            double, c10::string_view, c10::string_view, double, double,
                            const std::optional<at::Tensor>&)>();
  static auto lin_out = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("ffkernels::linear_goodness_step_out", "")
                            .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
                                const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                const at::Tensor&, double, c10::string_view, c10::string_view, double, double,
                                const std::optional<at::Tensor>&, at::Tensor&, at::Tensor&)>();
  at::Tensor x = at::randn({40, 7}), w = at::randn({9, 7}), b = at::randn({9});
  at::Tensor pos = at::rand({40}) < 0.5;
  auto [l1, g1, gw1, gb1, h1] = lin.call(x, w, b, pos, 0.5, "sum", "ff", 1.0, 4.0, std::nullopt);
  at::Tensor hb = at::empty({40, 9}), zb = at::empty({40, 9});
  auto [l2, g2, gw2, gb2] = lin_out.call(x, w, b, pos, 0.5, "sum", "ff", 1.0, 4.0, std::nullopt, hb, zb);
  expect(at::equal(l1, l2) && at::equal(gw1, gw2) && at::equal(*gb1, gb2) && at::equal(h1, hb),
         "linear_goodness_step_out == linear_goodness_step, bitwise");
}

void test_sf_loss() {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("ffkernels::sf_loss_grad", "")
                       .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const at::Tensor&, double)>();
  at::manual_seed(4);
  const int64_t n = 30, c = 4, d = 6;
  at::Tensor h = at::rand({n + c + 3, d}, at::kDouble);
  at::Tensor train = at::arange(n, at::kLong), virt = at::arange(n, n + c, at::kLong);
  at::Tensor y = at::randint(0, c, {n}, at::kLong);
  const double tau = 0.7;
  auto [loss, grad] = op.call(h, train, y, virt, tau);
  // Naive: logits, log-softmax, R = (P - Y) / (tau n), grad rows = [R h_V ; R^T h_train].
  at::Tensor ht = h.slice(0, 0, n), hv = h.slice(0, n, n + c);
  at::Tensor lp = at::log_softmax(at::mm(ht, hv.t()) / tau, 1);
  const double expected = -lp.gather(1, y.unsqueeze(1)).sum().item<double>() / n;
  at::Tensor r = (lp.exp() - at::one_hot(y, c).to(at::kDouble)) / (tau * n);
  at::Tensor expected_grad = at::cat({at::mm(r, hv), at::mm(r.t(), ht)}, 0);
  expect(std::abs(loss.item<double>() - expected) < 1e-12, "sf_loss_grad loss");
  expect(at::allclose(grad, expected_grad, 1e-10, 1e-13), "sf_loss_grad grad rows");
}

}  // namespace

int main() {
  try {
    test_aggregate();
    test_goodness();
    test_linear_step();
    test_inplace_and_out_variants();
    test_sf_loss();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "FAILED with exception: %s\n", e.what());
    return 1;
  }
  std::printf("%d failure(s)\n", failures);
  return failures == 0 ? 0 : 1;
}
