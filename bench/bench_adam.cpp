// Timing of adam_update: the CPU reference and the CUDA kernel (CUDA events) over the default
// model's 833,866 parameters (hetero-fashion, bench/results/cpu_step.md), a 10^6 stand-in and
// 10^7 and 10^8, in GB/s against the device's copy ceiling (7 floats moved per parameter).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // gpu, device_filled, time_gpu
#include "hetdro/ops.h"

namespace {

using hetdro::bench::uniform_inputs;

constexpr int64_t kModelParameters = 833866;

void BM_adam_cpu(benchmark::State& state) {
  const int64_t count = state.range(0);
  auto p = uniform_inputs<float>(size_t(count), 1);
  std::vector<float> m(size_t(count), 0.0f), v(size_t(count), 0.0f);
  const auto g = uniform_inputs<float>(size_t(count), 2);
  int64_t step = 0;
  for (auto _ : state) {
    hetdro::cpu::adam_update(p.data(), m.data(), v.data(), g.data(), count, 1e-3f, 0.9f, 0.999f,
                             1e-8f, 0.0f, &step, nullptr);
    ++step;
    benchmark::DoNotOptimize(p.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] =
      benchmark::Counter(28.0 * double(count), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}
BENCHMARK(BM_adam_cpu)->Arg(kModelParameters)->Unit(benchmark::kMicrosecond);

void BM_adam_gpu(benchmark::State& state) {
#ifdef HETDRO_WITH_CUDA
  hetdro::Backend<float>* be = hetdro::bench::gpu(state);
  if (!be) return;
  const int64_t count = state.range(0);
  const bool decay = state.range(1) != 0;
  using hetdro::bench::device_filled;
  auto p = device_filled(*be, count, uniform_inputs<float>(1 << 20, 1));
  auto g = device_filled(*be, count, uniform_inputs<float>(1 << 20, 2));
  hetdro::Buffer<float> m(*be, count), v(*be, count);
  m.zero();
  v.zero();
  auto status = device_filled(*be, 2, std::vector<int64_t>{-1, -1});
  // The step only sets the bias corrections, which the kernel folds once per block: a fixed one
  // times the same work.
  auto step = device_filled(*be, 1, std::vector<int64_t>{0});
  hetdro::bench::time_gpu(
      state,
      [&] {
        be->adam_update(p.data(), m.data(), v.data(), g.data(), count, 1e-3f, 0.9f, 0.999f, 1e-8f,
                        decay ? 0.01f : 0.0f, step.data(), status.data());
      },
      28.0 * double(count));  // reads p, m, v, g; writes p, m, v
#else
  state.SkipWithError("no GPU: this build has no CUDA (HETDRO_CUDA=OFF or no nvcc found)");
#endif
}
BENCHMARK(BM_adam_gpu)
    ->Args({kModelParameters, 0})
    ->Args({kModelParameters, 1})
    ->Args({1000000, 0})
    ->Args({10000000, 0})
    ->Args({100000000, 0})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
