// The linear op's GEMMs in cuBLAS's column-major terms, worked out once and checked on the CPU
// (tests/test_linear.cpp runs them through a column-major GEMM in plain loops).
//
// cuBLAS is column-major; our tensors are row-major (docs/DESIGN.md §2). A row-major [r, c]
// matrix is, byte for byte, the column-major [c, r] matrix, its transpose, with leading dimension
// c. So each row-major product P = X Y is computed as the column-major Pᵀ = Yᵀ Xᵀ, where Yᵀ and Xᵀ
// are the buffers of Y and X read as they lie (op N) and a transpose in the row-major formula
// becomes op T.
#pragma once

#include "hetdro/hd.h"

namespace hetdro::cuda {

// Which of linear's buffers a GEMM operand is.
enum class LinearOperand { in, weight, dout };

// C = alpha op(A) op(B) + beta C, column-major, C [m, n], op(A) [m, k], op(B) [k, n]; exactly
// the parameters of cublasSgemm. alpha is 1; beta is 0 or 1, as the caller decides (C is out,
// din or dweight).
struct LinearGemm {
  bool trans_a, trans_b;
  int m, n, k;
  LinearOperand a, b;
  int lda, ldb, ldc;
};

// out [n, out_dim] = in [n, in_dim] Wᵀ  ⇔  outᵀ [out_dim, n] = W inᵀ: A = weight read as
// [in_dim, out_dim] (= Wᵀ) and transposed, B = in read as [in_dim, n] (= inᵀ).
HETDRO_HD inline LinearGemm linear_out_gemm(int n, int in_dim, int out_dim) {
  return {true,   false,  out_dim, n, in_dim, LinearOperand::weight, LinearOperand::in,
          in_dim, in_dim, out_dim};
}

// din [n, in_dim] += dout [n, out_dim] W  ⇔  dinᵀ [in_dim, n] += Wᵀ doutᵀ: both as they lie.
HETDRO_HD inline LinearGemm linear_din_gemm(int n, int in_dim, int out_dim) {
  return {false,  false,   in_dim, n, out_dim, LinearOperand::weight, LinearOperand::dout,
          in_dim, out_dim, in_dim};
}

// dW [out_dim, in_dim] += doutᵀ in  ⇔  dWᵀ [in_dim, out_dim] += inᵀ dout: A = in as it lies
// (inᵀ), B = dout read as [out_dim, n] (= doutᵀ) and transposed.
HETDRO_HD inline LinearGemm linear_dweight_gemm(int n, int in_dim, int out_dim) {
  return {false,  true,    in_dim, out_dim, n, LinearOperand::in, LinearOperand::dout,
          in_dim, out_dim, in_dim};
}

}  // namespace hetdro::cuda
