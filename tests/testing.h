// Helpers shared by the tests: seeded random fills, relative error, central differences.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

namespace hetdro::testing {

template <typename T>
std::vector<T> random_vector(size_t count, uint32_t seed, T lo = T(-1), T hi = T(1)) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<double> dist{double(lo), double(hi)};
  std::vector<T> v(count);
  for (auto& x : v) x = T(dist(gen));
  return v;
}

// ‖a − b‖ / max(‖b‖, tiny): the measure every reference comparison uses.
template <typename T>
double rel_error(const std::vector<T>& a, const std::vector<T>& b) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff += (double(a[i]) - double(b[i])) * (double(a[i]) - double(b[i]));
    ref += double(b[i]) * double(b[i]);
  }
  return std::sqrt(diff) / std::max(std::sqrt(ref), 1e-300);
}

// |a − b| / max(|b|, tiny): one scalar against its reference.
inline double relative(double a, double b) {
  return std::abs(a - b) / std::max(std::abs(b), 1e-300);
}

// --- error models for bars between different code (STYLE.md, "Tolerances") ------------------

// Unit roundoff u: 2^-24 in float, 2^-53 in double.
template <typename T>
constexpr double unit_roundoff() {
  return std::numeric_limits<T>::epsilon() / 2;
}

// γ_n = n·u/(1 − n·u) (Higham, Accuracy and Stability of Numerical Algorithms, Lemma 3.1, (3.4)):
// a sum or dot product of n terms, in any order and blocking, with or without FMA, lies within
// γ_n·Σ|terms| of the exact value. Eigen's GEMM blocking and FMA contraction change with the
// instruction set; this bound holds for all of them.
constexpr double gamma(double n, double u) { return n * u / (1 - n * u); }

// ‖a‖/‖b‖ over entries that are sums: a_i = Σ|terms of entry i|, b_i = their value. The
// conditioning that turns the per-entry bound γ_n·a_i into a bound on rel_error.
inline double conditioning(const std::vector<double>& magnitude, const std::vector<double>& value) {
  double a = 0, b = 0;
  for (double x : magnitude) a += x * x;
  for (double x : value) b += x * x;
  return std::sqrt(a) / std::max(std::sqrt(b), 1e-300);
}

// The bar on rel_error(computed, reference) when each entry of `computed` sums at most n terms
// (products included) in T, in whatever order the build picks, and the reference sums the same
// terms of the same T inputs in double, rounded to T where the test compares in T:
//   ‖computed − exact‖ ≤ γ_n(u_T)·‖a‖,  ‖reference − exact‖ ≤ γ_n(u_64)·‖a‖ + u_T·‖exact‖,
// so rel_error ≤ ((γ_n(u_T) + γ_n(u_64))·κ + u_T)/(1 − u_T), κ = conditioning(a, exact).
template <typename T>
double sum_tolerance(double n, double kappa) {
  const double u = unit_roundoff<T>();
  return ((gamma(n, u) + gamma(n, unit_roundoff<double>())) * kappa + u) / (1 - u);
}

// A value computed in double by a short chain of at most m roundings (exp and log, within 1 ulp,
// count 2) on quantities within a factor 2 of the result's scale, against its exact value or
// another such chain: within γ_m·2·max(1, |want|). For hand-worked values of a few formulas.
inline double chain_tolerance(int m, double want) {
  return gamma(m, unit_roundoff<double>()) * 2 * std::max(1.0, std::abs(want));
}

// Central differences of a scalar function f(x) at x, one coordinate at a time. Error model, per
// coordinate: h²/6·|f'''| (truncation) plus δ/h, δ the rounding error of one evaluation of f in
// double, at most γ_N(2^-53)·Σ|terms| for f a sum of N terms (both sides run the same code, but at
// different points, so their errors need not cancel). For the N ≲ 100 terms of most test losses,
// δ/h ≲ 1.1e-8·Σ|terms| at h = 1e-6 and the truncation is 1.7e-13·|f'''|: the 1e-6 bars on
// rel_error keep a margin of ~100 while Σ|terms| and 1e-5·|f'''| stay of the order of |f'|, and a
// wrong gradient (off by O(1)) fails them. (x ± h itself rounds: 1e-10 relative for |x| ≤ 1.)
inline std::vector<double> numeric_gradient(
    const std::function<double(const std::vector<double>&)>& f, std::vector<double> x,
    double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    double saved = x[i];
    x[i] = saved + h;
    double up = f(x);
    x[i] = saved - h;
    double down = f(x);
    x[i] = saved;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

}  // namespace hetdro::testing
