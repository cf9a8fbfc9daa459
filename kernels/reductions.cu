// The step's small reductions on the GPU (docs/DESIGN.md §6): loss sums and dead-latent flags in a
// fixed order (a grid fixed by the count alone, then one block), the sticky non-finite check, the
// window sums and the GroupDRO commit that read the status on the device, and the evaluation's
// argmax. Nothing here waits for the host.
#include <cuda_runtime.h>

#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"
#include "reductions.h"   // hd::lane_argmax, hd::argmax_combine, hd::argmax_finish
#include "row_tiles.cuh"  // for_each_row_tile, row_tile_width

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;  // blocks of a reduction's first pass, at most
constexpr int64_t kPerThread = 16;  // elements per thread before another block is worth it

// What a reduction adds up: the values (sum_scaled) or the nonzero elements (all_zero).
enum class Reduce { sum, nonzeros };

template <Reduce R>
__device__ double term(float x) {
  if constexpr (R == Reduce::sum)
    return double(x);
  else
    return x != 0.0f ? 1.0 : 0.0;  // NaN counts as nonzero, as in the reference
}

// What the last pass writes.
template <Reduce R>
__device__ double finish(double total, double scale) {
  if constexpr (R == Reduce::sum)
    return scale * total;
  else
    return total == 0.0 ? 1.0 : 0.0;
}

// Blocks of the first pass: a function of the count alone, so the order of the additions, and
// with it every bit of the sum, is the same on every run and every GPU.
unsigned partial_blocks(int64_t count) {
  const int64_t b = (count + kThreads * kPerThread - 1) / (kThreads * kPerThread);
  return unsigned(b < 1 ? 1 : b > kMaxPartials ? kMaxPartials : b);
}

// out[b] = Σ term(x_i) over block b's grid-stride share, in double; with a single block, the
// finished value itself.
template <Reduce R>
__global__ void reduce_partials(double* __restrict__ out, const float* __restrict__ x,
                                int64_t count, double scale) {
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  double s = 0;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < count; i += stride)
    s += term<R>(x[i]);
  s = BlockReduce(temp).Sum(s);
  if (threadIdx.x == 0) out[blockIdx.x] = gridDim.x == 1 ? finish<R>(s, scale) : s;
}

// out[0] = finish(Σ partial), one block, a fixed tree.
template <Reduce R>
__global__ void reduce_total(double* __restrict__ out, const double* __restrict__ partial,
                             int blocks, double scale) {
  using BlockReduce = cub::BlockReduce<double, kThreads>;
  __shared__ typename BlockReduce::TempStorage temp;
  double s = 0;
  for (int b = threadIdx.x; b < blocks; b += kThreads) s += partial[b];
  s = BlockReduce(temp).Sum(s);
  if (threadIdx.x == 0) out[0] = finish<R>(s, scale);
}

template <Reduce R>
void reduce(double* out, const float* x, int64_t count, double scale) {
  const unsigned blocks = partial_blocks(count);
  const cudaStream_t s = context().stream();
  double* partial =
      blocks == 1 ? out : static_cast<double*>(context().scratch(sizeof(double) * blocks));
  reduce_partials<R><<<blocks, kThreads, 0, s>>>(partial, x, count, scale);
  launchCheck();
  if (blocks == 1) return;
  reduce_total<R><<<1, kThreads, 0, s>>>(out, partial, int(blocks), scale);
  launchCheck();
}

constexpr unsigned long long kNone = ~0ull;  // no non-finite element found

// *first = the lowest index of a non-finite grad element (kNone stays if there is none). Each
// thread stops at its first find, the lowest of its grid-stride share; atomicMin keeps the lowest
// of all, whatever the order the threads finish in.
__global__ void first_nonfinite(unsigned long long* first, const int64_t* status,
                                const float* __restrict__ grad, int64_t count) {
  if (status[0] >= 0) return;  // sticky: the step of the first bad value stays
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < count; i += stride)
    if (!isfinite(grad[i])) {
      atomicMin(first, (unsigned long long)i);
      return;
    }
}

