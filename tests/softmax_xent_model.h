// The error model of softmax_xent's arithmetic (host/ops/softmax_xent.cpp and the kernels' per-row
// arithmetic, kernels/softmax_xent.h) in T, against the same formulas in double on the same
// inputs, for the tests that compare the two (STYLE.md, "Tolerances").
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "testing.h"  // gamma, unit_roundoff

namespace hetdro::testing {

// Per element, from the double values (the reference's own error is the same with u_64, added
// through `both`): x − top rounds (u|x − top|), which exp, within 1 ulp (2u), turns into a
// relative error; the sum of C positive terms, in any order or lane split, takes its terms'
// errors weighted by their share and γ_{C−1}; p = e/sum rounds once more. The loss
// log(sum) − (x_label − top) takes the sum's relative error, log's ulp, the shift's rounding and
// its own. dlogits = start + w·p − w·onehot takes w·Δp and three roundings. Each value is
// compared after rounding the reference to T (u).
struct SoftmaxXentModel {
  std::vector<double> probs, loss, dlogits;              // the reference, in double
  std::vector<double> probs_err, loss_err, dlogits_err;  // bounds on |T result − reference in T|
};

template <typename T>
SoftmaxXentModel softmax_xent_model(const std::vector<T>& logits,
                                    const std::vector<int32_t>& labels,
                                    const std::vector<T>& weight, const std::vector<T>& start,
                                    int classes) {
  const double u = unit_roundoff<T>();
  auto both = [&](double m) { return gamma(m, u) + gamma(m, unit_roundoff<double>()); };
  const int n = int(labels.size());
  SoftmaxXentModel r;
  r.probs.resize(logits.size()), r.probs_err.resize(logits.size());
  r.dlogits.resize(logits.size()), r.dlogits_err.resize(logits.size());
  r.loss.resize(n), r.loss_err.resize(n);
  for (int i = 0; i < n; ++i) {
    const T* x = logits.data() + size_t(i) * classes;
    const double top = *std::max_element(x, x + classes);
    double z = 0, spread = 0;
    for (int c = 0; c < classes; ++c) {
      const double e = std::exp(double(x[c]) - top);
      z += e, spread += e * (both(2) + u * std::abs(x[c] - top));
    }
    const double sum_rel = spread / z + both(classes - 1);
    for (int c = 0; c < classes; ++c) {
      const size_t ic = size_t(i) * classes + c;
      const double p = std::exp(double(x[c]) - top) / z;
      const double s = start.empty() ? 0.0 : double(start[ic]), w = weight[i];
      const double d = s + w * p - (c == labels[i] ? w : 0.0);
      r.probs[ic] = p, r.dlogits[ic] = d;
      r.probs_err[ic] = p * (both(2) + u * std::abs(x[c] - top) + sum_rel + both(1) + u);
      r.dlogits_err[ic] = w * r.probs_err[ic] +
                          both(1) * (w * p + std::abs(s + w * p) + std::abs(d)) + u * std::abs(d);
    }
    const double l = std::log(z) - (x[labels[i]] - top);
    r.loss[i] = l;
    r.loss_err[i] = sum_rel + both(2) * std::abs(std::log(z)) + u * std::abs(x[labels[i]] - top) +
                    (both(1) + u) * std::abs(l);
  }
  return r;
}

}  // namespace hetdro::testing
