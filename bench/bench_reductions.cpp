// Timing of the step's small reductions on the GPU (CUDA events): sum_scaled, all_zero,
// check_finite, accumulate, groupdro_commit and argmax_rows at the default step's sizes
// (160 anchor-sample losses, 70·64 latents of the largest group, 833,866 gradients, a few dozen
// statistics, 3 groups, 10,000 test rows × 10 classes) and at 10^8 elements, in GB/s against the
// device's copy ceiling. Most are latency-bound at the step's sizes: their time there is the
// launch, which a CUDA Graph amortises.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // gpu, device_filled, time_gpu
#include "hetdro/ops.h"

namespace {

using hetdro::bench::uniform_inputs;

#ifdef HETDRO_WITH_CUDA
#define HETDRO_GPU_OR_SKIP(be)                            \
  hetdro::Backend<float>* be = hetdro::bench::gpu(state); \
  if (!be) return
#else
#define HETDRO_GPU_OR_SKIP(be)                                                              \
  state.SkipWithError("no GPU: this build has no CUDA (HETDRO_CUDA=OFF or no nvcc found)"); \
  return
#endif

enum Op { kSumScaled, kAllZero, kCheckFinite };

// One reduction over `count` floats (all finite and nonzero: every element is read).
void BM_reduce_gpu(benchmark::State& state) {
  HETDRO_GPU_OR_SKIP(be);
#ifdef HETDRO_WITH_CUDA
  const Op op = Op(state.range(0));
  const int64_t count = state.range(1);
  auto x = hetdro::bench::device_filled(*be, count, uniform_inputs<float>(1 << 20, 1, 0.5f, 1.0f));
  auto stats = hetdro::bench::device_filled(*be, 32, std::vector<double>(32, 1.0));
  auto status = hetdro::bench::device_filled(*be, 2, std::vector<int64_t>{-1, -1});
  auto step = hetdro::bench::device_filled(*be, 1, std::vector<int64_t>{0});
  hetdro::Buffer<double> out(*be, 1);
  hetdro::bench::time_gpu(
      state,
      [&] {
        if (op == kSumScaled)
          be->sum_scaled(out.data(), x.data(), count, 1.0 / double(count));
        else if (op == kAllZero)
          be->all_zero(out.data(), x.data(), count);
        else
          be->check_finite(status.data(), stats.data(), 32, x.data(), count, step.data());
      },
      4.0 * double(count));
#endif
}
BENCHMARK(BM_reduce_gpu)
    ->ArgNames({"op", "count"})
    ->Args({kSumScaled, 160})
    ->Args({kSumScaled, 100000000})
    ->Args({kAllZero, 70 * 64})
    ->Args({kAllZero, 100000000})
    ->Args({kCheckFinite, 833866})
    ->Args({kCheckFinite, 100000000})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

// accumulate (op 0) and groupdro_commit (op 1) under a clear status.
void BM_window_gpu(benchmark::State& state) {
  HETDRO_GPU_OR_SKIP(be);
#ifdef HETDRO_WITH_CUDA
  const bool commit = state.range(0) != 0;
  const int count = int(state.range(1));
  auto sum = hetdro::bench::device_filled(*be, count, std::vector<double>(count, 0.0));
  auto x = hetdro::bench::device_filled(*be, count, std::vector<double>(count, 1.0));
  auto status = hetdro::bench::device_filled(*be, 2, std::vector<int64_t>{-1, -1});
  hetdro::bench::time_gpu(
      state,
      [&] {
        if (commit)
          be->groupdro_commit(sum.data(), x.data(), count, status.data());
        else
          be->accumulate(sum.data(), x.data(), count, status.data());
      },
      (commit ? 16.0 : 24.0) * count);
#endif
}
BENCHMARK(BM_window_gpu)
    ->ArgNames({"commit", "count"})
    ->Args({0, 32})
    ->Args({1, 3})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

void BM_argmax_rows_gpu(benchmark::State& state) {
  HETDRO_GPU_OR_SKIP(be);
#ifdef HETDRO_WITH_CUDA
  const int n = int(state.range(0)), cols = int(state.range(1));
  auto x = hetdro::bench::device_filled(*be, int64_t(n) * cols, uniform_inputs<float>(1 << 20, 1));
  hetdro::Buffer<int32_t> out(*be, n);
  hetdro::bench::time_gpu(
      state, [&] { be->argmax_rows(out.data(), x.data(), n, cols); },
      4.0 * double(n) * cols + 4.0 * n);
#endif
}
BENCHMARK(BM_argmax_rows_gpu)
    ->Args({10000, 10})
    ->Args({1000000, 10})
    ->Args({1000000, 1000})
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
