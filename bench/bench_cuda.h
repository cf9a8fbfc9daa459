// The GPU benchmarks' shared pieces (docs/DESIGN.md §3): the CUDA backend or a skip with its
// reason, the device's ceilings measured once per program, device buffers of seeded inputs, and
// one timing loop that reports the achieved rates against the ceilings and the floor time.
// Only in builds with CUDA (HETDRO_WITH_CUDA).
#pragma once

#ifdef HETDRO_WITH_CUDA

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "hetdro/backend.h"
#include "hetdro/cuda_timing.h"  // median_ms, measure_ceilings

namespace hetdro::bench {

// The program's CUDA backend, or nullptr with the reason.
inline Backend<float>* cuda_backend(std::string* why_not) {
  static std::string reason;
  static std::unique_ptr<Backend<float>> backend = make_cuda_backend(&reason);
  if (!backend) *why_not = reason;
  return backend.get();
}

// Measured on first use, once per program.
inline const cuda::Ceilings& ceilings() {
  static const cuda::Ceilings c = cuda::measure_ceilings();
  return c;
}

inline Buffer<float> device_inputs(Memory& memory, size_t count, uint64_t seed) {
  Buffer<float> b(memory, int64_t(count));
  b.upload(uniform_inputs<float>(count, seed));
  return b;
}

// What one call of the op does: floating-point operations and bytes moved to or from memory
// (every operand read once, every output written once; += outputs read and written).
struct Work {
  double flops = 0, bytes = 0;
};

// Times `fn` (which enqueues on the context's stream) with CUDA events, one call per iteration,
// after a warm-up that also builds any per-shape plan (cuDNN). Counters: the median time, the
// rates and their share of the measured ceilings, and the floor, the time the op would take at
// the ceilings: max(flops / SGEMM rate, bytes / copy rate).
inline void run_timed(benchmark::State& state, const Work& work, const std::function<void()>& fn) {
  const cuda::Ceilings& c = ceilings();
  (void)cuda::median_ms(fn, 3, 1);  // warm-up; the plans and scratch are built here
  std::vector<double> seconds;
  for (auto _ : state) {
    const double s = cuda::median_ms(fn, 0, 1) * 1e-3;
    state.SetIterationTime(s);
    seconds.push_back(s);
  }
  if (seconds.empty()) return;
  std::nth_element(seconds.begin(), seconds.begin() + seconds.size() / 2, seconds.end());
  const double t = seconds[seconds.size() / 2];
  const double floor_s =
      std::max(work.flops / (c.sgemm_tflops * 1e12), work.bytes / (c.copy_gbps * 1e9));
  state.counters["us"] = t * 1e6;
  state.counters["floor_us"] = floor_s * 1e6;
  state.counters["of_floor"] = floor_s / t;  // 1 = at the ceilings
  state.counters["GB/s"] = work.bytes / t / 1e9;
  state.counters["copy_GB/s"] = c.copy_gbps;
  if (work.flops > 0) {
    state.counters["TFLOP/s"] = work.flops / t / 1e12;
    state.counters["sgemm_TFLOP/s"] = c.sgemm_tflops;
  }
  state.SetLabel(c.device);
}

}  // namespace hetdro::bench

// Binds `var` to the CUDA backend (a Backend<float>&), or skips the benchmark saying why.
#define HETDRO_BENCH_CUDA_OR_SKIP(state, var)                                          \
  std::string var##_why_not;                                                           \
  ::hetdro::Backend<float>* var##_ptr = ::hetdro::bench::cuda_backend(&var##_why_not); \
  if (var##_ptr == nullptr) {                                                          \
    state.SkipWithError(("no GPU: " + var##_why_not).c_str());                         \
    return;                                                                            \
  }                                                                                    \
  ::hetdro::Backend<float>& var = *var##_ptr

#endif  // HETDRO_WITH_CUDA
