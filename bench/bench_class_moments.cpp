// Timing of class_moments (docs/DESIGN.md §1, §2): the CPU reference at the step's size, and on
// the GPU the forward and backward over B ∈ {100, 10^4, 10^6} samples, k ∈ {32, 64, 128, 256},
// C ∈ {10, 100, 1000} slots. Combinations with fewer than 10 samples per slot (B = 100 with
// C ≥ 100) are left out: nearly every slot would be masked. Bytes: z read twice (the mean
// pass, then the centred pass), slot, mean and cov written; FLOPs 2·B·k² (the covariance).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // gpu, time_gpu
#include "hetdro/ops.h"

namespace {

namespace cpu = hetdro::cpu;
using hetdro::bench::uniform_inputs;

std::vector<int32_t> cyclic_slots(int n, int slots) {
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = int32_t((int64_t(i) * 7) % slots);
  return slot;
}

void BM_class_moments_forward_cpu(benchmark::State& state) {
  const int n = int(state.range(0)), k = int(state.range(1)), slots = int(state.range(2));
  const auto z = uniform_inputs<float>(size_t(n) * k, 4);
  const auto slot = cyclic_slots(n, slots);
  std::vector<float> mean(size_t(slots) * k), cov(size_t(slots) * k * k);
  std::vector<int32_t> count(slots);
  for (auto _ : state) {
    cpu::class_moments_forward(mean.data(), cov.data(), count.data(), z.data(), slot.data(), n, k,
                               slots, 1e-5f);
    benchmark::DoNotOptimize(cov.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_class_moments_forward_cpu)
    ->Args({100, 64, 10})
    ->Args({10000, 64, 10})
    ->Unit(benchmark::kMicrosecond);

#ifdef HETDRO_WITH_CUDA
using hetdro::Buffer;
using hetdro::bench::gpu;
using hetdro::bench::time_gpu;

template <bool kBackward>
void BM_class_moments_gpu(benchmark::State& state) {
  auto* be = gpu(state);
  if (!be) return;
  const int n = int(state.range(0)), k = int(state.range(1)), slots = int(state.range(2));
  Buffer<float> z(*be, int64_t(n) * k), mean(*be, int64_t(slots) * k),
      cov(*be, int64_t(slots) * k * k), dz(*be, int64_t(n) * k);
  Buffer<int32_t> slot(*be, n), count(*be, slots);
  z.upload(uniform_inputs<float>(size_t(n) * k, 4));
  slot.upload(cyclic_slots(n, slots));
  dz.zero();
  be->class_moments_forward(mean.data(), cov.data(), count.data(), z.data(), slot.data(), n, k,
                            slots, 1e-5f);
  const double zb = 4.0 * n * k, covb = 4.0 * slots * k * k, flops = 2.0 * n * k * k;
  if (kBackward) {
    // dcov: the forward's cov stands in; z and dz read, dz written, dcov read.
    time_gpu(
        state,
        [&] {
          be->class_moments_backward(dz.data(), mean.data(), cov.data(), z.data(), mean.data(),
                                     count.data(), slot.data(), n, k, slots);
        },
        3 * zb + covb + 4.0 * n, flops);
  } else {
    time_gpu(
        state,
        [&] {
          be->class_moments_forward(mean.data(), cov.data(), count.data(), z.data(), slot.data(), n,
                                    k, slots, 1e-5f);
        },
        2 * zb + covb + 4.0 * n, flops);
  }
}

void sizes(benchmark::internal::Benchmark* b) {
  for (int n : {100, 10000, 1000000})
    for (int k : {32, 64, 128, 256})
      for (int slots : {10, 100, 1000})
        if (n >= 10 * slots) b->Args({n, k, slots});
}
void BM_class_moments_forward_gpu(benchmark::State& s) { BM_class_moments_gpu<false>(s); }
void BM_class_moments_backward_gpu(benchmark::State& s) { BM_class_moments_gpu<true>(s); }
BENCHMARK(BM_class_moments_forward_gpu)
    ->Apply(sizes)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_class_moments_backward_gpu)
    ->Apply(sizes)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
