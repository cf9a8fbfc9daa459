// w2_gaussian on the GPU: the squared 2-Wasserstein distance between Gaussian pairs and its
// analytic backward (docs/DESIGN.md §1, §2 "W2², the cross term"), following the CPU reference
// (host/ops/w2_gaussian.cpp) step for step. Products are cuBLAS strided-batched SGEMMs; the two
// eigendecompositions per pair go through the selectable eigensolver (kernels/eig.cu).
//
// saved per pair (stride w2_gaussian_saved_size(k)), as the CPU reference lays it out:
// [U (k·k), a (k), V (k·k), mu (k)], row-major, eigenvectors in columns: A = U diag(a) Uᵀ and
// M = R B R = V diag(mu) Vᵀ with R = U diag(f(a)) Uᵀ, f(x) = √max(x, eps).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"
#include "cuda_check.h"
#include "eigh.cuh"
#include "hetdro/cuda_ops.h"
#include "w2_gaussian.h"

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// Row-major C[b] = op(X[b]) · op(Y[b]), all k×k, batched with element strides.
// cuBLAS is column-major, and a row-major k×k buffer read column-major is its transpose. So
// row-major C = op(X)·op(Y) is column-major Cᵀ = op(Y)ᵀ·op(X)ᵀ: hand cuBLAS Y's buffer first
// and X's second, each with its own op flag (Y's buffer read column-major is Yᵀ; with the flag N
// that is op(Y)ᵀ for op = identity, with T it is Y = op(Y)ᵀ for op = transpose; likewise X).
void gemm(bool tx, const float* X, int64_t sx, bool ty, const float* Y, int64_t sy, float* C,
          int batch, int k) {
  const float one = 1.0f, zero = 0.0f;
  cublasCheck(cublasSgemmStridedBatched(context().cublas(), ty ? CUBLAS_OP_T : CUBLAS_OP_N,
                                        tx ? CUBLAS_OP_T : CUBLAS_OP_N, k, k, k, &one, Y, k, sy, X,
                                        k, sx, &zero, C, k, int64_t(k) * k, batch));
}

// out[b] = in[b] · diag(g(vals[b])) (column j scaled), out contiguous [batch,k,k]; g is the
// inner root f (slope = false) or the cross term's slope h (slope = true).
__global__ void scale_columns_kernel(float* __restrict__ out, const float* __restrict__ in,
                                     int64_t in_stride, const float* __restrict__ vals,
                                     int64_t vals_stride, int batch, int k, float eps, bool slope) {
  const int64_t kk = int64_t(k) * k, total = int64_t(batch) * kk;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / kk, rem = idx % kk, j = rem % k;
    const float x = vals[b * vals_stride + j];
    const float g = slope ? w2::cross_slope(x, eps) : w2::root(x, eps);
    out[idx] = in[b * in_stride + rem] * g;
  }
}

void scale_columns(float* out, const float* in, int64_t in_stride, const float* vals,
                   int64_t vals_stride, int batch, int k, float eps, bool slope) {
  scale_columns_kernel<<<blocks_for(int64_t(batch) * k * k, kThreads), kThreads, 0,
                         context().stream()>>>(out, in, in_stride, vals, vals_stride, batch, k, eps,
                                               slope);
  launchCheck();
}

// w2[p] = ‖m1 − m2‖² + tr A + tr B − 2 Σ √max(mu, eps²) (§2 step 1), one warp per pair, summed
// in double (the terms cancel when the Gaussians are close) by a fixed shuffle tree.
__global__ void w2_value_kernel(float* __restrict__ w2, const float* __restrict__ m1,
                                const float* __restrict__ A, const float* __restrict__ m2,
                                const float* __restrict__ B, const float* __restrict__ mu,
                                int64_t mu_stride, int pairs, int k, float eps) {
  const int lane = threadIdx.x % 32;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  const int64_t kk = int64_t(k) * k;
  for (int64_t p = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; p < pairs; p += warps) {
    double acc = 0.0;
    for (int i = lane; i < k; i += 32) {
      const double d = double(m1[p * k + i]) - double(m2[p * k + i]);
      acc +=
          d * d + double(A[p * kk + int64_t(i) * k + i]) + double(B[p * kk + int64_t(i) * k + i]);
      acc -= 2.0 * double(w2::cross_root(mu[p * mu_stride + i], eps));
    }
    for (int off = 16; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) w2[p] = float(acc);
  }
}

