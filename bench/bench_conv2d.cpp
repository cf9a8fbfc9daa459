// conv2d forward and backward on the default encoder's two layers at batch 70 (docs/DESIGN.md §1:
// conv 1->32 on 28x28, conv 32->64 on 26x26). items/s counts samples per second of wall time.
//   ./build/bench_conv2d [--benchmark_filter=...]
// BM_conv2_dweight_* compare the two ways to sum the weight gradient over the batch: per-thread
// partials (what conv2d_backward does) and one big GEMM over the whole batch's im2col.
// BM_cuda_* (CUDA builds): cuDNN's forward and backward (kernels/cudnn.cu) at the default
// config's shapes, full28 at 70 samples and low16 at 25 (docs/DESIGN.md §5), timed with CUDA
// events; TFLOP/s against the measured SGEMM ceiling and the floor time.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "bench_inputs.h"  // uniform_inputs
#include "cuda_bench.h"    // CUDA builds: gpu, time_gpu
#include "hetdro/ops.h"

namespace {

constexpr int kBatch = 70;

struct Layer {
  int c_in, h, w, c_out, k;
  int oh() const { return h - k + 1; }
  int ow() const { return w - k + 1; }
};
constexpr Layer kConv1{1, 28, 28, 32, 3};
constexpr Layer kConv2{32, 26, 26, 64, 3};

template <typename T>
struct Buffers {
  std::vector<T> in, weight, bias, out, din, dweight, dbias;
  explicit Buffers(const Layer& l)
      : in(size_t(kBatch) * l.c_in * l.h * l.w, T(0.5)),
        weight(size_t(l.c_out) * l.c_in * l.k * l.k, T(0.01)),
        bias(l.c_out, T(0.1)),
        out(size_t(kBatch) * l.c_out * l.oh() * l.ow(), T(0.2)),
        din(in.size()),
        dweight(weight.size()),
        dbias(l.c_out) {}
};

template <typename T>
void BM_forward(benchmark::State& state, Layer l) {
  Buffers<T> b(l);
  for (auto _ : state) {
    hetdro::cpu::conv2d_forward(b.out.data(), b.in.data(), b.weight.data(), b.bias.data(), kBatch,
                                l.c_in, l.h, l.w, l.c_out, l.k, l.k);
    benchmark::DoNotOptimize(b.out.data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// The first layer wants no input gradient, as in training.
template <typename T>
void BM_backward(benchmark::State& state, Layer l) {
  Buffers<T> b(l);
  T* din = l.c_in == 1 ? nullptr : b.din.data();
  for (auto _ : state) {
    hetdro::cpu::conv2d_backward(din, b.dweight.data(), b.dbias.data(), b.out.data(), b.in.data(),
                                 b.weight.data(), kBatch, l.c_in, l.h, l.w, l.c_out, l.k, l.k);
    benchmark::DoNotOptimize(b.dweight.data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

void BM_conv2_dweight_partials(benchmark::State& state) {
  const Layer l = kConv2;
  Buffers<float> b(l);
  for (auto _ : state) {
    hetdro::cpu::conv2d_backward<float>(nullptr, b.dweight.data(), nullptr, b.out.data(),
                                        b.in.data(), b.weight.data(), kBatch, l.c_in, l.h, l.w,
                                        l.c_out, l.k, l.k);
    benchmark::DoNotOptimize(b.dweight.data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// The alternative: gather the batch's im2col and dout, one row per output pixel of every
// sample ([n·pix, taps] and [n·pix, c_out]), then one GEMM over the whole batch:
// dweight += doutᵀ col, which is linear_backward's weight gradient. Costs n·taps·pix floats of
// scratch (46 MB here).
void BM_conv2_dweight_batched(benchmark::State& state) {
  const Layer l = kConv2;
  Buffers<float> b(l);
  const int taps = l.c_in * l.k * l.k, pix = l.oh() * l.ow();
  const int64_t rows = int64_t(kBatch) * pix;
  std::vector<float> col(rows * taps), dcat(rows * l.c_out);
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < kBatch; ++s) {
      const float* in = b.in.data() + int64_t(s) * l.c_in * l.h * l.w;
      for (int y = 0; y < l.oh(); ++y)
        for (int x = 0; x < l.ow(); ++x) {
          float* dst = col.data() + (int64_t(s) * pix + y * l.ow() + x) * taps;
          for (int c = 0; c < l.c_in; ++c)
            for (int i = 0; i < l.k; ++i)
              for (int j = 0; j < l.k; ++j)
                dst[(c * l.k + i) * l.k + j] = in[(c * l.h + y + i) * l.w + j + x];
        }
      for (int o = 0; o < l.c_out; ++o)
        for (int p = 0; p < pix; ++p)
          dcat[(int64_t(s) * pix + p) * l.c_out + o] = b.out[(int64_t(s) * l.c_out + o) * pix + p];
    }
    hetdro::cpu::linear_backward<float>(nullptr, b.dweight.data(), nullptr, dcat.data(), col.data(),
                                        b.weight.data(), int(rows), taps, l.c_out);
    benchmark::DoNotOptimize(b.dweight.data());
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
}

// BENCHMARK_CAPTURE pastes the function's name into identifiers, so no template arguments.
void BM_forward_f32(benchmark::State& s, Layer l) { BM_forward<float>(s, l); }
void BM_backward_f32(benchmark::State& s, Layer l) { BM_backward<float>(s, l); }
void BM_forward_f64(benchmark::State& s, Layer l) { BM_forward<double>(s, l); }
void BM_backward_f64(benchmark::State& s, Layer l) { BM_backward<double>(s, l); }

BENCHMARK_CAPTURE(BM_forward_f32, conv1, kConv1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_backward_f32, conv1, kConv1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_forward_f32, conv2, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_backward_f32, conv2, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_forward_f64, conv1, kConv1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_backward_f64, conv1, kConv1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_forward_f64, conv2, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK_CAPTURE(BM_backward_f64, conv2, kConv2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv2_dweight_partials)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_conv2_dweight_batched)->Unit(benchmark::kMillisecond)->UseRealTime();

#ifdef HETDRO_WITH_CUDA

// --- CUDA (cuDNN) ------------------------------------------------------------------------------

// Seeded inputs in device memory.
hetdro::Buffer<float> device_inputs(hetdro::Memory& memory, size_t count, uint64_t seed) {
  hetdro::Buffer<float> b(memory, int64_t(count));
  b.upload(hetdro::bench::uniform_inputs<float>(count, seed));
  return b;
}

struct CudaLayer {
  int n;
  Layer l;
  double macs() const { return double(n) * l.c_out * l.oh() * l.ow() * l.c_in * l.k * l.k; }
  double in_bytes() const { return 4.0 * n * l.c_in * l.h * l.w; }
  double out_bytes() const { return 4.0 * n * l.c_out * l.oh() * l.ow(); }
  double w_bytes() const { return 4.0 * l.c_out * l.c_in * l.k * l.k; }
};
constexpr CudaLayer kFull28Conv1{70, kConv1}, kFull28Conv2{70, kConv2};
constexpr CudaLayer kLow16Conv1{25, {1, 16, 16, 32, 3}}, kLow16Conv2{25, {32, 14, 14, 64, 3}};

void BM_cuda_forward(benchmark::State& state, CudaLayer c) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  const Layer l = c.l;
  auto in = device_inputs(be, size_t(c.in_bytes() / 4), 1);
  auto wt = device_inputs(be, size_t(c.w_bytes() / 4), 2);
  auto b = device_inputs(be, size_t(l.c_out), 3);
  hetdro::Buffer<float> out(be, int64_t(c.out_bytes() / 4));
  // in, weight and bias read, out written (the bias add reads and writes it once more).
  const double flops = 2 * c.macs(), bytes = c.in_bytes() + c.w_bytes() + 3 * c.out_bytes();
  hetdro::bench::time_gpu(
      state,
      [&] {
        be.conv2d_forward(out.data(), in.data(), wt.data(), b.data(), c.n, l.c_in, l.h, l.w,
                          l.c_out, l.k, l.k);
      },
      bytes, flops);
  state.SetItemsProcessed(state.iterations() * c.n);
}

// As in training: the first layer (c_in = 1) wants no input gradient.
void BM_cuda_backward(benchmark::State& state, CudaLayer c) {
  hetdro::Backend<float>* gpu = hetdro::bench::gpu(state);
  if (!gpu) return;
  hetdro::Backend<float>& be = *gpu;
  const Layer l = c.l;
  const bool want_din = l.c_in > 1;
  auto in = device_inputs(be, size_t(c.in_bytes() / 4), 1);
  auto wt = device_inputs(be, size_t(c.w_bytes() / 4), 2);
  auto dout = device_inputs(be, size_t(c.out_bytes() / 4), 3);
  auto din = device_inputs(be, size_t(c.in_bytes() / 4), 4);
  auto dwt = device_inputs(be, size_t(c.w_bytes() / 4), 5);
  auto db = device_inputs(be, size_t(l.c_out), 6);
  // dweight (and din) each a GEMM of the forward's size; reads: dout (twice with din, once more
  // for dbias), in, weight; += outputs read and written.
  const double flops = 2 * c.macs() * (want_din ? 2 : 1);
  const double bytes = (want_din ? 3 : 2) * c.out_bytes() + c.in_bytes() + c.w_bytes() +
                       2 * c.w_bytes() + (want_din ? 2 * c.in_bytes() : 0);
  hetdro::bench::time_gpu(
      state,
      [&] {
        be.conv2d_backward(want_din ? din.data() : nullptr, dwt.data(), db.data(), dout.data(),
                           in.data(), wt.data(), c.n, l.c_in, l.h, l.w, l.c_out, l.k, l.k);
      },
      bytes, flops);
  state.SetItemsProcessed(state.iterations() * c.n);
}

BENCHMARK_CAPTURE(BM_cuda_forward, full28_conv1, kFull28Conv1)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, full28_conv1, kFull28Conv1)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, full28_conv2, kFull28Conv2)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, full28_conv2, kFull28Conv2)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, low16_conv1, kLow16Conv1)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, low16_conv1, kLow16Conv1)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_forward, low16_conv2, kLow16Conv2)->UseManualTime();
BENCHMARK_CAPTURE(BM_cuda_backward, low16_conv2, kLow16Conv2)->UseManualTime();
#endif  // HETDRO_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
