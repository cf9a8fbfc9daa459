// Counter-based random numbers: value i of stream `seed` depends on (seed, i) alone, so the CPU
// reference and the CUDA kernels draw the same numbers in any order or thread layout.
#pragma once

#include <cmath>
#include <cstdint>

#include "hetdro/hd.h"  // HETDRO_HD

namespace hetdro {

HETDRO_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in (0, 1], 53 bits.
HETDRO_HD inline double uniform01(uint64_t seed, uint64_t i) {
  uint64_t bits = splitmix64(splitmix64(seed) ^ splitmix64(i * 2 + 1));
  return (double((bits >> 11) + 1)) * (1.0 / 9007199254740992.0);
}

// Standard normal (Box–Muller on two uniforms of the same counter).
HETDRO_HD inline double normal01(uint64_t seed, uint64_t i) {
  double u1 = uniform01(seed, 2 * i);
  double u2 = uniform01(seed, 2 * i + 1);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
}

}  // namespace hetdro