// C[b] = K ∘ (Z + Zᵀ), K_ij the divided difference of f at A's eigenvalues a (§2 step 4); Z + Zᵀ
// is Uᵀ (∂T/∂R) U, since ∂T/∂R = Y + Yᵀ and Z = Uᵀ Y U.
__global__ void daleckii_krein_kernel(float* __restrict__ C, const float* __restrict__ Z,
                                      const float* __restrict__ a, int64_t a_stride, int batch,
                                      int k, float eps) {
  const int64_t kk = int64_t(k) * k, total = int64_t(batch) * kk;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / kk, rem = idx % kk, i = rem / k, j = rem % k;
    const float ai = a[b * a_stride + i], aj = a[b * a_stride + j];
    const float K = w2::divided_difference(ai, aj, w2::root(ai, eps), w2::root(aj, eps), eps);
    C[idx] = K * (Z[idx] + Z[b * kk + j * k + i]);
  }
}

// dX[b] += g_b (I − 2 sym(G[b])) (§2 step 5); a pair with g_b = 0 adds nothing, not even the
// NaN of a masked slot's garbage.
__global__ void accumulate_kernel(float* __restrict__ dX, const float* __restrict__ G,
                                  const float* __restrict__ dw2, int batch, int k) {
  const int64_t kk = int64_t(k) * k, total = int64_t(batch) * kk;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = idx / kk, rem = idx % kk, i = rem / k, j = rem % k;
    const float g = dw2[b];
    if (g == 0.0f) continue;
    dX[idx] += g * ((i == j ? 1.0f : 0.0f) - (G[idx] + G[b * kk + j * k + i]));
  }
}

void accumulate(float* dX, const float* G, const float* dw2, int batch, int k) {
  accumulate_kernel<<<blocks_for(int64_t(batch) * k * k, kThreads), kThreads, 0,
                      context().stream()>>>(dX, G, dw2, batch, k);
  launchCheck();
}

// dm1 += 2g(m1 − m2), dm2 −= 2g(m1 − m2) (§2 step 5); either may be null.
__global__ void dmean_kernel(float* __restrict__ dm1, float* __restrict__ dm2,
                             const float* __restrict__ m1, const float* __restrict__ m2,
                             const float* __restrict__ dw2, int pairs, int k) {
  const int64_t total = int64_t(pairs) * k;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const float g = dw2[idx / k];
    if (g == 0.0f) continue;
    const float d = 2.0f * g * (m1[idx] - m2[idx]);
    if (dm1) dm1[idx] += d;
    if (dm2) dm2[idx] -= d;
  }
}

size_t align(size_t bytes) { return (bytes + 255) / 256 * 256; }

}  // namespace

template <>
void w2_gaussian_forward<float>(float* w2, float* saved, const float* m1, const float* A,
                                const float* m2, const float* B, int pairs, int k, float eps) {
  if (pairs <= 0) return;
  cudaStream_t s = context().stream();
  if (k <= 0) {  // empty sums: W2² = 0, as the CPU reference gives
    cudaCheck(cudaMemsetAsync(w2, 0, sizeof(float) * pairs, s));
    return;
  }
  const Eigensolver solver = resolve_eigensolver(context().eigensolver, k);
  const int64_t kk = int64_t(k) * k, stride = w2_gaussian_saved_size(k);
  const size_t mat = align(sizeof(float) * pairs * kk);
  const size_t eig = align(eigh_workspace_bytes(solver, pairs, k));
  const size_t own_saved = saved ? 0 : align(sizeof(float) * pairs * stride);
  // One scratch call, carved: W (U·diag f(a), then R·B), R, M, the eigensolver's workspace,
  // and `saved` itself when the caller passed none.
  char* ws = static_cast<char*>(context().scratch(3 * mat + eig + own_saved));
  float* W = reinterpret_cast<float*>(ws);
  float* R = reinterpret_cast<float*>(ws + mat);
  float* M = reinterpret_cast<float*>(ws + 2 * mat);
  void* eig_ws = ws + 3 * mat;
  if (!saved) saved = reinterpret_cast<float*>(ws + 3 * mat + eig);
  float* U = saved;
  float* a = saved + kk;
  float* V = saved + kk + k;
  float* mu = saved + 2 * kk + k;

  // §2 step 1: A = U diag(a) Uᵀ, R = U diag(f(a)) Uᵀ, M = R B R = V diag(mu) Vᵀ.
  eigh(a, stride, U, stride, A, pairs, k, solver, eig_ws);
  scale_columns(W, U, stride, a, stride, pairs, k, eps, false);
  gemm(false, W, kk, true, U, stride, R, pairs, k);  // R = (U diag f(a)) Uᵀ
  gemm(false, R, kk, false, B, kk, W, pairs, k);     // W = R B
  gemm(false, W, kk, false, R, kk, M, pairs, k);     // M = (R B) R
  eigh(mu, stride, V, stride, M, pairs, k, solver, eig_ws);

  const int warps_per_block = kThreads / 32;
  w2_value_kernel<<<blocks_for(pairs, warps_per_block), kThreads, 0, s>>>(w2, m1, A, m2, B, mu,
                                                                          stride, pairs, k, eps);
  launchCheck();
}

