// gather_batch: one step's rows of a group's uploaded training data, by the sampler's order and
// the trainer's clock (docs/DESIGN.md §3, §6); x and y are overwritten. advance_clock moves the
// clock on.
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"     // context, blocks_for
#include "cuda_check.h"  // launchCheck
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per element of x, row-major, so a warp copies contiguous pieces of a source row;
// the first n threads also copy the labels. The indices are the sampler's, in range by
// construction; like the reference, the kernel does not check them.
__global__ void gather_kernel(float* __restrict__ x, int32_t* __restrict__ y,
                              const float* __restrict__ src_x, const int32_t* __restrict__ src_y,
                              const int64_t* __restrict__ order, const int64_t* batch, int n,
                              int64_t width) {
  const int64_t* index = order + batch[0] * n;  // read on the device: a replayed step's batch
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t count = int64_t(n) * width;
  for (int64_t e = first; e < count; e += stride) {
    const int64_t row = e / width, col = e - row * width;
    x[e] = src_x[index[row] * width + col];
  }
  for (int64_t i = first; i < n; i += stride) y[i] = src_y[index[i]];
}

// One thread: the clock is two numbers.
__global__ void advance_clock_kernel(int64_t* clock) {
  ++clock[0];
  ++clock[1];
}

}  // namespace

template <>
void gather_batch<float>(float* x, int32_t* y, const float* src_x, const int32_t* src_y,
                         const int64_t* order, const int64_t* batch, int n, int64_t width) {
  if (n <= 0) return;
  const int64_t count = int64_t(n) * width;
  gather_kernel<<<blocks_for(count > n ? count : n, kThreads), kThreads, 0, context().stream()>>>(
      x, y, src_x, src_y, order, batch, n, width);
  launchCheck();
}

template <>
void advance_clock<float>(int64_t* clock) {
  advance_clock_kernel<<<1, 1, 0, context().stream()>>>(clock);
  launchCheck();
}

}  // namespace hetdro::cuda
