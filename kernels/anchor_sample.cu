// The CUDA kernels of anchor_sample (docs/DESIGN.md §1, §2): the anchors' samples
// Z_cj = m_c + L_c ξ_cj with the same counter-based ξ as the CPU reference (include/hetdro/rng.h),
// and the backward dm_c += Σ_j dZ_cj, dL_c += Σ_j dZ_cj ξ_cjᵀ. The products are strided-batched
// SGEMMs, one matrix per class; operands are swapped because cuBLAS is column-major (a row-major
// buffer read column-major is its transpose).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"
#include "hetdro/rng.h"  // normal01

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// ξ entry e = (c·J + j)·k + d is normal01(seed, step·classes·J·k + e), computed in double and
// rounded once, exactly as the CPU reference does, so both backends hold the same ξ. The step is
// read on the device (a replayed graph's step). Z starts as the broadcast mean; the GEMM adds L ξ
// onto it.
__global__ void draw_xi(float* z, float* xi, const float* mean, int classes, int J, int k,
                        uint64_t seed, const int64_t* step) {
  const int64_t per_class = int64_t(J) * k, total = per_class * classes;
  const uint64_t counter = uint64_t(step[0]) * uint64_t(total);
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    xi[e] = float(normal01(seed, counter + uint64_t(e)));
    z[e] = mean[e / per_class * k + e % k];
  }
}

// dm_c[d] += Σ_j dZ_cj[d], the j in order.
__global__ void sum_samples(float* dmean, const float* dz, int classes, int J, int k) {
  const int64_t total = int64_t(classes) * k;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = e / k, d = e % k;
    const float* col = dz + c * J * k + d;
    float sum = 0.0f;
    for (int j = 0; j < J; ++j) sum += col[int64_t(j) * k];
    dmean[e] += sum;
  }
}

}  // namespace

template <>
void anchor_sample_forward<float>(float* z, float* xi, const float* mean, const float* chol,
                                  int classes, int J, int k, uint64_t seed, const int64_t* step) {
  if (classes <= 0 || J <= 0 || k <= 0) return;
  Context& ctx = context();
  const long long draws = (long long)J * k, kk = (long long)k * k;
  draw_xi<<<blocks_for(draws * classes, kThreads), kThreads, 0, ctx.stream()>>>(
      z, xi, mean, classes, J, k, seed, step);
  launchCheck();
  // Row-major Z (J×k) += Ξ Lᵀ is column-major Zᵀ += L Ξᵀ = Lbufᵀ·Ξbuf.
  const float one = 1.0f;
  cublasCheck(cublasSgemmStridedBatched(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, k, J, k, &one, chol,
                                        k, kk, xi, k, draws, &one, z, k, draws, classes));
}

template <>
void anchor_sample_backward<float>(float* dmean, float* dchol, const float* dz, const float* xi,
                                   int classes, int J, int k) {
  if (classes <= 0 || J <= 0 || k <= 0) return;
  Context& ctx = context();
  if (dmean) {
    sum_samples<<<blocks_for(int64_t(classes) * k, kThreads), kThreads, 0, ctx.stream()>>>(
        dmean, dz, classes, J, k);
    launchCheck();
  }
  if (dchol) {
    // Row-major dL (k×k) += dZᵀ Ξ is column-major dLᵀ += Ξᵀ dZ = Ξbuf·dZbufᵀ.
    const long long draws = (long long)J * k, kk = (long long)k * k;
    const float one = 1.0f;
    cublasCheck(cublasSgemmStridedBatched(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_T, k, k, J, &one, xi,
                                          k, draws, dz, k, draws, &one, dchol, k, kk, classes));
  }
}

}  // namespace hetdro::cuda
