// maxpool2x2 forward and backward on the default encoders' pools (docs/DESIGN.md §1, §5: 64
// channels of 24x24 for full28 at 70 samples, 12x12 for low16 at 25). The CPU reference, and in
// CUDA builds the kernel (kernels/maxpool2x2.cu) timed with CUDA events, GB/s against the
// measured copy ceiling and the floor time; and maxpool2x2_sigmoid, the pool with the encoder's
// sigmoid fused in, next to the pair of ops it replaced (the `pair_*` benchmarks), with the bytes
// the fusion saves as a counter.
//   ./build/bench_maxpool2x2 [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // CUDA builds: gpu, time_gpu
#include "hetdro/ops.h"

namespace {

struct Pool {
  int n, c, h, w;
  size_t in_count() const { return size_t(n) * c * h * w; }
  size_t out_count() const { return size_t(n) * c * (h / 2) * (w / 2); }
};
constexpr Pool kFull28{70, 64, 24, 24}, kLow16{25, 64, 12, 12};

void BM_cpu_forward(benchmark::State& state, Pool p) {
  const auto in = hetdro::bench::uniform_inputs<float>(p.in_count(), 1);
  std::vector<float> out(p.out_count());
  for (auto _ : state) {
    hetdro::cpu::maxpool2x2_forward(out.data(), in.data(), p.n, p.c, p.h, p.w);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * int64_t(4 * (p.in_count() + p.out_count())));
}

void BM_cpu_backward(benchmark::State& state, Pool p) {
  const auto in = hetdro::bench::uniform_inputs<float>(p.in_count(), 1);
  const auto dout = hetdro::bench::uniform_inputs<float>(p.out_count(), 2);
  std::vector<float> din(p.in_count());
  for (auto _ : state) {
    hetdro::cpu::maxpool2x2_backward(din.data(), dout.data(), in.data(), p.n, p.c, p.h, p.w);
    benchmark::DoNotOptimize(din.data());
  }
}

BENCHMARK_CAPTURE(BM_cpu_forward, full28, kFull28)->UseRealTime();
BENCHMARK_CAPTURE(BM_cpu_backward, full28, kFull28)->UseRealTime();

#ifdef HETDRO_WITH_CUDA

// --- CUDA --------------------------------------------------------------------------------------

// Seeded inputs in device memory.
hetdro::Buffer<float> device_inputs(hetdro::Memory& memory, size_t count, uint64_t seed) {
  hetdro::Buffer<float> b(memory, int64_t(count));
  b.upload(hetdro::bench::uniform_inputs<float>(count, seed));
  return b;
}

void BM_cuda_forward(benchmark::State& state, Pool p) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, p.in_count(), 1);
  hetdro::Buffer<float> out(be, int64_t(p.out_count()));
  const double bytes = 4.0 * (p.in_count() + p.out_count());
  hetdro::bench::time_gpu(
      state, [&] { be.maxpool2x2_forward(out.data(), in.data(), p.n, p.c, p.h, p.w); }, bytes, 0);
}

// Reads in and dout; the += touches one din element per window (a quarter of din, read and
// written in 4-byte pieces; counted as such, though the sectors moved are more).
void BM_cuda_backward(benchmark::State& state, Pool p) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, p.in_count(), 1);
  auto dout = device_inputs(be, p.out_count(), 2);
  auto din = device_inputs(be, p.in_count(), 3);
  const double bytes = 4.0 * (p.in_count() + 3 * p.out_count());
  hetdro::bench::time_gpu(
      state,
      [&] { be.maxpool2x2_backward(din.data(), dout.data(), in.data(), p.n, p.c, p.h, p.w); },
      bytes, 0);
}

