// Helpers shared by the tests: seeded random fills, relative error, central differences.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
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

// Fast op against naive loops on the same inputs: float rounding in long sums stays well inside
// 1e-5 relative; double inside 1e-12.
template <typename T>
double reference_tolerance() {
  return std::is_same_v<T, float> ? 1e-5 : 1e-12;
}

// Central differences of a scalar function f(x) at x, one coordinate at a time.
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
