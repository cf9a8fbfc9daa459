// The CUDA kernels of anchor_cov (docs/DESIGN.md §1, §2): each class anchor's covariance
// S_c = L_c L_cᵀ + εI through one strided-batched SGEMM, and its backward
// dL_c += (G + Gᵀ) L_c through another, with β = 1 so it accumulates.
//
// cuBLAS is column-major and our matrices row-major: a row-major buffer read column-major is
// the transpose, so the row-major product C = A·B is the column-major Cᵀ = Bᵀ·Aᵀ: pass the
// operands swapped.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"
#include "cuda_check.h"
#include "hetdro/cuda_ops.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// S ← its lower triangle mirrored, + eps on the diagonal: the GEMM's two triangles may differ
// in the last bit, and the W2 eigensolver reads a symmetric matrix.
__global__ void symmetrize_add_eps(float* cov, int classes, int k, float eps) {
  const int64_t kk = int64_t(k) * k, total = kk * classes;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = e / kk * kk;
    const int i = int(e % kk / k), j = int(e % k);
    if (i < j)
      cov[e] = cov[base + int64_t(j) * k + i];  // that entry is never written
    else if (i == j)
      cov[e] += eps;
  }
}

// out = G + Gᵀ per class.
__global__ void sym2(float* out, const float* g, int classes, int k) {
  const int64_t kk = int64_t(k) * k, total = kk * classes;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = e / kk * kk;
    const int i = int(e % kk / k), j = int(e % k);
    out[e] = g[e] + g[base + int64_t(j) * k + i];
  }
}

}  // namespace

template <>
void anchor_cov_forward<float>(float* cov, const float* chol, int classes, int k, float eps) {
  if (classes <= 0 || k <= 0) return;
  Context& ctx = context();
  const float one = 1.0f, zero = 0.0f;
  const long long kk = (long long)k * k;
  // Column-major: Lbufᵀ·Lbuf = L Lᵀ (Lbuf read column-major is Lᵀ); symmetric, so row-major too.
  cublasCheck(cublasSgemmStridedBatched(ctx.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, k, k, k, &one, chol,
                                        k, kk, chol, k, kk, &zero, cov, k, kk, classes));
  symmetrize_add_eps<<<blocks_for(kk * classes, kThreads), kThreads, 0, ctx.stream()>>>(
      cov, classes, k, eps);
  launchCheck();
}

template <>
void anchor_cov_backward<float>(float* dchol, const float* dcov, const float* chol, int classes,
                                int k) {
  if (dchol == nullptr || classes <= 0 || k <= 0) return;
  Context& ctx = context();
  const long long kk = (long long)k * k;
  float* gs = static_cast<float*>(ctx.scratch(size_t(kk) * classes * sizeof(float)));
  sym2<<<blocks_for(kk * classes, kThreads), kThreads, 0, ctx.stream()>>>(gs, dcov, classes, k);
  launchCheck();
  // Row-major dL += Gs·L is column-major dLᵀ += Lᵀ·Gsᵀ = Lbuf·Gsbuf (Gs symmetric).
  const float one = 1.0f;
  cublasCheck(cublasSgemmStridedBatched(ctx.cublas(), CUBLAS_OP_N, CUBLAS_OP_N, k, k, k, &one, chol,
                                        k, kk, gs, k, kk, &one, dchol, k, kk, classes));
}

}  // namespace hetdro::cuda
