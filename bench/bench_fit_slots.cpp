// Timing of the fit's small ops at the step's sizes (docs/DESIGN.md §6): fit_slots (B = 100,
// per_group with C = 10, G = 3), fit_reduce over 30 slots, and repeat of the anchors' covariances
// (C = 10, k = 64, G = 3 copies), forward and backward, on the GPU; all latency-bound, so the
// time against a few microseconds of launch is what matters, not GB/s.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // gpu, time_gpu
#include "hetdro/ops.h"

namespace {

namespace cpu = hetdro::cpu;

void BM_fit_reduce_cpu(benchmark::State& state) {
  const int slots = 30;
  std::vector<int32_t> count(slots);
  for (int s = 0; s < slots; ++s) count[s] = s % 4;
  const auto w2 = hetdro::bench::uniform_inputs<float>(slots, 1);
  std::vector<float> dw2(slots);
  std::vector<double> out(3);
  for (auto _ : state) {
    cpu::fit_reduce(out.data(), dw2.data(), w2.data(), count.data(), slots, 1e-3f);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_fit_reduce_cpu);

#ifdef HETDRO_WITH_CUDA
using hetdro::Buffer;
using hetdro::bench::gpu;
using hetdro::bench::time_gpu;

void BM_fit_slots_gpu(benchmark::State& state) {
  auto* be = gpu(state);
  if (!be) return;
  const int n = 100, C = 10;
  Buffer<int32_t> labels(*be, n), group(*be, n), slot(*be, n);
  labels.zero();
  group.zero();
  time_gpu(
      state, [&] { be->fit_slots(slot.data(), labels.data(), group.data(), n, C); }, 12.0 * n, 0);
}
BENCHMARK(BM_fit_slots_gpu)->UseManualTime()->Iterations(3)->Unit(benchmark::kMicrosecond);

void BM_fit_reduce_gpu(benchmark::State& state) {
  auto* be = gpu(state);
  if (!be) return;
  const int slots = int(state.range(0));
  Buffer<int32_t> count(*be, slots);
  Buffer<float> w2(*be, slots), dw2(*be, slots);
  Buffer<double> out(*be, 3);
  count.zero();
  w2.zero();
  time_gpu(
      state, [&] { be->fit_reduce(out.data(), dw2.data(), w2.data(), count.data(), slots, 1e-3f); },
      12.0 * slots + 24, 0);
}
BENCHMARK(BM_fit_reduce_gpu)
    ->Arg(30)
    ->Arg(3000)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);

template <bool kBackward>
void BM_repeat_gpu(benchmark::State& state) {
  auto* be = gpu(state);
  if (!be) return;
  const int64_t size = 10 * 64 * 64;
  const int times = 3;
  Buffer<float> in(*be, size), out(*be, size * times);
  in.zero();
  out.zero();
  if (kBackward)
    time_gpu(
        state, [&] { be->repeat_backward(in.data(), out.data(), size, times); },
        4.0 * size * (times + 2), double(size) * times);
  else
    time_gpu(
        state, [&] { be->repeat_forward(out.data(), in.data(), size, times); },
        4.0 * size * (times + 1), 0);
}
void BM_repeat_forward_gpu(benchmark::State& s) { BM_repeat_gpu<false>(s); }
void BM_repeat_backward_gpu(benchmark::State& s) { BM_repeat_gpu<true>(s); }
BENCHMARK(BM_repeat_forward_gpu)->UseManualTime()->Iterations(3)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_repeat_backward_gpu)->UseManualTime()->Iterations(3)->Unit(benchmark::kMicrosecond);
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
