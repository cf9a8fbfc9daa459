// linear forward and backward at the default model's layers (docs/DESIGN.md §1, §5; batch 100 =
// 70 + 25 + 5): the cnn heads, proj64's MLP and the classifier. The CPU reference (Eigen), and in
// CUDA builds the cuBLAS kernel (kernels/linear.cu) timed with CUDA events, with TFLOP/s and GB/s
// against the measured SGEMM and copy ceilings and the floor time.
//   ./build/bench_linear [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // CUDA builds: gpu, time_gpu
#include "hetdro/ops.h"

namespace {

struct Dims {
  int n, in, out;
  double macs() const { return double(n) * in * out; }
  double in_bytes() const { return 4.0 * n * in; }
  double w_bytes() const { return 4.0 * in * out; }
  double out_bytes() const { return 4.0 * n * out; }
};
constexpr Dims kFull28Head{70, 9216, 64};  // 64·12·12 pooled features -> latent 64
constexpr Dims kLow16Head{25, 2304, 64};   // 64·6·6
constexpr Dims kProj64Hidden{5, 64, 128};
constexpr Dims kClassifier{100, 64, 10};
constexpr Dims kClassifierAnchors{160, 64, 10};  // 10 classes · 16 anchor samples

void BM_cpu_forward(benchmark::State& state, Dims d) {
  const auto in = hetdro::bench::uniform_inputs<float>(size_t(d.n) * d.in, 1);
  const auto wt = hetdro::bench::uniform_inputs<float>(size_t(d.out) * d.in, 2);
  const auto b = hetdro::bench::uniform_inputs<float>(size_t(d.out), 3);
  std::vector<float> out(size_t(d.n) * d.out);
  for (auto _ : state) {
    hetdro::cpu::linear_forward(out.data(), in.data(), wt.data(), b.data(), d.n, d.in, d.out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetItemsProcessed(state.iterations() * d.n);
}

void BM_cpu_backward(benchmark::State& state, Dims d) {
  const auto in = hetdro::bench::uniform_inputs<float>(size_t(d.n) * d.in, 1);
  const auto wt = hetdro::bench::uniform_inputs<float>(size_t(d.out) * d.in, 2);
  const auto dout = hetdro::bench::uniform_inputs<float>(size_t(d.n) * d.out, 3);
  std::vector<float> din(in.size()), dwt(wt.size()), db(size_t(d.out));
  for (auto _ : state) {
    hetdro::cpu::linear_backward(din.data(), dwt.data(), db.data(), dout.data(), in.data(),
                                 wt.data(), d.n, d.in, d.out);
    benchmark::DoNotOptimize(dwt.data());
  }
  state.SetItemsProcessed(state.iterations() * d.n);
}

BENCHMARK_CAPTURE(BM_cpu_forward, full28_head, kFull28Head)->UseRealTime();
BENCHMARK_CAPTURE(BM_cpu_backward, full28_head, kFull28Head)->UseRealTime();
BENCHMARK_CAPTURE(BM_cpu_forward, classifier, kClassifier)->UseRealTime();
BENCHMARK_CAPTURE(BM_cpu_backward, classifier, kClassifier)->UseRealTime();

#ifdef HETDRO_WITH_CUDA

// --- CUDA (cuBLAS) -----------------------------------------------------------------------------

// Seeded inputs in device memory.
hetdro::Buffer<float> device_inputs(hetdro::Memory& memory, size_t count, uint64_t seed) {
  hetdro::Buffer<float> b(memory, int64_t(count));
  b.upload(hetdro::bench::uniform_inputs<float>(count, seed));
  return b;
}

void BM_cuda_forward(benchmark::State& state, Dims d) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, size_t(d.n) * d.in, 1);
  auto wt = device_inputs(be, size_t(d.out) * d.in, 2);
  auto b = device_inputs(be, size_t(d.out), 3);
  hetdro::Buffer<float> out(be, int64_t(d.n) * d.out);
  // in and W read; out written by the bias broadcast, then read and written by the GEMM.
  const double flops = 2 * d.macs(), bytes = d.in_bytes() + d.w_bytes() + 3 * d.out_bytes();
  hetdro::bench::time_gpu(
      state,
      [&] { be.linear_forward(out.data(), in.data(), wt.data(), b.data(), d.n, d.in, d.out); },
      bytes, flops);
  state.SetItemsProcessed(state.iterations() * d.n);
}

// All three gradients, as for every layer but the first.
void BM_cuda_backward(benchmark::State& state, Dims d) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, size_t(d.n) * d.in, 1);
  auto wt = device_inputs(be, size_t(d.out) * d.in, 2);
  auto dout = device_inputs(be, size_t(d.n) * d.out, 3);
  auto din = device_inputs(be, size_t(d.n) * d.in, 4);
  auto dwt = device_inputs(be, size_t(d.out) * d.in, 5);
  auto db = device_inputs(be, size_t(d.out), 6);
  // Two GEMMs of the forward's size; dout read three times, in and W once, din and dW += (read
  // and written).
  const double flops = 4 * d.macs(), bytes = 3 * d.out_bytes() + 3 * d.in_bytes() + 3 * d.w_bytes();
  hetdro::bench::time_gpu(
      state,
      [&] {
        be.linear_backward(din.data(), dwt.data(), db.data(), dout.data(), in.data(), wt.data(),
                           d.n, d.in, d.out);
      },
      bytes, flops);
  state.SetItemsProcessed(state.iterations() * d.n);
}

BENCHMARK_CAPTURE(BM_cuda_forward, full28_head, kFull28Head)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, full28_head, kFull28Head)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, low16_head, kLow16Head)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, low16_head, kLow16Head)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, proj64_hidden, kProj64Hidden)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, proj64_hidden, kProj64Hidden)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, classifier, kClassifier)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, classifier, kClassifier)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, classifier_anchors, kClassifierAnchors)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, classifier_anchors, kClassifierAnchors)->UseManualTime();
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
