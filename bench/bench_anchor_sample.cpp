// Timing of the anchor ops at the step's sizes (docs/DESIGN.md §1, §2): anchor_sample (C = 10
// classes, J = 16 samples, k = 64) and anchor_cov (C = 10, and G·C = 30 as per_group repeats
// them), forward and backward, on the CPU reference and on the GPU. Bytes: every tensor read or
// written once; FLOPs: 2·C·J·k² for the samples, 2·C·k³ for L Lᵀ.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // gpu, time_gpu
#include "hetdro/ops.h"

namespace {

namespace cpu = hetdro::cpu;
using hetdro::bench::uniform_inputs;
constexpr int kClasses = 10, kJ = 16, kLatent = 64;

void BM_anchor_sample_cpu(benchmark::State& state) {
  const int C = kClasses, J = kJ, k = kLatent;
  const auto mean = uniform_inputs<float>(size_t(C) * k, 1);
  const auto chol = uniform_inputs<float>(size_t(C) * k * k, 2);
  std::vector<float> z(size_t(C) * J * k), xi(z.size()), dm(mean.size()), dl(chol.size());
  int64_t step = 0;
  for (auto _ : state) {
    cpu::anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), C, J, k, 42, &step);
    ++step;
    cpu::anchor_sample_backward(dm.data(), dl.data(), z.data(), xi.data(), C, J, k);
    benchmark::DoNotOptimize(dl.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_anchor_sample_cpu)->Unit(benchmark::kMicrosecond);

#ifdef HETDRO_WITH_CUDA
using hetdro::Buffer;
using hetdro::bench::gpu;
using hetdro::bench::time_gpu;

template <bool kBackward>
void BM_anchor_sample_gpu(benchmark::State& state) {
  auto* be = gpu(state);
  if (!be) return;
  const int C = kClasses, J = kJ, k = kLatent;
  Buffer<float> mean(*be, int64_t(C) * k), chol(*be, int64_t(C) * k * k),
      z(*be, int64_t(C) * J * k), xi(*be, int64_t(C) * J * k), dm(*be, int64_t(C) * k),
      dl(*be, int64_t(C) * k * k);
  mean.upload(uniform_inputs<float>(size_t(C) * k, 1));
  chol.upload(uniform_inputs<float>(size_t(C) * k * k, 2));
  dm.zero();
  dl.zero();
  Buffer<int64_t> step(*be, 1);
  step.zero();
  be->anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), C, J, k, 42,
                            step.data());
  const double zb = 4.0 * C * J * k, lb = 4.0 * C * k * k, mb = 4.0 * C * k;
  const double flops = 2.0 * C * J * k * k;
  if (kBackward)
    time_gpu(
        state,
        [&] { be->anchor_sample_backward(dm.data(), dl.data(), z.data(), xi.data(), C, J, k); },
        2 * zb + 2 * lb + 2 * mb, flops);
  else
    time_gpu(
        state,
        [&] {
          be->anchor_sample_forward(z.data(), xi.data(), mean.data(), chol.data(), C, J, k, 42,
                                    step.data());
        },
        2 * zb + lb + mb, flops);
}
void BM_anchor_sample_forward_gpu(benchmark::State& s) { BM_anchor_sample_gpu<false>(s); }
void BM_anchor_sample_backward_gpu(benchmark::State& s) { BM_anchor_sample_gpu<true>(s); }
BENCHMARK(BM_anchor_sample_forward_gpu)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_anchor_sample_backward_gpu)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);

template <bool kBackward>
void BM_anchor_cov_gpu(benchmark::State& state) {
  auto* be = gpu(state);
  if (!be) return;
  const int C = int(state.range(0)), k = kLatent;
  Buffer<float> chol(*be, int64_t(C) * k * k), cov(*be, int64_t(C) * k * k),
      dl(*be, int64_t(C) * k * k);
  chol.upload(uniform_inputs<float>(size_t(C) * k * k, 2));
  dl.zero();
  be->anchor_cov_forward(cov.data(), chol.data(), C, k, 1e-5f);
  const double lb = 4.0 * C * k * k, flops = 2.0 * C * k * k * k;
  if (kBackward)
    time_gpu(
        state, [&] { be->anchor_cov_backward(dl.data(), cov.data(), chol.data(), C, k); }, 4 * lb,
        flops);
  else
    time_gpu(
        state, [&] { be->anchor_cov_forward(cov.data(), chol.data(), C, k, 1e-5f); }, 2 * lb,
        flops);
}
void BM_anchor_cov_forward_gpu(benchmark::State& s) { BM_anchor_cov_gpu<false>(s); }
void BM_anchor_cov_backward_gpu(benchmark::State& s) { BM_anchor_cov_gpu<true>(s); }
BENCHMARK(BM_anchor_cov_forward_gpu)
    ->Arg(10)
    ->Arg(30)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_anchor_cov_backward_gpu)
    ->Arg(10)
    ->Arg(30)
    ->UseManualTime()
    ->Iterations(3)
    ->Unit(benchmark::kMicrosecond);
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
