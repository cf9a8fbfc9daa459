// The elementwise arithmetic of the w2_gaussian kernels (kernels/w2_gaussian.cu,
// docs/DESIGN.md §2 "W2², the cross term"): the floored square roots, the cross term's slope h,
// and the divided differences K of the Daleckii–Krein formula. Host-and-device, so the CPU tests
// (tests/test_w2_gaussian.cpp) check the same functions the kernels run.
#pragma once

#include <cmath>
#include <limits>

#include "hetdro/hd.h"

namespace hetdro::w2 {

// f(a) = √max(a, eps): the inner root R = A^½ floors A's eigenvalues at eps (§2 step 1).
template <typename T>
HETDRO_HD inline T root(T a, T eps) {
  return std::sqrt(a > eps ? a : eps);
}

// √max(μ, eps²): the outer root floors M's eigenvalues at eps², since M = R B R ≥ eps² I
// (§2 step 2), so the floor never inflates the cross term.
template <typename T>
HETDRO_HD inline T cross_root(T mu, T eps) {
  const T floor = eps * eps;
  return std::sqrt(mu > floor ? mu : floor);
}

// h = ∂√max(μ, eps²)/∂μ: 1/(2√μ) above the floor, 0 on the flat part (§2 step 2).
template <typename T>
HETDRO_HD inline T cross_slope(T mu, T eps) {
  return mu > eps * eps ? T(0.5) / std::sqrt(mu) : T(0);
}

// K_ij, the divided difference of f at a_i, a_j, with f_i = f(a_i) (§2 step 4). Never divides
// by a gap that rounding could have made; the same branches as the CPU reference
// (host/ops/w2_gaussian.cpp).
template <typename T>
HETDRO_HD inline T divided_difference(T ai, T aj, T fi, T fj, T eps) {
  const bool live_i = ai > eps, live_j = aj > eps;
  if (live_i && live_j) return T(1) / (fi + fj);  // (√ai − √aj)/(ai − aj), gap cancelled
  if (!live_i && !live_j) return T(0);            // f is constant below eps
  const T gap = ai - aj;
  const T big = std::fabs(ai) > std::fabs(aj) ? std::fabs(ai) : std::fabs(aj);
  const T rounding = T(16) * std::numeric_limits<T>::epsilon() * big;
  if (std::fabs(gap) <= rounding) {
    const T mid = T(0.5) * (ai + aj);
    return mid > eps ? T(0.5) / std::sqrt(mid) : T(0);
  }
  return (fi - fj) / gap;
}

}  // namespace hetdro::w2
