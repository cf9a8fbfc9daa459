// Seeded inputs for the benchmarks: only their sizes matter for the timings, but fixed values
// keep runs comparable. Uniform in [lo, hi) from the counter RNG.
#pragma once

#include <cstdint>
#include <vector>

#include "hetdro/rng.h"  // uniform01

namespace hetdro::bench {

template <typename T>
std::vector<T> uniform_inputs(size_t count, uint64_t seed, T lo = T(-1), T hi = T(1)) {
  std::vector<T> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = T(lo + (hi - lo) * uniform01(seed, i));
  return v;
}

}  // namespace hetdro::bench
