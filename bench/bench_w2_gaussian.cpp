// Timing of the fit's CPU reference: w2_gaussian forward+backward (two k×k eigensolves per
// pair) and class_moments, at the sizes of one training step (B = 100, k = 64, C = 10 classes,
// 30 slots per_group with 3 groups).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "hetdro/ops.h"

namespace {

namespace cpu = hetdro::cpu;
using hetdro::bench::uniform_inputs;

// Sample covariances of n = 10 latents: rank 9 + eps·I, as Ŝ is in training.
std::vector<float> class_like_covariances(int pairs, int k, float eps) {
  const int n = 10;
  const auto z = uniform_inputs<float>(size_t(pairs) * n * k, 1);
  std::vector<int32_t> slot(size_t(pairs) * n);
  for (size_t i = 0; i < slot.size(); ++i) slot[i] = int32_t(i / n);
  std::vector<float> mean(size_t(pairs) * k), cov(size_t(pairs) * k * k);
  std::vector<int32_t> count(pairs);
  cpu::class_moments_forward(mean.data(), cov.data(), count.data(), z.data(), slot.data(),
                             int(slot.size()), k, pairs, eps);
  return cov;
}

template <bool kBackward>
void BM_w2_gaussian(benchmark::State& state) {
  const int pairs = int(state.range(0)), k = 64;
  const float eps = 1e-5f;
  const auto A = class_like_covariances(pairs, k, eps);
  std::vector<float> B(size_t(pairs) * k * k, 0.0f);  // anchors at init: L = I
  for (int p = 0; p < pairs; ++p)
    for (int i = 0; i < k; ++i) B[size_t(p) * k * k + i * k + i] = 1.0f + eps;
  const auto m1 = uniform_inputs<float>(size_t(pairs) * k, 2);
  const auto m2 = uniform_inputs<float>(size_t(pairs) * k, 3);
  const std::vector<float> dw2(pairs, 1.0f);
  std::vector<float> w2(pairs), saved(size_t(pairs) * hetdro::w2_gaussian_saved_size(k));
  std::vector<float> dm1(m1.size()), dA(A.size()), dm2(m2.size()), dB(B.size());
  for (auto _ : state) {
    cpu::w2_gaussian_forward(w2.data(), saved.data(), m1.data(), A.data(), m2.data(), B.data(),
                             pairs, k, eps);
    if (kBackward)
      cpu::w2_gaussian_backward(dm1.data(), dA.data(), dm2.data(), dB.data(), dw2.data(),
                                saved.data(), m1.data(), A.data(), m2.data(), B.data(), pairs, k,
                                eps);
    benchmark::DoNotOptimize(w2.data());
    benchmark::DoNotOptimize(dA.data());
    benchmark::ClobberMemory();
  }
  state.counters["pairs/s"] =
      benchmark::Counter(double(pairs), benchmark::Counter::kIsIterationInvariantRate);
}
void BM_w2_gaussian_forward_backward(benchmark::State& state) { BM_w2_gaussian<true>(state); }
void BM_w2_gaussian_forward(benchmark::State& state) { BM_w2_gaussian<false>(state); }
BENCHMARK(BM_w2_gaussian_forward_backward)->Arg(10)->Arg(30)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_w2_gaussian_forward)->Arg(10)->Arg(30)->Unit(benchmark::kMicrosecond);

void BM_class_moments_forward_backward(benchmark::State& state) {
  const int n = 100, k = 64, slots = int(state.range(0));
  const float eps = 1e-5f;
  const auto z = uniform_inputs<float>(size_t(n) * k, 4);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i * 7) % slots;
  const auto dmean = uniform_inputs<float>(size_t(slots) * k, 5);
  const auto dcov = uniform_inputs<float>(size_t(slots) * k * k, 6);
  std::vector<float> mean(size_t(slots) * k), cov(size_t(slots) * k * k), dz(z.size());
  std::vector<int32_t> count(slots);
  for (auto _ : state) {
    cpu::class_moments_forward(mean.data(), cov.data(), count.data(), z.data(), slot.data(), n, k,
                               slots, eps);
    cpu::class_moments_backward(dz.data(), dmean.data(), dcov.data(), z.data(), mean.data(),
                                count.data(), slot.data(), n, k, slots);
    benchmark::DoNotOptimize(dz.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_class_moments_forward_backward)->Arg(10)->Unit(benchmark::kMicrosecond);

void BM_class_moments_forward(benchmark::State& state) {
  const int n = 100, k = 64, slots = int(state.range(0));
  const auto z = uniform_inputs<float>(size_t(n) * k, 4);
  std::vector<int32_t> slot(n);
  for (int i = 0; i < n; ++i) slot[i] = (i * 7) % slots;
  std::vector<float> mean(size_t(slots) * k), cov(size_t(slots) * k * k);
  std::vector<int32_t> count(slots);
  for (auto _ : state) {
    cpu::class_moments_forward(mean.data(), cov.data(), count.data(), z.data(), slot.data(), n, k,
                               slots, 1e-5f);
    benchmark::DoNotOptimize(cov.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_class_moments_forward)->Arg(10)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
