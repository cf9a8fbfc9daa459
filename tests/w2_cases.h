// Inputs for the w2_gaussian GPU tests and the fp32 baseline beside them: well-conditioned random
// SPD pairs and the degenerate covariances of tests/test_w2_gaussian.cpp (rank-deficient Ŝ from
// n_c samples + eps·I, dead units, L = I anchors), rounded to float so both sides see the same
// numbers (docs/DESIGN.md §2).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hetdro/ops.h"
#include "testing.h"  // random_vector

namespace hetdro::testing {

struct W2Case {
  std::string name;
  int pairs, k;
  std::vector<float> m1, A, m2, B;
};

inline std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// X Xᵀ/k + shift·I per pair, X uniform in [−1, 1].
inline std::vector<double> random_spd(int pairs, int k, double shift, uint32_t seed) {
  const auto X = random_vector<double>(size_t(pairs) * k * k, seed);
  std::vector<double> out(X.size(), 0.0);
  for (int p = 0; p < pairs; ++p) {
    const double* x = X.data() + size_t(p) * k * k;
    double* o = out.data() + size_t(p) * k * k;
    for (int i = 0; i < k; ++i)
      for (int j = 0; j <= i; ++j) {
        double s = 0;
        for (int l = 0; l < k; ++l) s += x[i * k + l] * x[j * k + l];
        o[i * k + j] = o[j * k + i] = s / k + (i == j ? shift : 0.0);
      }
  }
  return out;
}

// (1 + eps)·I per pair: the anchors at initialisation, L = I.
inline std::vector<double> identity_anchors(int pairs, int k, double eps) {
  std::vector<double> out(size_t(pairs) * k * k, 0.0);
  for (int p = 0; p < pairs; ++p)
    for (int i = 0; i < k; ++i) out[size_t(p) * k * k + size_t(i) * k + i] = 1.0 + eps;
  return out;
}

inline W2Case well_conditioned(int pairs, int k, uint32_t seed) {
  return {"spd",
          pairs,
          k,
          to_float(random_vector<double>(size_t(pairs) * k, seed)),
          to_float(random_spd(pairs, k, 0.1, seed + 1)),
          to_float(random_vector<double>(size_t(pairs) * k, seed + 2)),
          to_float(random_spd(pairs, k, 0.1, seed + 3))};
}

// Ŝ of n_c samples per pair (rank n_c − 1, + eps·I), with `dead` units 0 in every sample (rows
// and columns of Ŝ exactly eps·I), against L = I anchors.
inline W2Case sample_covariances(int pairs, int k, int n_c, int dead, double eps, uint32_t seed) {
  auto z = random_vector<double>(size_t(pairs) * n_c * k, seed);
  for (int s = 0; s < pairs * n_c; ++s)
    for (int d = 0; d < dead && d < k; ++d) z[size_t(s) * k + (d * 7 + s / n_c) % k] = 0.0;
  std::vector<int32_t> slot(size_t(pairs) * n_c);
  for (size_t i = 0; i < slot.size(); ++i) slot[i] = int32_t(i / n_c);
  std::vector<double> mean(size_t(pairs) * k), cov(size_t(pairs) * k * k);
  std::vector<int32_t> count(pairs);
  cpu::class_moments_forward<double>(mean.data(), cov.data(), count.data(), z.data(), slot.data(),
                                     int(slot.size()), k, pairs, eps);
  return {"n_c " + std::to_string(n_c) + " dead " + std::to_string(dead),
          pairs,
          k,
          to_float(mean),
          to_float(cov),
          to_float(random_vector<double>(size_t(pairs) * k, seed + 1, -0.1, 0.1)),
          to_float(identity_anchors(pairs, k, eps))};
}

// The double reference on the float inputs: w2, and the gradients accumulated onto `init`.
struct W2Reference {
  std::vector<double> w2, dm1, dA, dm2, dB;
};

template <typename T>
W2Reference w2_reference(const W2Case& c, const std::vector<float>& dw2,
                         const std::vector<float>& init_m, const std::vector<float>& init_kk,
                         T eps) {
  const std::vector<T> m1(c.m1.begin(), c.m1.end()), A(c.A.begin(), c.A.end());
  const std::vector<T> m2(c.m2.begin(), c.m2.end()), B(c.B.begin(), c.B.end());
  const std::vector<T> g(dw2.begin(), dw2.end());
  std::vector<T> w2(c.pairs), saved(size_t(c.pairs) * w2_gaussian_saved_size(c.k));
  cpu::w2_gaussian_forward<T>(w2.data(), saved.data(), m1.data(), A.data(), m2.data(), B.data(),
                              c.pairs, c.k, eps);
  std::vector<T> dm1(init_m.begin(), init_m.end()), dm2(dm1);
  std::vector<T> dA(init_kk.begin(), init_kk.end()), dB(dA);
  cpu::w2_gaussian_backward<T>(dm1.data(), dA.data(), dm2.data(), dB.data(), g.data(), saved.data(),
                               m1.data(), A.data(), m2.data(), B.data(), c.pairs, c.k, eps);
  auto d = [](const std::vector<T>& v) { return std::vector<double>(v.begin(), v.end()); };
  return {d(w2), d(dm1), d(dA), d(dm2), d(dB)};
}

}  // namespace hetdro::testing
