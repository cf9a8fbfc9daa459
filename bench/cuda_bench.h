// Helpers for the GPU benchmarks (bench/bench_<op>.cpp, builds with HETDRO_WITH_CUDA): the CUDA
// backend or a skip saying why, the device's measured ceilings (once per program), and the
// counters every GPU benchmark reports: achieved GB/s and TFLOP/s, and the floor time that the
// byte and FLOP counts allow at those ceilings (docs/DESIGN.md §3).
#pragma once

#ifdef HETDRO_WITH_CUDA

#include <benchmark/benchmark.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hetdro/backend.h"
#include "hetdro/cuda_timing.h"

namespace hetdro::bench {

// A device buffer of `count` elements, `pattern` repeated: large inputs without generating
// gigabytes on the host.
template <typename U>
Buffer<U> device_filled(Memory& memory, int64_t count, const std::vector<U>& pattern) {
  Buffer<U> b(memory, count);
  for (int64_t at = 0; at < count; at += int64_t(pattern.size()))
    b.upload(pattern.data(), std::min<int64_t>(int64_t(pattern.size()), count - at), at);
  return b;
}

// The CUDA backend, or nullptr after state.SkipWithError("no GPU: ...").
inline Backend<float>* gpu(benchmark::State& state) {
  static std::string why;
  static std::unique_ptr<Backend<float>> backend = make_cuda_backend(&why);
  if (!backend) state.SkipWithError(("no GPU: " + why).c_str());
  return backend.get();
}

inline const cuda::Ceilings& ceilings() {
  static const cuda::Ceilings c = cuda::measure_ceilings();
  return c;
}

// Times `fn` (CUDA events, median of 20) as each iteration's manual time, and reports the
// throughput and the floor: max(bytes / copy ceiling, flops / SGEMM ceiling).
inline void time_gpu(benchmark::State& state, const std::function<void()>& fn, double bytes,
                     double flops = 0) {
  double ms = 0;
  for (auto _ : state) {
    ms = cuda::median_ms(fn);
    state.SetIterationTime(ms * 1e-3);
  }
  const auto& c = ceilings();
  const double floor_s = std::max(bytes / (c.copy_gbps * 1e9), flops / (c.sgemm_tflops * 1e12));
  state.counters["GB/s"] = bytes / (ms * 1e-3) / 1e9;
  state.counters["TFLOP/s"] = flops / (ms * 1e-3) / 1e12;
  state.counters["floor_us"] = floor_s * 1e6;
  state.counters["floor/time"] = floor_s / (ms * 1e-3);
  state.SetLabel(c.device);
}

}  // namespace hetdro::bench

#endif  // HETDRO_WITH_CUDA
