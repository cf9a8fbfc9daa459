// The CUDA kernels of repeat (docs/DESIGN.md §2, §6): `times` copies of a tensor side by side
// (the anchors, once per group, for per_group fits), and the backward that adds the copies'
// gradients back, in copy order (deterministic, no atomics).
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void copies(float* out, const float* in, int64_t size, int times) {
  const int64_t total = size * times;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x)
    out[e] = in[e % size];
}

__global__ void sum_copies(float* din, const float* dout, int64_t size, int times) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < size;
       i += int64_t(gridDim.x) * blockDim.x) {
    float sum = din[i];
    for (int t = 0; t < times; ++t) sum += dout[t * size + i];
    din[i] = sum;
  }
}

}  // namespace

template <>
void repeat_forward<float>(float* out, const float* in, int64_t size, int times) {
  if (size <= 0 || times <= 0) return;
  copies<<<blocks_for(size * times, kThreads), kThreads, 0, context().stream()>>>(out, in, size,
                                                                                  times);
  launchCheck();
}

template <>
void repeat_backward<float>(float* din, const float* dout, int64_t size, int times) {
  if (din == nullptr || size <= 0 || times <= 0) return;
  sum_copies<<<blocks_for(size, kThreads), kThreads, 0, context().stream()>>>(din, dout, size,
                                                                              times);
  launchCheck();
}

}  // namespace hetdro::cuda
