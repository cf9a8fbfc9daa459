// softmax_xent and softmax_forward on the GPU (docs/DESIGN.md §2, §3): one pass per row by a
// tile of lanes (max, Σ exp, probabilities, loss), the per-group loss sums in a fixed order
// (per-block partials, then a fixed-order total) so they are the same bits on every run, and the
// weighted backward as one elementwise pass.
#include <cuda_runtime.h>

#include <cmath>  // NAN
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"
#include "row_tiles.cuh"   // tile_max, tile_sum, for_each_row_tile, row_tile_width
#include "softmax_xent.h"  // the per-row arithmetic, hd::

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kGroupChunk = 4096;  // samples per block of the per-group partial sums

// probs (and with kLoss the loss) of each row: the reference's arithmetic (kernels/softmax_xent.h)
// with the lanes' partials combined by shuffles.
template <int W, bool kLoss>
__global__ void softmax_rows_kernel(float* __restrict__ probs, float* __restrict__ loss,
                                    const float* __restrict__ logits,
                                    const int32_t* __restrict__ labels, int n, int classes) {
  for_each_row_tile<W>(n, [&](int64_t row, bool live, int lane) {
    const float* x = logits + row * classes;
    const int cols = live ? classes : 0;  // a dead tile reads nothing but still shuffles
    const float top = tile_max<W>(hd::lane_max(x, cols, lane, W));
    const float sum = tile_sum<W>(hd::lane_sum_exp(x, cols, lane, W, top));
    if (!live) return;
    hd::lane_write_probs(probs + row * classes, x, classes, lane, W, top, sum);
    if constexpr (kLoss) {
      if (lane == 0) {
        // The reference refuses a label outside [0, classes) with an InputError; a kernel cannot
        // throw, so the loss is NaN and check_finite stops the run at this step.
        const int32_t y = labels[row];
        loss[row] = y >= 0 && y < classes ? hd::xent_loss(top, sum, x[y]) : NAN;
      }
    }
  });
}

template <bool kLoss>
void launch_softmax_rows(float* probs, float* loss, const float* logits, const int32_t* labels,
                         int n, int classes) {
  if (n <= 0 || classes <= 0) return;
  const int W = row_tile_width(classes);
  const unsigned blocks = blocks_for(n, kThreads / W);
  const cudaStream_t s = context().stream();
  switch (W) {
    case 4:
      softmax_rows_kernel<4, kLoss>
          <<<blocks, kThreads, 0, s>>>(probs, loss, logits, labels, n, classes);
      break;
    case 8:
      softmax_rows_kernel<8, kLoss>
          <<<blocks, kThreads, 0, s>>>(probs, loss, logits, labels, n, classes);
      break;
    case 16:
      softmax_rows_kernel<16, kLoss>
          <<<blocks, kThreads, 0, s>>>(probs, loss, logits, labels, n, classes);
      break;
    default:
      softmax_rows_kernel<32, kLoss>
          <<<blocks, kThreads, 0, s>>>(probs, loss, logits, labels, n, classes);
  }
  launchCheck();
}

// partial[b·groups + g] = Σ loss_i over block b's chunk of samples with group g: each thread's
// samples in turn, then cub's fixed block tree, so the order never depends on timing. A group
// outside [0, groups) (which the reference refuses) makes every sum NaN.
__global__ void group_loss_partials(float* __restrict__ partial, const float* __restrict__ loss,
                                    const int32_t* __restrict__ group, int n, int groups) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage temp;
  const int64_t begin = int64_t(blockIdx.x) * kGroupChunk;
  const int64_t end = begin + kGroupChunk < n ? begin + kGroupChunk : int64_t(n);
  for (int g = 0; g < groups; ++g) {
    float s = 0;
    for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
      const int32_t gi = group[i];
      if (gi == g)
        s += loss[i];
      else if (gi < 0 || gi >= groups)
        s += NAN;
    }
    s = Reduce(temp).Sum(s);
    if (threadIdx.x == 0) partial[int64_t(blockIdx.x) * groups + g] = s;
    __syncthreads();  // temp is reused for the next group
  }
}

// out[g] = Σ_b partial[b·groups + g], b in increasing order.
__global__ void group_loss_total(float* __restrict__ out, const float* __restrict__ partial,
                                 int blocks, int groups) {
  for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += gridDim.x * blockDim.x) {
    float s = 0;
    for (int b = 0; b < blocks; ++b) s += partial[int64_t(b) * groups + g];
    out[g] = s;
  }
}

__global__ void softmax_xent_backward_kernel(float* __restrict__ dlogits,
                                             const float* __restrict__ probs,
                                             const int32_t* __restrict__ labels,
                                             const float* __restrict__ weight, int64_t total,
                                             int classes) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += stride) {
    const int64_t i = idx / classes;
    const int c = int(idx - i * classes);
    dlogits[idx] = hd::xent_grad(dlogits[idx], probs[idx], weight[i], c == labels[i]);
  }
}

}  // namespace

template <>
void softmax_xent_forward<float>(float* probs, float* loss, float* group_loss_sum,
                                 const float* logits, const int32_t* labels, const int32_t* group,
                                 int n, int classes, int groups) {
  launch_softmax_rows<true>(probs, loss, logits, labels, n, classes);
  if (!group_loss_sum || !group || groups <= 0) return;
  const int64_t chunks = (int64_t(n) + kGroupChunk - 1) / kGroupChunk;
  const int blocks = chunks < 1 ? 1 : int(chunks);  // n = 0 still writes the zero sums
  const cudaStream_t s = context().stream();
  // One block writes the sums directly; more write partials that one more kernel adds up.
  float* partial =
      blocks == 1
          ? group_loss_sum
          : static_cast<float*>(context().scratch(sizeof(float) * size_t(blocks) * size_t(groups)));
  group_loss_partials<<<blocks, kThreads, 0, s>>>(partial, loss, group, n, groups);
  launchCheck();
  if (blocks == 1) return;
  group_loss_total<<<blocks_for(groups, 128), 128, 0, s>>>(group_loss_sum, partial, blocks, groups);
  launchCheck();
}

template <>
void softmax_xent_backward<float>(float* dlogits, const float* probs, const int32_t* labels,
                                  const float* weight, int n, int classes) {
  const int64_t total = int64_t(n) * classes;
  if (total <= 0) return;
  softmax_xent_backward_kernel<<<blocks_for(total, kThreads), kThreads, 0, context().stream()>>>(
      dlogits, probs, labels, weight, total, classes);
  launchCheck();
}

template <>
void softmax_forward<float>(float* probs, const float* logits, int n, int classes) {
  launch_softmax_rows<false>(probs, nullptr, logits, nullptr, n, classes);
}

}  // namespace hetdro::cuda
