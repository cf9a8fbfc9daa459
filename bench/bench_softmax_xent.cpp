// Timing of softmax_xent and clf_objective: the CPU reference at one training step's sizes
// (B = 100, 10 classes, 3 groups), and the CUDA kernels (CUDA events) there and at n = 10^4..10^6
// rows × 10..1000 classes, in GB/s against the device's copy ceiling. The GPU benchmarks skip
// with the reason where there is no GPU.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // gpu, device_filled, time_gpu
#include "hetdro/ops.h"

namespace {

namespace cpu = hetdro::cpu;
using hetdro::bench::uniform_inputs;

std::vector<int32_t> cyclic(int n, int mod) {
  std::vector<int32_t> v(n);
  for (int i = 0; i < n; ++i) v[i] = int32_t((int64_t(i) * 7 + 3) % mod);
  return v;
}

void BM_softmax_xent_cpu(benchmark::State& state) {
  const int n = int(state.range(0)), classes = int(state.range(1)), groups = 3;
  const auto logits = uniform_inputs<float>(size_t(n) * classes, 1, -5.0f, 5.0f);
  const auto labels = cyclic(n, classes), group = cyclic(n, groups);
  const auto weight = uniform_inputs<float>(n, 2, 0.0f, 0.02f);
  std::vector<float> probs(logits.size()), loss(n), gsum(groups), dlogits(logits.size());
  for (auto _ : state) {
    cpu::softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), labels.data(),
                              group.data(), n, classes, groups);
    cpu::softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), weight.data(), n,
                               classes);
    benchmark::DoNotOptimize(dlogits.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_softmax_xent_cpu)->Args({100, 10})->Unit(benchmark::kMicrosecond);

void BM_clf_objective_cpu(benchmark::State& state) {
  const int n = 100, groups = 3;
  const std::vector<int32_t> count = {70, 25, 5};
  std::vector<int32_t> group(n);
  for (int i = 0; i < n; ++i) group[i] = i < 70 ? 0 : i < 95 ? 1 : 2;
  const std::vector<float> sums = {70 * 0.5f, 25 * 0.7f, 5 * 0.9f};
  std::vector<double> q(groups, 1.0 / 3), q_next(groups), group_loss(groups), clf(1);
  std::vector<float> weight(n);
  hetdro::ClfRule rule;
  rule.groupdro = rule.update_q = true;
  for (auto _ : state) {
    cpu::clf_objective(clf.data(), group_loss.data(), q_next.data(), weight.data(), q.data(),
                       sums.data(), count.data(), group.data(), nullptr, n, groups, rule);
    benchmark::DoNotOptimize(weight.data());
    benchmark::ClobberMemory();
  }
}
BENCHMARK(BM_clf_objective_cpu)->Unit(benchmark::kMicrosecond);

// The GPU forward (with per-group sums) or backward at n rows × classes.
template <bool kBackward>
void BM_softmax_xent_gpu(benchmark::State& state) {
#ifdef HETDRO_WITH_CUDA
  hetdro::Backend<float>* be = hetdro::bench::gpu(state);
  if (!be) return;
  const int n = int(state.range(0)), classes = int(state.range(1)), groups = 3;
  const int64_t elements = int64_t(n) * classes;
  using hetdro::bench::device_filled;
  auto logits = device_filled(*be, elements, uniform_inputs<float>(1 << 20, 1, -5.0f, 5.0f));
  auto labels = device_filled(*be, n, cyclic(1 << 16, classes));
  auto group = device_filled(*be, n, cyclic(1 << 16, groups));
  auto weight = device_filled(*be, n, uniform_inputs<float>(1 << 16, 2, 0.0f, 0.01f));
  hetdro::Buffer<float> probs(*be, elements), loss(*be, n), gsum(*be, groups);
  hetdro::Buffer<float> dlogits(*be, kBackward ? elements : 1);
  be->softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(), labels.data(),
                           group.data(), n, classes, groups);
  if (kBackward) dlogits.zero();
  // Bytes the op must move: forward reads logits, labels, groups and writes probs and the loss;
  // the backward reads probs, labels, weights and reads and writes dlogits.
  const double bytes =
      kBackward ? 12.0 * double(elements) + 8.0 * n : 8.0 * double(elements) + 12.0 * n;
  hetdro::bench::time_gpu(
      state,
      [&] {
        if (kBackward)
          be->softmax_xent_backward(dlogits.data(), probs.data(), labels.data(), weight.data(), n,
                                    classes);
        else
          be->softmax_xent_forward(probs.data(), loss.data(), gsum.data(), logits.data(),
                                   labels.data(), group.data(), n, classes, groups);
      },
      bytes);
#else
  state.SkipWithError("no GPU: this build has no CUDA (HETDRO_CUDA=OFF or no nvcc found)");
#endif
}
void BM_softmax_xent_forward_gpu(benchmark::State& state) { BM_softmax_xent_gpu<false>(state); }
void BM_softmax_xent_backward_gpu(benchmark::State& state) { BM_softmax_xent_gpu<true>(state); }

void gpu_shapes(benchmark::internal::Benchmark* b) {
  b->Args({100, 10});  // the default step: B = 100, 10 classes, 3 groups
  for (int n : {10000, 100000, 1000000})
    for (int classes : {10, 100, 1000}) b->Args({n, classes});
  b->UseManualTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK(BM_softmax_xent_forward_gpu)->Apply(gpu_shapes);
BENCHMARK(BM_softmax_xent_backward_gpu)->Apply(gpu_shapes);

void BM_clf_objective_gpu(benchmark::State& state) {
#ifdef HETDRO_WITH_CUDA
  hetdro::Backend<float>* be = hetdro::bench::gpu(state);
  if (!be) return;
  const int n = 100, groups = 3;
  std::vector<int32_t> host_group(n);
  for (int i = 0; i < n; ++i) host_group[i] = i < 70 ? 0 : i < 95 ? 1 : 2;
  using hetdro::bench::device_filled;
  auto count = device_filled(*be, groups, std::vector<int32_t>{70, 25, 5});
  auto group = device_filled(*be, n, host_group);
  auto sums = device_filled(*be, groups, std::vector<float>{70 * 0.5f, 25 * 0.7f, 5 * 0.9f});
  auto q = device_filled(*be, groups, std::vector<double>(groups, 1.0 / 3));
  hetdro::Buffer<double> q_next(*be, groups), group_loss(*be, groups), clf(*be, 1);
  hetdro::Buffer<float> weight(*be, n);
  hetdro::ClfRule rule;
  rule.groupdro = rule.update_q = true;
  // Latency-bound: a few hundred bytes; the GB/s counter is for the record only.
  hetdro::bench::time_gpu(
      state,
      [&] {
        be->clf_objective(clf.data(), group_loss.data(), q_next.data(), weight.data(), q.data(),
                          sums.data(), count.data(), group.data(), nullptr, n, groups, rule);
      },
      4.0 * groups + 8.0 * n + 8.0 * 4 * groups);
#else
  state.SkipWithError("no GPU: this build has no CUDA (HETDRO_CUDA=OFF or no nvcc found)");
#endif
}
BENCHMARK(BM_clf_objective_gpu)->UseManualTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
