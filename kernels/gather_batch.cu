// gather_batch: one step's rows of a group's uploaded training data, by the sampler's indices
// (docs/DESIGN.md §6); x and y are overwritten.
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
                              const int64_t* __restrict__ index, int n, int64_t width) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t count = int64_t(n) * width;
  for (int64_t e = first; e < count; e += stride) {
    const int64_t row = e / width, col = e - row * width;
    x[e] = src_x[index[row] * width + col];
  }
  for (int64_t i = first; i < n; i += stride) y[i] = src_y[index[i]];
}

}  // namespace

template <>
void gather_batch<float>(float* x, int32_t* y, const float* src_x, const int32_t* src_y,
                         const int64_t* index, int n, int64_t width) {
  if (n <= 0) return;
  const int64_t count = int64_t(n) * width;
  gather_kernel<<<blocks_for(count > n ? count : n, kThreads), kThreads, 0, context().stream()>>>(
      x, y, src_x, src_y, index, n, width);
  launchCheck();
}

}  // namespace hetdro::cuda
