// Helpers for the GPU benchmarks: the CUDA backend or a skip saying why, device buffers filled from
// a short seeded pattern, and CUDA-event timing that reports GB/s against the device's copy
// ceiling and the floor time the byte count allows (docs/DESIGN.md §3).
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "hetdro/backend.h"  // make_cuda_backend, Buffer
#ifdef HETDRO_WITH_CUDA
#include "hetdro/cuda_timing.h"  // median_ms, measure_ceilings
#endif

namespace hetdro::bench {

// The program's CUDA backend; nullptr after SkipWithError("no GPU: ...") when there is none.
inline Backend<float>* gpu_or_skip(benchmark::State& state) {
  static std::string why_not;
  static std::unique_ptr<Backend<float>> backend = make_cuda_backend(&why_not);
  if (!backend) state.SkipWithError(("no GPU: " + why_not).c_str());
  return backend.get();
}

// A device buffer of `count` elements, `pattern` repeated: large inputs without generating
// gigabytes on the host.
template <typename U>
Buffer<U> device_filled(Memory& memory, int64_t count, const std::vector<U>& pattern) {
  Buffer<U> b(memory, count);
  for (int64_t at = 0; at < count; at += int64_t(pattern.size()))
    b.upload(pattern.data(), std::min<int64_t>(int64_t(pattern.size()), count - at), at);
  return b;
}

#ifdef HETDRO_WITH_CUDA
inline const cuda::Ceilings& ceilings() {
  static const cuda::Ceilings c = cuda::measure_ceilings();
  return c;
}

// Times the work `fn` enqueues (the median of CUDA-event timings per iteration) and reports
// GB/s for `bytes` moved per call (read + written, the minimum the op needs), the device's
// copy ceiling, the fraction of it reached, and the floor time at that ceiling.
inline void time_on_gpu(benchmark::State& state, const std::function<void()>& fn, double bytes) {
  double seconds = 0;
  for (auto _ : state) {
    const double s = cuda::median_ms(fn) / 1e3;
    state.SetIterationTime(s);
    seconds += s;
  }
  const double per_call = seconds / double(state.iterations());
  const double copy = ceilings().copy_gbps;
  state.counters["GB/s"] = bytes / per_call / 1e9;
  state.counters["copy_GB/s"] = copy;
  state.counters["of_copy"] = bytes / per_call / 1e9 / copy;
  state.counters["floor_us"] = bytes / (copy * 1e9) * 1e6;
  state.SetLabel(ceilings().device);
}
#endif

}  // namespace hetdro::bench
