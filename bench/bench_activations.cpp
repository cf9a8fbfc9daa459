// sigmoid and ReLU, forward and backward: the encoder's sigmoid after the pool (full28: 70·64·
// 12·12 elements), proj64's ReLU (5·128), and a 64 Mi-element array where bandwidth, not launch
// latency, decides. The CPU reference, and in CUDA builds the kernels (kernels/activations.cu)
// timed with CUDA events, GB/s against the measured copy ceiling and the floor time.
//   ./build/bench_activations [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // CUDA builds: gpu, time_gpu
#include "hetdro/ops.h"

namespace {

constexpr int64_t kPooled = int64_t(70) * 64 * 12 * 12;
constexpr int64_t kHidden = 5 * 128;
constexpr int64_t kLarge = int64_t(64) << 20;

void BM_cpu_sigmoid_forward(benchmark::State& state, int64_t count) {
  const auto in = hetdro::bench::uniform_inputs<float>(size_t(count), 1, -8.0f, 8.0f);
  std::vector<float> out(static_cast<size_t>(count));
  for (auto _ : state) {
    hetdro::cpu::sigmoid_forward(out.data(), in.data(), count);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * 8 * count);
}

BENCHMARK_CAPTURE(BM_cpu_sigmoid_forward, pooled, kPooled)->UseRealTime();

#ifdef HETDRO_WITH_CUDA

// --- CUDA --------------------------------------------------------------------------------------

// Seeded inputs in device memory.
hetdro::Buffer<float> device_inputs(hetdro::Memory& memory, size_t count, uint64_t seed) {
  hetdro::Buffer<float> b(memory, int64_t(count));
  b.upload(hetdro::bench::uniform_inputs<float>(count, seed));
  return b;
}

enum class Op { sigmoid_forward, sigmoid_backward, relu_forward, relu_backward };

// Forward: in read, out written. Backward: dout and out read, din read and written.
void BM_cuda(benchmark::State& state, Op op, int64_t count) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto a = device_inputs(be, size_t(count), 1);
  auto b = device_inputs(be, size_t(count), 2);
  auto c = device_inputs(be, size_t(count), 3);
  const bool forward = op == Op::sigmoid_forward || op == Op::relu_forward;
  const double bytes = (forward ? 8.0 : 16.0) * double(count);
  hetdro::bench::time_gpu(
      state,
      [&] {
        switch (op) {
          case Op::sigmoid_forward:
            be.sigmoid_forward(b.data(), a.data(), count);
            break;
          case Op::sigmoid_backward:
            be.sigmoid_backward(c.data(), b.data(), a.data(), count);
            break;
          case Op::relu_forward:
            be.relu_forward(b.data(), a.data(), count);
            break;
          case Op::relu_backward:
            be.relu_backward(c.data(), b.data(), a.data(), count);
            break;
        }
      },
      bytes, 0);
}

BENCHMARK_CAPTURE(BM_cuda, sigmoid_forward_pooled, Op::sigmoid_forward, kPooled)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, sigmoid_backward_pooled, Op::sigmoid_backward, kPooled)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, relu_forward_hidden, Op::relu_forward, kHidden)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, relu_backward_hidden, Op::relu_backward, kHidden)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, sigmoid_forward_large, Op::sigmoid_forward, kLarge)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, sigmoid_backward_large, Op::sigmoid_backward, kLarge)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, relu_forward_large, Op::relu_forward, kLarge)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda, relu_backward_large, Op::relu_backward, kLarge)->UseManualTime();
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
