// The CUDA kernels of the fit's slots (docs/DESIGN.md §1, §2, §6): each sample's slot, and the
// masked reduction over slots (the W2 sum, the live and skipped counts, and dw2).
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void slots_of(int32_t* slot, const int32_t* labels, const int32_t* group, int n,
                         int classes) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    slot[i] = group ? group[i] * classes + labels[i] : labels[i];
}

// One block: each thread sums a fixed stride of slots in double, then a tree in shared memory,
// so the result is the same on every run; any number of slots.
__global__ void __launch_bounds__(kThreads)
    masked_sum(double* out, float* dw2, const float* w2, const int32_t* count, int slots,
               float lambda) {
  __shared__ double red[3][kThreads];
  double fit = 0, live = 0, skipped = 0;
  for (int s = threadIdx.x; s < slots; s += kThreads) {
    const bool on = count[s] >= 2;
    if (on) fit += double(w2[s]);
    live += on;
    skipped += count[s] == 1;
    dw2[s] = on ? lambda : 0.0f;
  }
  red[0][threadIdx.x] = fit;
  red[1][threadIdx.x] = live;
  red[2][threadIdx.x] = skipped;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half)
      for (int q = 0; q < 3; ++q) red[q][threadIdx.x] += red[q][threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x < 3) out[threadIdx.x] = red[threadIdx.x][0];
}

}  // namespace

template <>
void fit_slots<float>(int32_t* slot, const int32_t* labels, const int32_t* group, int n,
                      int classes) {
  if (n <= 0) return;
  slots_of<<<blocks_for(n, kThreads), kThreads, 0, context().stream()>>>(slot, labels, group, n,
                                                                         classes);
  launchCheck();
}

template <>
void fit_reduce<float>(double* out, float* dw2, const float* w2, const int32_t* count, int slots,
                       float lambda) {
  masked_sum<<<1, kThreads, 0, context().stream()>>>(out, dw2, w2, count, slots, lambda);
  launchCheck();
}

}  // namespace hetdro::cuda
