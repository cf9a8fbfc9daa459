// linear: out = in Wᵀ + b through cuBLAS SGEMM, and its backward (docs/DESIGN.md §2). The GEMMs'
// row-major-to-column-major mapping is in linear.h, where the CPU tests check it.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "context.h"     // context, blocks_for
#include "cuda_check.h"  // cublasCheck, launchCheck
#include "hetdro/cuda_ops.h"
#include "linear.h"  // linear_out_gemm, linear_din_gemm, linear_dweight_gemm

namespace hetdro::cuda {
namespace {

constexpr int kThreads = 256;

// out [n, out_dim] = bias in every row; the GEMM then adds in Wᵀ onto it (beta = 1). One extra
// pass over out, as a bias add after the GEMM would be; cuBLASLt's bias epilogue could fold it in.
__global__ void broadcast_rows(float* __restrict__ out, const float* __restrict__ bias, int n,
                               int out_dim) {
  const int64_t count = int64_t(n) * out_dim;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = bias[i % out_dim];
}

// dbias[o] += Σ_i dout[i, o], deterministically: block (32, kRows) covers 32 adjacent columns
// (coalesced rows of dout); thread row y sums rows y, y + kRows, … in order, and the kRows
// partials are added in a fixed order in shared memory. No atomics.
constexpr int kRows = 8;
__global__ void column_sums_add(float* __restrict__ dbias, const float* __restrict__ dout, int n,
                                int out_dim) {
  __shared__ float part[kRows][32];
  const int col = blockIdx.x * 32 + threadIdx.x;
  float s = 0;
  if (col < out_dim)
    for (int64_t i = threadIdx.y; i < n; i += kRows) s += dout[i * out_dim + col];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();  // reached by every thread: no early return above
  if (threadIdx.y == 0 && col < out_dim) {
    float total = part[0][threadIdx.x];
    for (int r = 1; r < kRows; ++r) total += part[r][threadIdx.x];
    dbias[col] += total;
  }
}

// One cublasSgemm from its LinearGemm description; the operand pointers by name. An empty
// product is skipped: with k = 0 and beta = 1 it would leave C as it is, and a zero leading
// dimension is not valid in cuBLAS.
void sgemm(const LinearGemm& g, const float* in, const float* weight, const float* dout, float beta,
           float* c) {
  if (g.m == 0 || g.n == 0 || g.k == 0) return;
  auto pick = [&](LinearOperand o) {
    return o == LinearOperand::in ? in : o == LinearOperand::weight ? weight : dout;
  };
  const float alpha = 1;
  cublasCheck(cublasSgemm(context().cublas(), g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                          g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, g.m, g.n, g.k, &alpha, pick(g.a),
                          g.lda, pick(g.b), g.ldb, &beta, c, g.ldc));
}

}  // namespace

template <>
void linear_forward<float>(float* out, const float* in, const float* weight, const float* bias,
                           int n, int in_dim, int out_dim) {
  const int64_t count = int64_t(n) * out_dim;
  if (count == 0) return;
  broadcast_rows<<<blocks_for(count, kThreads), kThreads, 0, context().stream()>>>(out, bias, n,
                                                                                   out_dim);
  launchCheck();
  // in_dim = 0 leaves out = bias, as the reference does.
  sgemm(linear_out_gemm(n, in_dim, out_dim), in, weight, nullptr, 1.0f, out);
}

template <>
void linear_backward<float>(float* din, float* dweight, float* dbias, const float* dout,
                            const float* in, const float* weight, int n, int in_dim, int out_dim) {
  // beta = 1 everywhere: backward ops accumulate (ops.def).
  if (din) sgemm(linear_din_gemm(n, in_dim, out_dim), in, weight, dout, 1.0f, din);
  if (dweight) sgemm(linear_dweight_gemm(n, in_dim, out_dim), in, weight, dout, 1.0f, dweight);
  if (dbias && out_dim > 0) {
    const dim3 block(32, kRows);
    column_sums_add<<<(out_dim + 31) / 32, block, 0, context().stream()>>>(dbias, dout, n, out_dim);
    launchCheck();
  }
}

}  // namespace hetdro::cuda