template <>
void w2_gaussian_backward<float>(float* dm1, float* dA, float* dm2, float* dB, const float* dw2,
                                 const float* saved, const float* m1, const float* A,
                                 const float* m2, const float* B, int pairs, int k, float eps) {
  (void)A;  // A enters only through its saved eigendecomposition
  if (pairs <= 0 || k <= 0) return;
  cudaStream_t s = context().stream();
  if (dm1 || dm2) {
    dmean_kernel<<<blocks_for(int64_t(pairs) * k, kThreads), kThreads, 0, s>>>(dm1, dm2, m1, m2,
                                                                               dw2, pairs, k);
    launchCheck();
  }
  if (!dA && !dB) return;

  const int64_t kk = int64_t(k) * k, stride = w2_gaussian_saved_size(k);
  const size_t mat = align(sizeof(float) * pairs * kk);
  char* ws = static_cast<char*>(context().scratch(4 * mat));
  float* s0 = reinterpret_cast<float*>(ws);
  float* s1 = reinterpret_cast<float*>(ws + mat);
  float* s2 = reinterpret_cast<float*>(ws + 2 * mat);
  float* s3 = reinterpret_cast<float*>(ws + 3 * mat);
  const float* U = saved;
  const float* a = saved + kk;
  const float* V = saved + kk + k;
  const float* mu = saved + 2 * kk + k;

  // R = U diag(f(a)) Uᵀ, as in the forward.                          s1 = R
  scale_columns(s0, U, stride, a, stride, pairs, k, eps, false);
  gemm(false, s0, kk, true, U, stride, s1, pairs, k);
  // §2 step 2: G_M = V diag(h) Vᵀ, h = 1/(2√mu) above eps², else 0.  s2 = G_M
  scale_columns(s0, V, stride, mu, stride, pairs, k, eps, true);
  gemm(false, s0, kk, true, V, stride, s2, pairs, k);
  // X = R G_M; then ∂T/∂B = X R and G_M R B = Xᵀ B (R, G_M symmetric).  s0 = X
  gemm(false, s1, kk, false, s2, kk, s0, pairs, k);
  if (dB) {
    // §2 steps 3, 5: dB += g (I − 2 sym(R G_M R)).                     s3 = R G_M R
    gemm(false, s0, kk, false, s1, kk, s3, pairs, k);
    accumulate(dB, s3, dw2, pairs, k);
  }
  if (dA) {
    // §2 step 3: ∂T/∂R = Y + Yᵀ, Y = G_M R B.                          s3 = Y
    gemm(true, s0, kk, false, B, kk, s3, pairs, k);
    // §2 step 4: Uᵀ (∂T/∂R) U = Z + Zᵀ with Z = Uᵀ Y U.                  s2 = Uᵀ Y, s0 = Z
    gemm(true, U, stride, false, s3, kk, s2, pairs, k);
    gemm(false, s2, kk, false, U, stride, s0, pairs, k);
    daleckii_krein_kernel<<<blocks_for(int64_t(pairs) * kk, kThreads), kThreads, 0, s>>>(
        s3, s0, a, stride, pairs, k, eps);  //                            s3 = K ∘ (Z + Zᵀ)
    launchCheck();
    // ∂T/∂A = U (K ∘ …) Uᵀ; §2 step 5: dA += g (I − 2 sym(∂T/∂A)).       s1 = U C, s2 = ∂T/∂A
    gemm(false, U, stride, false, s3, kk, s1, pairs, k);
    gemm(false, s1, kk, true, U, stride, s2, pairs, k);
    accumulate(dA, s2, dw2, pairs, k);
  }
}

}  // namespace hetdro::cuda