// --- maxpool2x2_sigmoid against the unfused pair ----------------------------------------------
// Bytes, A = in (the conv output) and P = out (the pooled tensor), 4 bytes each:
//   pair forward:  pool reads A, writes P; sigmoid reads P, writes P         -> A + 3P
//   fused forward: reads A, writes P                                          -> A + P
//   pair backward: zero d_pooled (P); sigmoid_backward reads dout, out, d_pooled and writes
//                  d_pooled (4P); pool backward reads A, d_pooled, din at the argmax and
//                  writes it (A + 3P)                                        -> A + 8P
//   fused backward: reads A, dout, out, din at the argmax and writes it      -> A + 4P
// So a training step saves 6P floats per cnn encoder (2P forward, 4P backward), and the pooled
// buffer itself (P) is gone from the arena.
double pair_forward_bytes(Pool p) { return 4.0 * (p.in_count() + 3 * p.out_count()); }
double fused_forward_bytes(Pool p) { return 4.0 * (p.in_count() + p.out_count()); }
double pair_backward_bytes(Pool p) { return 4.0 * (p.in_count() + 8 * p.out_count()); }
double fused_backward_bytes(Pool p) { return 4.0 * (p.in_count() + 4 * p.out_count()); }

void BM_cuda_pair_forward(benchmark::State& state, Pool p) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, p.in_count(), 1);
  hetdro::Buffer<float> pooled(be, int64_t(p.out_count())), act(be, int64_t(p.out_count()));
  hetdro::bench::time_gpu(
      state,
      [&] {
        be.maxpool2x2_forward(pooled.data(), in.data(), p.n, p.c, p.h, p.w);
        be.sigmoid_forward(act.data(), pooled.data(), int64_t(p.out_count()));
      },
      pair_forward_bytes(p), 0);
}

void BM_cuda_fused_forward(benchmark::State& state, Pool p) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, p.in_count(), 1);
  hetdro::Buffer<float> act(be, int64_t(p.out_count()));
  hetdro::bench::time_gpu(
      state, [&] { be.maxpool2x2_sigmoid_forward(act.data(), in.data(), p.n, p.c, p.h, p.w); },
      fused_forward_bytes(p), 0);
  state.counters["bytes_saved"] = pair_forward_bytes(p) - fused_forward_bytes(p);
}

// As the model runs it: d_pooled zeroed, sigmoid_backward into it, the pool's backward into din.
void BM_cuda_pair_backward(benchmark::State& state, Pool p) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, p.in_count(), 1);
  auto dout = device_inputs(be, p.out_count(), 2);
  auto act = device_inputs(be, p.out_count(), 4);
  auto din = device_inputs(be, p.in_count(), 3);
  hetdro::Buffer<float> d_pooled(be, int64_t(p.out_count()));
  const int64_t count = int64_t(p.out_count());
  hetdro::bench::time_gpu(
      state,
      [&] {
        be.zero(d_pooled.data(), size_t(count) * sizeof(float));
        be.sigmoid_backward(d_pooled.data(), dout.data(), act.data(), count);
        be.maxpool2x2_backward(din.data(), d_pooled.data(), in.data(), p.n, p.c, p.h, p.w);
      },
      pair_backward_bytes(p), 0);
}

void BM_cuda_fused_backward(benchmark::State& state, Pool p) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  auto in = device_inputs(be, p.in_count(), 1);
  auto dout = device_inputs(be, p.out_count(), 2);
  auto act = device_inputs(be, p.out_count(), 4);
  auto din = device_inputs(be, p.in_count(), 3);
  hetdro::bench::time_gpu(
      state,
      [&] {
        be.maxpool2x2_sigmoid_backward(din.data(), dout.data(), act.data(), in.data(), p.n, p.c,
                                       p.h, p.w);
      },
      fused_backward_bytes(p), 0);
  state.counters["bytes_saved"] = pair_backward_bytes(p) - fused_backward_bytes(p);
}

BENCHMARK_CAPTURE(BM_cuda_forward, full28, kFull28)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, full28, kFull28)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, low16, kLow16)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, low16, kLow16)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_pair_forward, full28, kFull28)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_fused_forward, full28, kFull28)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_pair_backward, full28, kFull28)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_fused_backward, full28, kFull28)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_pair_forward, low16, kLow16)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_fused_forward, low16, kLow16)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_pair_backward, low16, kLow16)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_fused_backward, low16, kLow16)->UseManualTime();
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