// The status from an eigensolver's failure (first: it is the cause of any non-finite value that
// follows; hetdro/step_status.h), the stats (in order) and the grad scan: one thread. The
// solver's record is taken (cleared) whether or not the status was already set.
__global__ void check_finite_finish(int64_t* status, const double* __restrict__ stats,
                                    int stats_count, const unsigned long long* first,
                                    const int64_t* step, int64_t* solver) {
  const int64_t failed = *solver;
  *solver = 0;
  if (status[0] >= 0) return;
  const int64_t number = step[0] + 1;  // steps count from 1 in the status
  if (failed != 0) {
    status[0] = number;
    status[1] = failed;
    return;
  }
  for (int i = 0; i < stats_count; ++i)
    if (!isfinite(stats[i])) {
      status[0] = number;
      status[1] = -1 - i;
      return;
    }
  if (*first != kNone) {
    status[0] = number;
    status[1] = int64_t(*first);
  }
}

// sum[i] += x[i] (kAdd) or sum[i] = x[i], unless status is set; the status is read here, on the
// device, so the step never waits for the host (docs/DESIGN.md §6).
template <bool kAdd>
__global__ void take_unless_flagged(double* sum, const double* x, int count,
                                    const int64_t* status) {
  if (status && status[0] >= 0) return;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    sum[i] = kAdd ? sum[i] + x[i] : x[i];
}

template <int W>
__global__ void argmax_rows_kernel(int32_t* __restrict__ out, const float* __restrict__ x, int n,
                                   int cols) {
  for_each_row_tile<W>(n, [&](int64_t row, bool live, int lane) {
    const float* r = x + row * cols;
    hd::ArgMax<float> best = hd::lane_argmax(r, live ? cols : 0, lane, W);
    for (int offset = W / 2; offset > 0; offset /= 2) {
      const hd::ArgMax<float> other{__shfl_xor_sync(0xffffffffu, best.value, offset, W),
                                    __shfl_xor_sync(0xffffffffu, best.index, offset, W)};
      best = hd::argmax_combine(best, other);
    }
    if (live && lane == 0) out[row] = hd::argmax_finish(best, cols > 0 && r[0] != r[0]);
  });
}

}  // namespace

template <>
void sum_scaled<float>(double* out, const float* x, int64_t count, double scale) {
  reduce<Reduce::sum>(out, x, count, scale);
}

template <>
void all_zero<float>(double* out, const float* x, int64_t count) {
  reduce<Reduce::nonzeros>(out, x, count, 1.0);
}

template <>
void check_finite<float>(int64_t* status, const double* stats, int stats_count, const float* grad,
                         int64_t count, const int64_t* step) {
  auto* first = static_cast<unsigned long long*>(context().scratch(sizeof(unsigned long long)));
  const cudaStream_t s = context().stream();
  cudaCheck(cudaMemsetAsync(first, 0xff, sizeof(unsigned long long), s));  // kNone
  if (count > 0) {
    first_nonfinite<<<blocks_for(count, kThreads), kThreads, 0, s>>>(first, status, grad, count);
    launchCheck();
  }
  check_finite_finish<<<1, 1, 0, s>>>(status, stats, stats_count, first, step,
                                      context().solver_status());
  launchCheck();
}

template <>
void accumulate<float>(double* sum, const double* x, int count, const int64_t* status) {
  if (count <= 0) return;
  take_unless_flagged<true>
      <<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(sum, x, count, status);
  launchCheck();
}

template <>
void groupdro_commit<float>(double* q, const double* q_next, int groups, const int64_t* status) {
  if (groups <= 0) return;
  take_unless_flagged<false><<<blocks_for(groups, kThreads), kThreads, 0, context().stream()>>>(
      q, q_next, groups, status);
  launchCheck();
}

template <>
void argmax_rows<float>(int32_t* out, const float* x, int n, int cols) {
  if (n <= 0) return;
  const int W = row_tile_width(cols);
  const unsigned blocks = blocks_for(n, kThreads / W);
  const cudaStream_t s = context().stream();
  switch (W) {
    case 4:
      argmax_rows_kernel<4><<<blocks, kThreads, 0, s>>>(out, x, n, cols);
      break;
    case 8:
      argmax_rows_kernel<8><<<blocks, kThreads, 0, s>>>(out, x, n, cols);
      break;
    case 16:
      argmax_rows_kernel<16><<<blocks, kThreads, 0, s>>>(out, x, n, cols);
      break;
    default:
      argmax_rows_kernel<32><<<blocks, kThreads, 0, s>>>(out, x, n, cols);
  }
  launchCheck();
}

}  // namespace hetdro::cuda
